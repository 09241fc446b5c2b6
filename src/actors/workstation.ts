/**
 * The workstation actor kind: one actor per workstation, owning its container. The lifecycle
 * (status machine, reconciliation, quotas, idle culling) is shared with VMs in ./compute/;
 * this file holds what is a workstation's own: the guide's fields (name, description,
 * function, nature, resources) and its table. Replies are WorkstationRows.
 */
import { Type as T, type Static } from '@sinclair/typebox'
import * as store from '../store/workstations.ts'
import type { WorkstationRow } from '../store/workstations.ts'
import { defineComputeActor, newLifecycle } from './compute/lifecycle.ts'
import { Cpu, MemoryMb, StorageMb } from './compute/messages.ts'
import type { ComputeSettings } from './compute/turn.ts'

const fn = T.Union([T.Literal('DEVELOPMENT'), T.Literal('TRAINING'), T.Literal('PROCESSING')], {
  error: 'Function must be one of DEVELOPMENT, TRAINING, PROCESSING',
})
/** The guide's `resources` of a workstation: storage and gpu may be left out. */
const resources = T.Object({ cpu: Cpu, memory: MemoryMb, storage: T.Optional(StorageMb('storage')), gpu: T.Optional(T.Boolean()) }, { additionalProperties: false })
const name = T.String({ minLength: 3, maxLength: 50, error: 'Name must be 3–50 characters' })
const description = T.String({ minLength: 10, maxLength: 1000, error: 'Description must be 10–1000 characters' })
const nature = T.Array(T.String({ minLength: 1, maxLength: 50 }), { maxItems: 20, error: 'nature must be a list of at most 20 tags of 1–50 characters' })
const image = T.String({ minLength: 1, maxLength: 255, error: 'image must be one of the allowed images' })

/** A new workstation: the guide's body, plus an image from the allow-list. */
export const WorkstationFields = T.Object({ name, description, function: fn, nature: T.Optional(nature), resources, image: T.Optional(image) }, { additionalProperties: false })
export type WorkstationFields = Static<typeof WorkstationFields>

export const WorkstationPatch = T.Object(
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
export type WorkstationPatch = Static<typeof WorkstationPatch>

/** The `workstation` actor kind for one server (its engine and policies in `settings`). */
export function workstationActor(settings: ComputeSettings) {
  return defineComputeActor<WorkstationRow, typeof WorkstationFields, typeof WorkstationPatch>(
    { create: WorkstationFields, patch: WorkstationPatch },
    {
      kind: 'workstation',
      label: 'Workstation',
      load: store.findById,
      save: store.save,
      remove: store.remove,
      build(id, ownerId, f, now): Omit<WorkstationRow, 'orgId'> {
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
          ...newLifecycle(now),
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
    },
    settings,
  )
}
