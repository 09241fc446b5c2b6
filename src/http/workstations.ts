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
    docs: {
      images: 'WORKSTATION_IMAGES',
      resources: 'resources',
      create: "So the guide's example with `cpu: 8` and `gpu: true` is a 422 on an engine with 2 cores and no GPU.",
      patch:
        'Changes any of `name`, `description`, `function`, `nature`, `image` and `resources` (left out of `resources`, `storage` and `gpu` keep their values). ' +
        'The image and the resources change only while it is not running — 409 while it is STARTING, RUNNING or STOPPING: stop it first — and reach the container at its next start; ' +
        'new resources are checked against what the container engine has (422 naming `resources.cpu`, `resources.memory`, `resources.gpu`).',
      patchConflicts: true,
      activity: "Its owner's calls count as activity: they put off idle culling (`WORKSTATION_IDLE_TIMEOUT`).",
    },
    ...ctx,
  })
}
