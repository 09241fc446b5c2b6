/** The VMs feature: the `vm` actor kind, /api/vms, terminals. */
import { vmActor } from '../actors/vm.ts'
import { vmRoutes } from '../http/vms.ts'
import * as store from '../store/vms.ts'
import { computeFeature } from './compute.ts'
import type { Feature, FeatureContext } from './feature.ts'

export function vmsFeature(ctx: FeatureContext): Feature {
  const { config } = ctx.http
  const engine = ctx.engines.containers
  const runtime = config.vms.runtime
  return computeFeature(ctx, {
    name: 'vms',
    kind: 'vm',
    label: 'VM',
    wsPrefix: '/ws/vms',
    // VMs are not culled when idle (like cloud instances).
    actor: vmActor({ engine, images: config.vms.images, runtime, idleTimeoutMs: 0, idleCpuPercent: config.workstations.idleCpuPercent, quota: config.quota, orgQuota: config.orgQuota }),
    routes: [vmRoutes(ctx.http, { engine, runtime })],
    findById: store.findById,
    ownerOf: store.ownerOf,
    activeIds: store.activeIds,
    existing: store.existing,
  })
}
