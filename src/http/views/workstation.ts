/** A workstation as the API shows it. */
import { t } from 'elysia'
import { WorkstationFields, WorkstationPatch } from '../../actors/workstation.ts'
import type { Replied } from '../../actors/runtime/index.ts'
import type { WorkstationRow } from '../../store/workstations.ts'
import { computeViewFields, ComputeViewFields } from './compute.ts'

export namespace WorkstationModel {
  /** POST /api/workstations: the guide's body, plus an image from the allow-list. */
  export const create = WorkstationFields
  export const patch = WorkstationPatch
  export const workstation = t.Object({
    id: t.String(),
    name: t.String(),
    description: t.String(),
    function: t.Union([t.Literal('DEVELOPMENT'), t.Literal('TRAINING'), t.Literal('PROCESSING')]),
    nature: t.Array(t.String()),
    resources: t.Object({ cpu: t.Number(), memory: t.Integer(), storage: t.Integer(), gpu: t.Boolean() }),
    image: t.String(),
    ...ComputeViewFields,
  })
  export type workstation = typeof workstation.static
}

export function workstationView(w: Replied<WorkstationRow>): WorkstationModel.workstation {
  return {
    id: w.id,
    name: w.name,
    description: w.description,
    function: w.function,
    nature: [...w.nature],
    resources: { ...w.resources },
    image: w.image,
    ...computeViewFields(w),
  }
}
