/** A VM as the API shows it; `runtime` is the engine runtime it runs under, `size` its resources. */
import { t } from 'elysia'
import { VmFields, VmPatch, VmSize } from '../../actors/vm.ts'
import type { Replied } from '../../actors/runtime/index.ts'
import type { VmRow } from '../../store/vms.ts'
import { computeViewFields, ComputeViewFields } from './compute.ts'

export namespace VmModel {
  /** POST /api/vms. The runtime is the administrator's choice (VM_RUNTIME), never the caller's. */
  export const create = VmFields
  export const patch = VmPatch
  /** POST /api/vms/:id/resize. */
  export const size = VmSize
  export const vm = t.Object({
    id: t.String(),
    name: t.String(),
    description: t.String(),
    image: t.String(),
    runtime: t.String(),
    size: t.Object({ cpu: t.Number(), memory: t.Integer(), disk: t.Integer(), gpu: t.Boolean() }),
    ...ComputeViewFields,
  })
  export type vm = typeof vm.static
}

export function vmView(v: Replied<VmRow>): VmModel.vm {
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
