/**
 * A pipeline, as an actor of kind `pipeline`: the only writer of its row, its versions and its
 * schedules, and the one place that admits its runs.
 *
 * - Definitions are validated here (src/actors/pipelines/validate.ts) on create and on every
 *   update that brings one; a new definition is version N+1, and runs keep the version they
 *   were created with.
 * - Admission: a run, once recorded QUEUED by its own actor, asks to be admitted (`enqueue`);
 *   at most `maxActiveRuns` (default 1) are admitted at once (`active_runs`, kept in the same
 *   turn), the others wait QUEUED and are admitted oldest first as runs end (`runEnded`).
 * - Schedules fire on durable reminders, one per schedule for its next slot: a reminder is
 *   delivered at least once, by whichever node owns the pipeline's shard, and a fire whose
 *   slot is not the schedule's `next_run_at` is a repeat and does nothing, so a slot starts
 *   at most one run across a cluster and through restarts. A fire that finds later slots
 *   already past (the cluster was down) is a catch-up: `catchup: latest` starts one run,
 *   `none` none. `overlap: skip` starts nothing while the schedule's previous run is active.
 *
 * Events: `pipeline.created|updated|deleted` and `pipeline.schedule` on `user:<ownerId>`.
 */
import { Type as T, type Static } from '@sinclair/typebox'
import { ConflictError, NotFoundError, PG, pgCode, UnprocessableError } from '../../core/errors.ts'
import * as store from '../../store/pipelines.ts'
import * as runs from '../../store/pipeline-runs.ts'
import { defineActor, type TurnContext } from '../runtime/index.ts'
import type { PipelineDefinition } from './definition.ts'
import { PIPELINE_RUN_KIND } from './run.ts'
import { latestMissedSlot, nextRunAt, parseSchedule } from './schedule.ts'
import { validateDefinition, validateRunParams } from './validate.ts'

export const PIPELINE_KIND = 'pipeline'
export const MAX_NAME_CHARS = 200
export const MAX_DESCRIPTION_CHARS = 2000

const Id = T.String({ format: 'uuid' })
const Name = T.String({ minLength: 1, maxLength: MAX_NAME_CHARS })
const Description = T.Union([T.String({ maxLength: MAX_DESCRIPTION_CHARS }), T.Null()])
const Overlap = T.Union([T.Literal('skip'), T.Literal('allow')])
const Catchup = T.Union([T.Literal('none'), T.Literal('latest')])
const Params = T.Record(T.String(), T.Unknown())

export const ScheduleFields = {
  cron: T.String({ minLength: 1, maxLength: 200 }),
  timezone: T.String({ minLength: 1, maxLength: 64 }),
  params: Params,
  enabled: T.Boolean(),
  overlap: Overlap,
  catchup: Catchup,
}

export const PipelineMessage = T.Union([
  /** `orgId`: created in (shared with) that organisation. */
  T.Object({ type: T.Literal('create'), ownerId: Id, orgId: T.Optional(T.Union([Id, T.Null()])), name: Name, description: Description, definition: T.Unknown() }),
  /** `orgId`: moved into that organisation (null: made personal again). */
  T.Object({ type: T.Literal('update'), name: T.Optional(Name), description: T.Optional(Description), definition: T.Optional(T.Unknown()), orgId: T.Optional(T.Union([Id, T.Null()])) }),
  T.Object({ type: T.Literal('delete') }),
  /** From a run's actor once it is recorded QUEUED (again, after a retry). */
  T.Object({ type: T.Literal('enqueue'), runId: Id }),
  T.Object({ type: T.Literal('runEnded'), runId: Id }),
  T.Object({ type: T.Literal('addSchedule'), scheduleId: Id, ...ScheduleFields }),
  T.Object({
    type: T.Literal('updateSchedule'),
    scheduleId: Id,
    cron: T.Optional(ScheduleFields.cron),
    timezone: T.Optional(ScheduleFields.timezone),
    params: T.Optional(Params),
    enabled: T.Optional(T.Boolean()),
    overlap: T.Optional(Overlap),
    catchup: T.Optional(Catchup),
  }),
  T.Object({ type: T.Literal('deleteSchedule'), scheduleId: Id }),
  /** The reminder of a schedule's slot (ISO time). */
  T.Object({ type: T.Literal('fire'), scheduleId: Id, slot: T.String() }),
])
export type PipelineMessage = Static<typeof PipelineMessage>

export type PipelineState = store.PipelineRow | null

/** 422 with one detail per problem, fields under `definition`. */
function checkDefinition(definition: unknown): PipelineDefinition {
  const v = validateDefinition(definition)
  if (!v.ok) throw new UnprocessableError('The pipeline definition is not valid', v.details.map((d) => ({ field: d.path, message: d.message })))
  return v.definition
}

function checkParams(definition: PipelineDefinition, params: unknown, field: string): Record<string, unknown> {
  const v = validateRunParams(definition, params)
  if (!v.ok) throw new UnprocessableError('The run parameters are not valid', v.details.map((d) => ({ field: d.path.replace(/^params/, field), message: d.message })))
  return v.params
}

