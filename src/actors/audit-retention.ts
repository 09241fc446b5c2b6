/**
 * Audit retention (AUDIT_RETENTION_DAYS): one actor (`audit-retention:main`) removes events
 * older than the retention from the start of the chain, on a durable reminder — every hour,
 * at once again while a sweep found more than one batch — so it survives restarts and runs
 * on exactly one node of a cluster (the owner of its shard). Each sweep is one turn: the
 * removal and its checkpoint (the last removed event's seq and hash, from which the rest of
 * the chain verifies) commit together (src/store/audit.ts `removeBefore`).
 *
 * Every node asks it to `arm` as it starts. Arming starts a new generation of reminders; a
 * reminder of an older generation does nothing, so however many nodes boot, one chain of
 * reminders is live.
 */
import { Type as T, type Static } from '@sinclair/typebox'
import { removeBefore } from '../store/audit-rows.ts'
import { defineActor } from './runtime/index.ts'

export const AUDIT_RETENTION_KIND = 'audit-retention'
export const AUDIT_RETENTION_ID = 'main'

const AuditRetentionMessage = T.Union([
  /** Start a new generation of reminders, the first due now (every node, as it starts). */
  T.Object({ type: T.Literal('arm') }),
  /** A reminder: remove what is past the retention, then set the next one. */
  T.Object({ type: T.Literal('sweep'), generation: T.Integer({ minimum: 0 }) }),
])
type AuditRetentionMessage = Static<typeof AuditRetentionMessage>

interface AuditRetentionState {
  generation: number
}

export interface AuditRetentionOptions {
  /** AUDIT_RETENTION_DAYS; 0 keeps everything. */
  retentionDays: number
  /** Between sweeps (default: an hour). */
  intervalMs?: number
  /** Events removed per turn (default 10,000). */
  batch?: number
}

const DAY_MS = 86_400_000

export function auditRetentionActor(opts: AuditRetentionOptions) {
  const intervalMs = opts.intervalMs ?? 3_600_000
  const batch = opts.batch ?? 10_000
  return defineActor({
    kind: AUDIT_RETENTION_KIND,
    messages: AuditRetentionMessage,
    initial: (): AuditRetentionState => ({ generation: 0 }),
    async handle(ctx, state, msg: AuditRetentionMessage) {
      switch (msg.type) {
        case 'arm': {
          const generation = state.generation + 1
          if (opts.retentionDays > 0) ctx.schedule(new Date(), { type: 'sweep', generation })
          return { state: { generation }, reply: generation }
        }
        case 'sweep': {
          // A reminder of an earlier generation, or retention turned off since it was set.
          if (msg.generation !== state.generation || opts.retentionDays <= 0) return
          const cutoff = new Date(Date.now() - opts.retentionDays * DAY_MS)
          const removed = await removeBefore(ctx.tx, cutoff, batch)
          if (removed > 0) ctx.logger.info({ removed, cutoff }, 'audit events past the retention removed')
          ctx.schedule(new Date(Date.now() + (removed === batch ? 0 : intervalMs)), { type: 'sweep', generation: msg.generation })
          return { reply: removed }
        }
        default: {
          const unhandled: never = msg
          throw new Error(`unhandled audit-retention message ${JSON.stringify(unhandled)}`)
        }
      }
    },
  })
}
