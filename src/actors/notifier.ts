/**
 * The `notifier` actor: one per user (its id is the user's id), the one that tells them things.
 *
 * It derives notifications from the events the other actors already commit on `user:<id>` —
 * a run or pipeline run ending, a workstation stopped for idleness, a DataKit upload that fills
 * the storage quota past 90 % — by reading that topic from the outbox past its cursor. A `sync`
 * turn reads the next events, records a notification for each that calls for one (with its
 * e-mail in the mail outbox when wanted: src/store/notifications.ts), emits a `notification`
 * event on `user:<id>` for each, and moves its cursor — all in the turn's one transaction, so
 * each event is told once, a crash between two turns loses nothing, and no actor that emits
 * the events had to change. Notifications recorded elsewhere (a password change, a lockout:
 * src/auth/) are announced by the next `sync` too.
 *
 * What triggers a `sync`: every node's listener on committed events (src/features/notifications.ts),
 * the NOTIFY of a notification recorded outside an actor, and a periodic sweep for users whose
 * cursor is behind — so a trigger lost with a node only delays a notification.
 *
 * It also owns the later changes of the user's notifications (read, read all) and e-mail
 * preferences.
 */
import { Type as T, type Static } from '@sinclair/typebox'
import type { Db } from '../store/db.ts'
import { storageUsage } from '../store/datakits.ts'
import { findModel } from '../store/models.ts'
import { findRun as findModelRun } from '../store/model-runs.ts'
import { findPipeline } from '../store/pipelines.ts'
import { readOutbox, type OutboxEvent } from '../store/outbox.ts'
import * as store from '../store/notifications.ts'
import { PREFERENCE_KINDS } from '../store/notifications-kinds.ts'
import { emailPreferences, setEmailPreferences } from '../store/notifications-preferences.ts'
import { render } from '../engines/mail/templates.ts'
import { defineActor, type TurnContext } from './runtime/index.ts'

export const NOTIFIER_KIND = 'notifier'

/** Events read per turn; a turn that read this many tells itself to go on. */
const PAGE = 200
/** Share of the storage quota at which the warning goes out (and below which it is re-armed). */
const STORAGE_WARNING = 0.9

const Id = T.String({ format: 'uuid' })

export const NotifierMessage = T.Union([
  /** Read `user:<id>` past the cursor, notify, announce what is not announced yet. */
  T.Object({ type: T.Literal('sync') }),
  /** Mark these read, all or none (the reply names those that are not the user's). */
  T.Object({ type: T.Literal('read'), ids: T.Array(Id, { minItems: 1, maxItems: 100 }) }),
  T.Object({ type: T.Literal('readAll') }),
  T.Object({ type: T.Literal('preferences'), email: T.Partial(T.Record(T.Union(PREFERENCE_KINDS.map((k) => T.Literal(k))), T.Boolean())) }),
])
export type NotifierMessage = Static<typeof NotifierMessage>

export interface NotifierOptions {
  frontendUrl: string
  /** SMTP_HOST set: notifications are e-mailed too. */
  mailAvailable: boolean
  /** USER_STORAGE_QUOTA_BYTES (an admin's override wins). */
  storageQuotaBytes: number
}

const TERMINAL_RUN = new Set(['SUCCEEDED', 'FAILED'])
const TERMINAL_PIPELINE_RUN = new Set(['SUCCEEDED', 'FAILED', 'TIMED_OUT'])

/**
 * The reason text the compute lifecycle gives an idle stop (src/actors/compute/lifecycle.ts):
 * the status event carries no machine-readable cause, so this is matched on.
 */
const IDLE_REASON = /\(idle timeout\)$/

type EventData = Record<string, unknown>

/** Whether a committed event may call for a notification (the listener syncs the user's notifier on these). */
export function concernsNotifier(e: Pick<OutboxEvent, 'topic' | 'type' | 'data'>): boolean {
  if (!e.topic.startsWith('user:')) return false
  const d = (e.data ?? {}) as EventData
  switch (e.type) {
    case 'model-run.status':
      return TERMINAL_RUN.has(String(d.status))
    case 'pipeline-run.status':
      return TERMINAL_PIPELINE_RUN.has(String(d.status))
    case 'status':
      return d.status === 'STOPPED' && typeof d.reason === 'string' && IDLE_REASON.test(d.reason)
    case 'datakit.status':
      return d.status === 'READY'
    case 'datakit.deleted':
      return true
    default:
      return false
  }
}

/** What the `notification` event says (EVENTS.user.notification in src/actors/events.ts). */
function notificationEvent(n: store.NotificationRow, frontendUrl: string) {
  const r = render(n.kind, n.data, frontendUrl)
  return { id: n.id, kind: n.kind, title: r.subject, body: r.summary, link: r.link, data: n.data, createdAt: new Date(n.createdAt).toISOString() }
}