function checkCron(cron: string, timezone: string, minIntervalSeconds: number): void {
  const problem = parseSchedule(cron, timezone, minIntervalSeconds)
  if (problem) throw new UnprocessableError('The schedule is not valid', [problem])
}

const maxActive = (p: store.PipelineRow) => (p.definition as PipelineDefinition).maxActiveRuns ?? 1

/** The run a schedule starts for one slot: the same id however often the slot fires. */
function scheduledRunId(scheduleId: string, slot: string): string {
  const h = new Bun.CryptoHasher('sha256').update(`schedule/${scheduleId}/${slot}`).digest('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`
}

export interface PipelineOptions {
  /** PIPELINE_SCHEDULE_MIN_INTERVAL_SECONDS: schedules whose slots are closer are refused. */
  scheduleMinIntervalSeconds: number
}

export function pipelineActor(opts: PipelineOptions) {
  /** Admit queued runs into free slots, oldest first. */
  async function admit(ctx: TurnContext<PipelineMessage>, p: store.PipelineRow, admitted: string[]): Promise<string[]> {
    // A run that ended without its `runEnded` reaching us (its node died right after the
    // commit: sends go out from memory) gives its slot back here.
    const active = await runs.stillActive(ctx.tx, admitted)
    const free = maxActive(p) - active.length
    if (free <= 0) return active
    const queued = (await runs.queuedRunIds(ctx.tx, p.id, free + active.length)).filter((id) => !active.includes(id)).slice(0, free)
    for (const id of queued) ctx.send(PIPELINE_RUN_KIND, id, { type: 'start' })
    return [...active, ...queued]
  }

  function armSchedule(ctx: TurnContext<PipelineMessage>, s: store.ScheduleRow) {
    if (s.enabled && s.nextRunAt) ctx.schedule(s.nextRunAt, { type: 'fire', scheduleId: s.id, slot: s.nextRunAt.toISOString() })
  }

  function announce(ctx: TurnContext<PipelineMessage>, p: store.PipelineRow, type: string, data: unknown) {
    ctx.emit(`user:${p.userId}`, type, data)
  }

  async function schedule(ctx: TurnContext<PipelineMessage>, p: store.PipelineRow, scheduleId: string): Promise<store.ScheduleRow> {
    const s = await store.findSchedule(ctx.tx, scheduleId)
    if (!s || s.pipelineId !== p.id) throw new NotFoundError('Schedule')
    return s
  }

  return defineActor({
    kind: PIPELINE_KIND,
    messages: PipelineMessage,
    load: (sql, id) => store.findPipeline(sql, id).then((p) => p ?? null),
    // Every turn writes what it changes itself.
    persist: () => null,
    async handle(ctx, state: PipelineState, msg) {
      if (msg.type === 'create') {
        if (state) return { state, reply: state }
        const definition = checkDefinition(msg.definition)
        try {
          const p = await store.insertPipeline(ctx.tx, { id: ctx.id, userId: msg.ownerId, orgId: msg.orgId ?? null, name: msg.name, description: msg.description, definition })
          announce(ctx, p, 'pipeline.created', { id: p.id })
          return { state: p, reply: p }
        } catch (err) {
          if (pgCode(err) === PG.uniqueViolation) throw new ConflictError(`You already have a pipeline named "${msg.name}"`, [{ field: 'name', message: 'already used' }])
          throw err
        }
      }
      if (!state) {
        // Reports and reminders for a pipeline that is gone do nothing.
        if (msg.type === 'enqueue' || msg.type === 'runEnded' || msg.type === 'fire') return { state }
        throw new NotFoundError('Pipeline')
      }
      const p = state
      switch (msg.type) {
        case 'update': {
          const definition = msg.definition !== undefined ? checkDefinition(msg.definition) : undefined
          try {
            const next = await store.updatePipeline(ctx.tx, p.id, { name: msg.name, description: msg.description, definition, orgId: msg.orgId })
            announce(ctx, p, 'pipeline.updated', { id: p.id, version: next!.version })
            return { state: next!, reply: next }
          } catch (err) {
            if (pgCode(err) === PG.uniqueViolation) throw new ConflictError(`You already have a pipeline named "${msg.name}"`, [{ field: 'name', message: 'already used' }])
            throw err
          }
        }
        case 'delete': {
          const active = await runs.activeRunCount(ctx.tx, p.id)
          if (active > 0) throw new ConflictError(`The pipeline has ${active} queued or running run${active === 1 ? '' : 's'}: cancel ${active === 1 ? 'it' : 'them'} first`)
          await store.deletePipeline(ctx.tx, p.id)
          announce(ctx, p, 'pipeline.deleted', { id: p.id })
          return { state: null, reply: { id: p.id } }
        }
        case 'enqueue': {
          // Admitted already, but it asks again (after a restart: its `start` may have been lost
          // with a node): tell it again; a run that is not QUEUED ignores it.
          if (p.activeRuns.includes(msg.runId)) {
            ctx.send(PIPELINE_RUN_KIND, msg.runId, { type: 'start' })
            return { state: p }
          }
          const active = await admit(ctx, p, p.activeRuns)
          if (active.length === p.activeRuns.length && active.every((id, i) => id === p.activeRuns[i])) return { state: p }
          await store.setActiveRuns(ctx.tx, p.id, active)
          return { state: { ...p, activeRuns: active } }
        }
        case 'runEnded': {
          const active = await admit(
            ctx,
            p,
            p.activeRuns.filter((id) => id !== msg.runId),
          )
          await store.setActiveRuns(ctx.tx, p.id, active)
          return { state: { ...p, activeRuns: active } }
        }
        case 'addSchedule': {
          checkCron(msg.cron, msg.timezone, opts.scheduleMinIntervalSeconds)
          const params = checkParams(p.definition as PipelineDefinition, msg.params, 'params')
          const s = await store.insertSchedule(ctx.tx, {
            id: msg.scheduleId,
            pipelineId: p.id,
            userId: p.userId,
            cron: msg.cron,
            timezone: msg.timezone,
            params,
            enabled: msg.enabled,
            overlap: msg.overlap,
            catchup: msg.catchup,
            nextRunAt: msg.enabled ? nextRunAt(msg.cron, msg.timezone, new Date()) : null,
          })
          armSchedule(ctx, s)
          announce(ctx, p, 'pipeline.schedule', { pipelineId: p.id, scheduleId: s.id, enabled: s.enabled, nextRunAt: s.nextRunAt })
          return { state: p, reply: s }
        }
        case 'updateSchedule': {
          const cur = await schedule(ctx, p, msg.scheduleId)
          const cron = msg.cron ?? cur.cron
          const timezone = msg.timezone ?? cur.timezone
          checkCron(cron, timezone, opts.scheduleMinIntervalSeconds)
          const params = msg.params !== undefined ? checkParams(p.definition as PipelineDefinition, msg.params, 'params') : undefined
          const enabled = msg.enabled ?? cur.enabled
          const timing = msg.cron !== undefined || msg.timezone !== undefined || msg.enabled !== undefined
          const s = await store.updateSchedule(ctx.tx, cur.id, {
            cron,
            timezone,
            params,
            enabled,
            overlap: msg.overlap,
            catchup: msg.catchup,
            // Re-armed from now when its timing changed (a resumed schedule does not catch up on its pause).
            ...(timing ? { nextRunAt: enabled ? nextRunAt(cron, timezone, new Date()) : null } : {}),
          })
          if (timing) armSchedule(ctx, s!)
          announce(ctx, p, 'pipeline.schedule', { pipelineId: p.id, scheduleId: s!.id, enabled: s!.enabled, nextRunAt: s!.nextRunAt })
          return { state: p, reply: s }
        }
        case 'deleteSchedule': {
          const cur = await schedule(ctx, p, msg.scheduleId)
          await store.deleteSchedule(ctx.tx, cur.id)
          announce(ctx, p, 'pipeline.schedule', { pipelineId: p.id, scheduleId: cur.id, deleted: true })
          return { state: p, reply: { id: cur.id } }
        }
        case 'fire': {
          const s = await store.findSchedule(ctx.tx, msg.scheduleId)
          // Deleted, paused, re-armed, or this slot already fired: a repeat or a stale reminder.
          if (!s || !s.enabled || s.nextRunAt?.toISOString() !== msg.slot) return { state: p }
          const now = new Date()
          const slot = new Date(msg.slot)
          const behind = latestMissedSlot(s.cron, s.timezone, slot, now) !== null
          let runId: string | null = null
          let skipped: string | null = null
          if (behind && s.catchup === 'none') skipped = 'missed while the cluster was down (catchup: none)'
          else if (s.overlap === 'skip' && (await runs.scheduleHasActiveRun(ctx.tx, s.id))) skipped = 'the previous scheduled run is still active (overlap: skip)'
          else {
            try {
              const params = checkParams(p.definition as PipelineDefinition, s.params, 'params')
              runId = scheduledRunId(s.id, msg.slot)
              ctx.send(PIPELINE_RUN_KIND, runId, { type: 'create', pipelineId: p.id, ownerId: p.userId, version: p.version, params, useCache: true, scheduleId: s.id })
            } catch (err) {
              skipped = `its params no longer fit the pipeline: ${err instanceof Error ? err.message : String(err)}`
            }
          }
          const next = await store.updateSchedule(ctx.tx, s.id, { nextRunAt: nextRunAt(s.cron, s.timezone, now), lastFiredAt: now, ...(runId ? { lastRunId: runId } : {}) })
          armSchedule(ctx, next!)
          if (skipped) ctx.logger.info({ pipelineId: p.id, scheduleId: s.id, slot: msg.slot }, `schedule slot skipped: ${skipped}`)
          announce(ctx, p, 'pipeline.schedule', { pipelineId: p.id, scheduleId: s.id, slot: msg.slot, runId, skipped, nextRunAt: next!.nextRunAt })
          return { state: p }
        }
        default: {
          const never: never = msg
          throw new Error(`unhandled message ${(never as { type: string }).type}`)
        }
      }
    },
  })
}
