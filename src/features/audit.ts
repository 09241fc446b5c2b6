/**
 * The audit log's feature: its admin routes (/api/admin/audit) and the retention actor, armed
 * as the server starts when AUDIT_RETENTION_DAYS is set. The log itself (src/store/audit.ts)
 * is built by the composition root, which hands it to the request frame and the auth layer:
 * every server has one, whatever features it installs.
 */
import { AUDIT_RETENTION_ID, AUDIT_RETENTION_KIND, auditRetentionActor } from '../actors/audit-retention.ts'
import { auditRoutes } from '../http/audit.ts'
import type { Feature, FeatureContext } from './feature.ts'

export function auditFeature(ctx: FeatureContext): Feature {
  const { config, actors, logger } = ctx.http
  return {
    name: 'audit',
    actors: [auditRetentionActor({ retentionDays: config.audit.retentionDays })],
    routes: [auditRoutes(ctx.http)],
    async start() {
      // Every node arms it: a new generation of reminders replaces the last (one stays live).
      // With retention off this retires any reminder left from when it was on.
      await actors.ask(AUDIT_RETENTION_KIND, AUDIT_RETENTION_ID, { type: 'arm' }).catch((err) => logger.error({ err }, 'audit retention could not be armed'))
    },
  }
}
