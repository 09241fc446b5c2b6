/**
 * The VM actor kind: a compute instance with a size profile (cpu, memory, disk, gpu) and an OS
 * image, run under the container runtime the configuration names (VM_RUNTIME: runsc/gVisor or
 * kata-runtime give VM-grade isolation where installed). The lifecycle is the workstation's
 * (./compute/); a resize is stop, update limits, start. Replies are VmRows.
 */
import { Type as T, type Static } from '@sinclair/typebox'
import * as store from '../store/vms.ts'
import type { VmRow } from '../store/vms.ts'
import { defineComputeActor, newLifecycle } from './compute/lifecycle.ts'
import { computeMessages, Cpu, MemoryMb, StorageMb } from './compute/messages.ts'
import type { ComputeSettings } from './compute/turn.ts'

/** The guide's size profile; `disk` is the VM's volume. */
export const VmSize = T.Object({ cpu: Cpu, memory: MemoryMb, disk: T.Optional(StorageMb('disk')), gpu: T.Optional(T.Boolean()) }, { additionalProperties: false })
export type VmSize = Static<typeof VmSize>

const name = T.String({ minLength: 3, maxLength: 50, error: 'Name must be 3–50 characters' })
const description = T.String({ maxLength: 1000, error: 'Description must be at most 1000 characters' })
const image = T.String({ minLength: 1, maxLength: 255, error: 'image must be one of the allowed OS images' })

/** A new VM. The runtime is the administrator's choice (VM_RUNTIME), never the caller's. */
export const VmFields = T.Object({ name, description: T.Optional(description), image: T.Optional(image), size: VmSize }, { additionalProperties: false })
export type VmFields = Static<typeof VmFields>

export const VmPatch = T.Object(
  { name: T.Optional(name), description: T.Optional(description) },
  { additionalProperties: false, minProperties: 1, error: 'Provide name or description (resize with POST /api/vms/:id/resize)' },
)
export type VmPatch = Static<typeof VmPatch>

export const VmMessage = computeMessages(VmFields, VmPatch)
export type VmMessage = Static<typeof VmMessage>

/** The `vm` actor kind for one server: VMs run under `runtime` (VM_RUNTIME). */
export function vmActor(settings: ComputeSettings & { runtime: string }) {
  return defineComputeActor<VmRow, typeof VmFields, typeof VmPatch>(
    { create: VmFields, patch: VmPatch },
    {
      kind: 'vm',
      label: 'VM',
      load: store.findById,
      save: store.save,
      remove: store.remove,
      build(id, ownerId, f, now): Omit<VmRow, 'orgId'> {
        return {
          id,
          ownerId,
          name: f.name,
          description: f.description ?? '',
          image: f.image ?? settings.images[0]!,
          runtime: settings.runtime,
          resources: { cpu: f.size.cpu, memory: f.size.memory, storage: f.size.disk ?? 0, gpu: f.size.gpu ?? false },
          ...newLifecycle(now),
        }
      },
      applyPatch(v, p): VmRow {
        return { ...v, name: p.name ?? v.name, description: p.description ?? v.description }
      },
    },
    settings,
  )
}
