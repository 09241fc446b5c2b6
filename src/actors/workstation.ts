/**
 * The workstation actor kind: one actor per workstation, owning its container. The lifecycle
 * (status machine, reconciliation, quotas, idle culling) is shared with VMs in
 * container-lifecycle.ts; this file holds what is a workstation's own: the guide's body
 * (name, description, function, nature, resources), its table, and its API shape.
 */
import { Type as T, type Static } from '@sinclair/typebox'
import type { ActorKind } from './runtime/index.ts'
import * as store from '../store/workstations.ts'
import type { WorkstationRow } from '../store/workstations.ts'
import { computeViewFields, ComputeViewFields, defineComputeActor, type ComputeMessage, type ComputeSettings, type ComputeState } from './container-lifecycle.ts'

export namespace WorkstationModel {
  export const fn = T.Union([T.Literal('DEVELOPMENT'), T.Literal('TRAINING'), T.Literal('PROCESSING')], {
    error: 'Function must be one of DEVELOPMENT, TRAINING, PROCESSING',
  })
  export const resources = T.Object(
    {
      cpu: T.Number({ exclusiveMinimum: 0, maximum: 256, error: 'cpu must be a number of cores above 0 (at most 256)' }),
      memory: T.Integer({ minimum: 16, maximum: 4 * 1024 * 1024, error: 'memory must be a whole number of MB from 16' }),
      storage: T.Optional(T.Integer({ minimum: 0, maximum: 16 * 1024 * 1024, error: 'storage must be a whole number of MB' })),
      gpu: T.Optional(T.Boolean()),
    },
    { additionalProperties: false },
  )
  export const name = T.String({ minLength: 3, maxLength: 50, error: 'Name must be 3–50 characters' })
  export const description = T.String({ minLength: 10, maxLength: 1000, error: 'Description must be 10–1000 characters' })
  export const nature = T.Array(T.String({ minLength: 1, maxLength: 50 }), { maxItems: 20, error: 'nature must be a list of at most 20 tags of 1–50 characters' })
  export const image = T.String({ minLength: 1, maxLength: 255, error: 'image must be one of the allowed images' })

  /** POST /api/workstations: the guide's body, plus an image from the allow-list. */
  export const create = T.Object(
    { name, description, function: fn, nature: T.Optional(nature), resources, image: T.Optional(image) },
    { additionalProperties: false },
  )
  export type create = Static<typeof create>

  export const patch = T.Object(
    {
      name: T.Optional(name),
      description: T.Optional(description),
      function: T.Optional(fn),
      nature: T.Optional(nature),
      resources: T.Optional(resources),
      image: T.Optional(image),
    },
    { additionalProperties: false, minProperties: 1, error: 'Provide at least one of name, description, function, nature, resources, image' },
  )
  export type patch = Static<typeof patch>

  /** A workstation as the API shows it. */
  export const workstation = T.Object({
    id: T.String(),
    name: T.String(),
    description: T.String(),
    function: fn,
    nature: T.Array(T.String()),
    resources: T.Object({ cpu: T.Number(), memory: T.Integer(), storage: T.Integer(), gpu: T.Boolean() }),
    image: T.String(),
    ...ComputeViewFields,
  })
  export type workstation = Static<typeof workstation>
}

export function workstationView(w: WorkstationRow): WorkstationModel.workstation {
  return {
    id: w.id,
    name: w.name,
    description: w.description,
    function: w.function,
    nature: w.nature,
    resources: { ...w.resources },
    image: w.image,
    ...computeViewFields(w),
  }
}

export type WorkstationMessage = ComputeMessage<WorkstationModel.create, WorkstationModel.patch>

/** The `workstation` actor kind for one server (its engine and policies in `settings`). */
export function workstationActor(settings: ComputeSettings): ActorKind<ComputeState<WorkstationRow>, WorkstationMessage> {
  return defineComputeActor<WorkstationRow, typeof WorkstationModel.create, typeof WorkstationModel.patch>(
    {
      kind: 'workstation',
      label: 'Workstation',
      create: WorkstationModel.create,
      patch: WorkstationModel.patch,
      load: store.findById,
      save: store.save,
      remove: store.remove,
      build(id, ownerId, f, now): WorkstationRow {
        return {
          id,
          ownerId,
          name: f.name,
          description: f.description,
          function: f.function,
          nature: f.nature ?? [],
          image: f.image ?? settings.images[0]!,
          runtime: null,
          resources: { cpu: f.resources.cpu, memory: f.resources.memory, storage: f.resources.storage ?? 0, gpu: f.resources.gpu ?? false },
          status: 'CREATING',
          statusReason: null,
          containerId: null,
          generation: 0,
          lifecycle: {},
          lastActivityAt: null,
          startedAt: null,
          stoppedAt: null,
          createdAt: now,
          updatedAt: now,
        }
      },
      applyPatch(w, p): WorkstationRow {
        return {
          ...w,
          name: p.name ?? w.name,
          description: p.description ?? w.description,
          function: p.function ?? w.function,
          nature: p.nature ?? w.nature,
          image: p.image ?? w.image,
          resources: p.resources
            ? { cpu: p.resources.cpu, memory: p.resources.memory, storage: p.resources.storage ?? w.resources.storage, gpu: p.resources.gpu ?? w.resources.gpu }
            : w.resources,
        }
      },
      view: workstationView,
    },
    settings,
  )
}
