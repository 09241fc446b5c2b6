/** The workstations feature: the `workstation` actor kind, /api/workstations, the compute quota routes (a user's, an organisation's), terminals. */
import { workstationActor } from '../actors/workstation.ts'
import { orgQuotaRoutes } from '../http/org-quotas.ts'
import { quotaRoutes } from '../http/quotas.ts'
import { workstationRoutes } from '../http/workstations.ts'
import * as store from '../store/workstations.ts'
import { activityTracker, computeFeature } from './compute.ts'
import type { Feature, FeatureContext } from './feature.ts'

export function workstationsFeature(ctx: FeatureContext): Feature {
  const { config, actors } = ctx.http
  const engine = ctx.engines.containers
  const idleTimeoutMs = config.workstations.idleTimeoutSeconds * 1000
  const touch = activityTracker(actors, 'workstation', idleTimeoutMs)
  return computeFeature(ctx, {
    name: 'workstations',
    kind: 'workstation',
    label: 'Workstation',
    wsPrefix: '/ws/workstations',
    actor: workstationActor({ engine, images: config.workstations.images, idleTimeoutMs, idleCpuPercent: config.workstations.idleCpuPercent, quota: config.quota, orgQuota: config.orgQuota }),
    routes: [workstationRoutes(ctx.http, { engine, touch }), quotaRoutes(ctx.http), orgQuotaRoutes(ctx.http)],
    findById: store.findById,
    ownerOf: store.ownerOf,
    activeIds: store.activeIds,
    existing: store.existing,
    onActivity: (target) => touch(target.id),
  })
}
