/**
 * The audit log's feature: its admin routes (/api/admin/audit), the retention actor, armed
 * as the server starts when AUDIT_RETENTION_DAYS is set, and the sweep that moves into the
 * chain the pending events of changes whose request was never answered (every half minute,
 * on every node; src/store/audit.ts recoverPending). The log itself (src/store/audit.ts)
 * is built by the composition root, which hands it to the request frame, the auth layer and
 * the actor runtime: every server has one, whatever features it installs.
 */
import { AUDIT_RETENTION_ID, AUDIT_RETENTION_KIND, auditRetentionActor } from '../actors/audit-retention.ts'
import { auditRoutes } from '../http/audit.ts'
import type { Feature, FeatureContext } from './feature.ts'

/** How often each node looks for pending audit events left by requests that were never answered. */
const RECOVER_EVERY_MS = 30_000

export function auditFeature(ctx: FeatureContext): Feature {
  const { config, actors, logger, audit } = ctx.http
  let sweep: ReturnType<typeof setInterval> | undefined
  const recover = () => void audit.recoverPending().catch((err) => logger.error({ err }, 'pending audit events could not be recovered'))
  return {
    name: 'audit',
    actors: [auditRetentionActor({ retentionDays: config.audit.retentionDays })],
    routes: [auditRoutes(ctx.http)],
    async start() {
      // Every node arms it: a new generation of reminders replaces the last (one stays live).
      // With retention off this retires any reminder left from when it was on.
      await actors.ask(AUDIT_RETENTION_KIND, AUDIT_RETENTION_ID, { type: 'arm' }).catch((err) => logger.error({ err }, 'audit retention could not be armed'))
      if (audit.enabled) {
        recover() // those a crash left before this start
        sweep = setInterval(recover, RECOVER_EVERY_MS)
      }
    },
    async stop() {
      clearInterval(sweep)
    },
  }
}
