/** A workstation as the API shows it. */
import { CloneType } from '@sinclair/typebox'
import { t } from 'elysia'
import { WorkstationFields, WorkstationPatch } from '../../actors/workstation.ts'
import type { Replied } from '../../actors/runtime/index.ts'
import type { WorkstationRow } from '../../store/workstations.ts'
import { computeViewFields, ComputeViewFields } from './compute.ts'

export namespace WorkstationModel {
  /**
   * POST /api/workstations: the guide's body, plus an image from the allow-list. The guide's
   * own example asks for 8 cores and a GPU, which an engine without them refuses (422): this
   * one fits a small engine.
   */
  export const create = CloneType(WorkstationFields, {
    examples: [
      {
        name: 'ml-training-env',
        description: 'Machine learning training environment',
        function: 'TRAINING',
        nature: ['machine-learning', 'data-science'],
        resources: { cpu: 1, memory: 1024, storage: 10240, gpu: false },
      },
    ],
  })
  export const patch = CloneType(WorkstationPatch, {
    examples: [{ description: 'Feature engineering for the churn model', nature: ['data-science'], resources: { cpu: 1, memory: 2048 } }],
  })
  export const workstation = t.Object(
    {
      id: t.String(),
      name: t.String(),
      description: t.String(),
      function: t.Union([t.Literal('DEVELOPMENT'), t.Literal('TRAINING'), t.Literal('PROCESSING')]),
      nature: t.Array(t.String()),
      resources: t.Object({ cpu: t.Number({ description: 'Cores' }), memory: t.Integer({ description: 'MB' }), storage: t.Integer({ description: 'MB (recorded; not enforced by the local volume driver)' }), gpu: t.Boolean() }),
      image: t.String(),
      ...ComputeViewFields,
    },
    {
      examples: [
        {
          id: '6f1c2b9e-8d4a-4f3e-9a57-2c1d0e8b7a64',
          name: 'ml-training-env',
          description: 'Machine learning training environment',
          function: 'TRAINING',
          nature: ['machine-learning', 'data-science'],
          resources: { cpu: 1, memory: 1024, storage: 10240, gpu: false },
          image: 'quadrax/workstation:latest',
          status: 'RUNNING',
          statusReason: null,
          ownerId: 'b3e1f0a2-5c7d-4e9b-8a61-0f2d3c4b5a69',
          containerId: '4b7e9f3a1c2d5e6f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f',
          lastActivityAt: '2026-12-04T10:15:00.000Z',
          startedAt: '2026-12-04T10:12:30.000Z',
          stoppedAt: null,
          createdAt: '2026-12-04T10:10:00.000Z',
          updatedAt: '2026-12-04T10:15:00.000Z',
        },
      ],
    },
  )
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
