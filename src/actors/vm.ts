/**
 * The VM actor kind: a compute instance with a size profile (cpu, memory, disk, gpu) and an OS
 * image, run under the container runtime the configuration names (VM_RUNTIME: runsc/gVisor or
 * kata-runtime give VM-grade isolation where installed). The lifecycle is the workstation's
 * (container-lifecycle.ts); a resize is stop, update limits, start.
 */
import { Type as T, type Static } from '@sinclair/typebox'
import type { ActorKind } from './runtime/index.ts'
import * as store from '../store/vms.ts'
import type { VmRow } from '../store/vms.ts'
import { computeViewFields, ComputeViewFields, defineComputeActor, type ComputeMessage, type ComputeSettings, type ComputeState } from './container-lifecycle.ts'

export namespace VmModel {
  export const size = T.Object(
    {
      cpu: T.Number({ exclusiveMinimum: 0, maximum: 256, error: 'cpu must be a number of cores above 0 (at most 256)' }),
      memory: T.Integer({ minimum: 16, maximum: 4 * 1024 * 1024, error: 'memory must be a whole number of MB from 16' }),
      disk: T.Optional(T.Integer({ minimum: 0, maximum: 16 * 1024 * 1024, error: 'disk must be a whole number of MB' })),
      gpu: T.Optional(T.Boolean()),
    },
    { additionalProperties: false },
  )
  export const name = T.String({ minLength: 3, maxLength: 50, error: 'Name must be 3–50 characters' })
  export const description = T.String({ maxLength: 1000, error: 'Description must be at most 1000 characters' })
  export const image = T.String({ minLength: 1, maxLength: 255, error: 'image must be one of the allowed OS images' })

  /** POST /api/vms. The runtime is the administrator's choice (VM_RUNTIME), never the caller's. */
  export const create = T.Object({ name, description: T.Optional(description), image: T.Optional(image), size }, { additionalProperties: false })
  export type create = Static<typeof create>

  export const patch = T.Object(
    { name: T.Optional(name), description: T.Optional(description) },
    { additionalProperties: false, minProperties: 1, error: 'Provide name or description (resize with POST /api/vms/:id/resize)' },
  )
  export type patch = Static<typeof patch>

  /** A VM as the API shows it; `runtime` is the engine runtime it runs under. */
  export const vm = T.Object({
    id: T.String(),
    name: T.String(),
    description: T.String(),
    image: T.String(),
    runtime: T.String(),
    size: T.Object({ cpu: T.Number(), memory: T.Integer(), disk: T.Integer(), gpu: T.Boolean() }),
    ...ComputeViewFields,
  })
  export type vm = Static<typeof vm>
}

export function vmView(v: VmRow): VmModel.vm {
  return {
    id: v.id,
    name: v.name,
    description: v.description,
    image: v.image,
    runtime: v.runtime,
    size: { cpu: v.resources.cpu, memory: v.resources.memory, disk: v.resources.storage, gpu: v.resources.gpu },
    ...computeViewFields(v),
  }
}

export type VmMessage = ComputeMessage<VmModel.create, VmModel.patch>

/** The `vm` actor kind for one server: VMs run under `runtime` (VM_RUNTIME). */
export function vmActor(settings: ComputeSettings & { runtime: string }): ActorKind<ComputeState<VmRow>, VmMessage> {
  return defineComputeActor<VmRow, typeof VmModel.create, typeof VmModel.patch>(
    {
      kind: 'vm',
      label: 'VM',
      create: VmModel.create,
      patch: VmModel.patch,
      load: store.findById,
      save: store.save,
      remove: store.remove,
      build(id, ownerId, f, now): VmRow {
        return {
          id,
          ownerId,
          name: f.name,
          description: f.description ?? '',
          image: f.image ?? settings.images[0]!,
          runtime: settings.runtime,
          resources: { cpu: f.size.cpu, memory: f.size.memory, storage: f.size.disk ?? 0, gpu: f.size.gpu ?? false },
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
      applyPatch(v, p): VmRow {
        return { ...v, name: p.name ?? v.name, description: p.description ?? v.description }
      },
      view: vmView,
    },
    settings,
  )
}