/** The notifications one event calls for, and the storage warning's state after it. */
async function derive(tx: Db, userId: string, e: OutboxEvent, warned: boolean, opts: NotifierOptions): Promise<{ notes: store.NewNotification[]; warned: boolean }> {
  const d = (e.data ?? {}) as EventData
  const none = { notes: [], warned }
  if (!concernsNotifier(e)) return none
  switch (e.type) {
    case 'model-run.status': {
      const run = await findModelRun(tx, String(d.runId))
      if (!run) return none
      const model = await findModel(tx, run.modelId)
      const ok = d.status === 'SUCCEEDED'
      const kind = run.runKind === 'CONTAINER' ? (ok ? 'container-job.finished' : 'container-job.failed') : ok ? 'training-run.finished' : 'training-run.failed'
      const data = { runId: run.id, modelId: run.modelId, modelName: model?.name ?? null, status: d.status, error: d.error ?? null, version: d.version ?? null, attempt: d.attempt ?? 1 }
      return { notes: [{ userId, kind, data, dedupeKey: `model-run:${run.id}:${String(d.attempt ?? 1)}:${String(d.status)}` }], warned }
    }
    case 'pipeline-run.status': {
      const pipeline = await findPipeline(tx, String(d.pipelineId))
      const ok = d.status === 'SUCCEEDED'
      const data = { runId: d.runId, pipelineId: d.pipelineId, pipelineName: pipeline?.name ?? null, version: d.version, status: d.status, error: d.error ?? null, attempt: d.attempt }
      return { notes: [{ userId, kind: ok ? 'pipeline-run.finished' : 'pipeline-run.failed', data, dedupeKey: `pipeline-run:${String(d.runId)}:${String(d.attempt)}:${String(d.status)}` }], warned }
    }
    case 'status': {
      const data = { computeKind: d.kind, id: d.id, name: d.name, reason: d.reason, at: d.at }
      return { notes: [{ userId, kind: 'workstation.idle-stopped', data, dedupeKey: `${e.topic}#${e.seq}` }], warned }
    }
    case 'datakit.status':
    case 'datakit.deleted': {
      const u = await storageUsage(tx, userId, opts.storageQuotaBytes)
      const over = u.quotaBytes > 0 && u.usedBytes >= STORAGE_WARNING * u.quotaBytes
      if (!over) return { notes: [], warned: false }
      if (warned) return none
      const data = { usedBytes: u.usedBytes, quotaBytes: u.quotaBytes, percent: Math.floor((100 * u.usedBytes) / u.quotaBytes) }
      return { notes: [{ userId, kind: 'quota.warning', data, dedupeKey: `quota.storage:${e.seq}` }], warned: true }
    }
    default:
      return none
  }
}

export function notifierActor(opts: NotifierOptions) {
  const announce = (ctx: TurnContext<NotifierMessage>, n: store.NotificationRow) => ctx.emit(`user:${ctx.id}`, 'notification', notificationEvent(n, opts.frontendUrl))

  return defineActor({
    kind: NOTIFIER_KIND,
    messages: NotifierMessage,
    load: (sql, id) => store.loadCursor(sql, id),
    persist: (tx, id, state: store.NotifierCursor) => store.saveCursor(tx, id, state),
    async handle(ctx, state, msg) {
      switch (msg.type) {
        case 'sync': {
          const events = await readOutbox(ctx.tx, `user:${ctx.id}`, state.seq, PAGE)
          let warned = state.storageWarned
          for (const e of events) {
            const out = await derive(ctx.tx, ctx.id, e, warned, opts)
            warned = out.warned
            for (const note of out.notes) {
              const n = await store.record(ctx.tx, note, { mailAvailable: opts.mailAvailable, announced: true })
              if (n) announce(ctx, n)
            }
          }
          const unannounced = await store.takeUnannounced(ctx.tx, ctx.id, PAGE)
          for (const n of unannounced) announce(ctx, n)
          if (events.length === PAGE || unannounced.length === PAGE) ctx.self.tell({ type: 'sync' })
          const next = { seq: events.at(-1)?.seq ?? state.seq, storageWarned: warned }
          return next.seq === state.seq && next.storageWarned === state.storageWarned ? {} : { state: next }
        }
        case 'read':
          return { reply: await store.markRead(ctx.tx, ctx.id, msg.ids) }
        case 'readAll':
          return { reply: { marked: await store.markAllRead(ctx.tx, ctx.id) } }
        case 'preferences':
          await setEmailPreferences(ctx.tx, ctx.id, msg.email)
          return { reply: await emailPreferences(ctx.tx, ctx.id) }
        default: {
          const unhandled: never = msg
          throw new Error(`unhandled notifier message ${JSON.stringify(unhandled)}`)
        }
      }
    },
  })
}
