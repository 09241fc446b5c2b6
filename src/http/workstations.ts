/** /api/workstations: the guide's Workstation Management, on the routes workstations and VMs share (./compute.ts). */
import type { ContainerEngine } from '../engines/containers/engine.ts'
import * as store from '../store/workstations.ts'
import type { WorkstationRow } from '../store/workstations.ts'
import { computeRoutes } from './compute.ts'
import type { HttpDeps } from './context.ts'
import { WorkstationModel, workstationView } from './views/workstation.ts'

export function workstationRoutes(deps: HttpDeps, ctx: { engine: ContainerEngine | undefined; touch: (id: string) => void }) {
  return computeRoutes<WorkstationRow>(deps, {
    kind: 'workstation',
    label: 'Workstation',
    prefix: '/api/workstations',
    wsPrefix: '/ws/workstations',
    tag: 'Workstations',
    create: WorkstationModel.create,
    patch: WorkstationModel.patch,
    entity: WorkstationModel.workstation,
    view: workstationView,
    findById: store.findById,
    list: store.list,
    ...ctx,
  })
}
