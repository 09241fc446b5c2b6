/** A VM as the API shows it; `runtime` is the engine runtime it runs under, `size` its resources. */
import { CloneType } from '@sinclair/typebox'
import { t } from 'elysia'
import { VmFields, VmPatch, VmSize } from '../../actors/vm.ts'
import type { Replied } from '../../actors/runtime/index.ts'
import type { VmRow } from '../../store/vms.ts'
import { computeViewFields, ComputeViewFields } from './compute.ts'

export namespace VmModel {
  /** POST /api/vms. The runtime is the administrator's choice (VM_RUNTIME), never the caller's. */
  export const create = CloneType(VmFields, {
    examples: [{ name: 'notebook-sandbox', description: 'Isolated machine for untrusted notebooks', size: { cpu: 1, memory: 1024, disk: 10240, gpu: false } }],
  })
  export const patch = CloneType(VmPatch, { examples: [{ name: 'notebook-sandbox-2', description: 'Isolated machine for the churn experiments' }] })
  /** POST /api/vms/:id/resize. */
  export const size = CloneType(VmSize, { examples: [{ cpu: 1, memory: 1024 }] })
  export const vm = t.Object(
    {
      id: t.String(),
      name: t.String(),
      description: t.String(),
      image: t.String(),
      runtime: t.String({ description: 'The engine runtime it runs under (VM_RUNTIME when it was created)' }),
      size: t.Object({ cpu: t.Number({ description: 'Cores' }), memory: t.Integer({ description: 'MB' }), disk: t.Integer({ description: 'MB (recorded; not enforced by the local volume driver)' }), gpu: t.Boolean() }),
      ...ComputeViewFields,
    },
    {
      examples: [
        {
          id: '0d9a8c7b-6e5f-4a3b-9c2d-1e0f9a8b7c6d',
          name: 'notebook-sandbox',
          description: 'Isolated machine for untrusted notebooks',
          image: 'quadrax/vm-ubuntu:22.04',
          runtime: 'runsc',
          size: { cpu: 1, memory: 1024, disk: 10240, gpu: false },
          status: 'STOPPED',
          statusReason: null,
          ownerId: 'b3e1f0a2-5c7d-4e9b-8a61-0f2d3c4b5a69',
          containerId: '9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b',
          lastActivityAt: null,
          startedAt: null,
          stoppedAt: null,
          createdAt: '2026-12-04T10:10:00.000Z',
          updatedAt: '2026-12-04T10:10:02.000Z',
        },
      ],
    },
  )
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
