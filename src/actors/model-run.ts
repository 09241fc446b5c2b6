/**
 * A training run, as an actor of kind `model-run`. Its state is its model_runs row.
 *
 *   create ──> QUEUED ──started──> RUNNING ──succeeded──> SUCCEEDED (version N registered)
 *                 │                   ├──failed──────> FAILED (a reason the user can act on)
 *                 │                   └──timeout─────> FAILED (durable reminder)
 *                 └──────cancel (either)────────────> CANCELLED
 *
 * The work itself (reading the DataKit, training in a Worker or a container, writing the
 * artifact) runs in a background task started after the create turn commits; it waits for
 * one of this node's TRAINING_CONCURRENCY slots (shared fairly between users: at most
 * TRAINING_CONCURRENCY_PER_USER each, and a freed slot goes to the waiting user who holds the
 * fewest), asks the actor for `started`, and reports
 * metrics, logs and the outcome back as messages, so every change of the run's rows happens
 * in one of its turns and every change is an event on `run:<id>`.
 *
 * Attempts: a run whose node stopped mid-way is started again (`resume`, sent at boot) as
 * attempt N+1; messages and reminders carry their attempt, and those of an earlier one are
 * ignored. Its metrics are logged anew (the history of the lost attempt is cleared).
 */
import { Type as T, type Static } from '@sinclair/typebox'
import { AppError, ConflictError, NotFoundError, PG, pgCode } from '../core/errors.ts'
import { FairSemaphore } from '../core/fair-semaphore.ts'
import type { Db } from '../store/db.ts'
import * as store from '../store/model-runs.ts'
import * as versions from '../store/model-versions.ts'
import * as quotas from '../store/quotas.ts'
import { defineActor, type ActorRef, type TurnContext } from './runtime/index.ts'
import { runArtifactPath, type ArtifactInfo, type Reporter, type RunSpec, type TaskEnv } from './model-run-spec.ts'
import { runBuiltin } from './model-run-builtin.ts'
import { runContainer } from './model-run-container.ts'

const Id = T.String({ format: 'uuid' })
const Attempt = T.Integer({ minimum: 1 })
const Point = T.Object({ key: T.String({ minLength: 1, maxLength: 250 }), value: T.Number(), step: T.Integer({ minimum: 0 }), timestamp: T.Number() })

export const ModelRunMessage = T.Union([
  /** From the HTTP edge: record the run and start it. */
  T.Object({
    type: T.Literal('create'),
    run: T.Object({
      modelId: Id,
      userId: Id,
      runKind: T.Union([T.Literal('BUILTIN'), T.Literal('CONTAINER')]),
      spec: T.Record(T.String(), T.Unknown()),
      datakitId: T.Union([Id, T.Null()]),
      datakitVersion: T.Union([T.Integer(), T.Null()]),
      timeoutSeconds: T.Integer({ minimum: 1 }),
      params: T.Record(T.String(), T.String()),
      tags: T.Record(T.String(), T.String()),
    }),
  }),
  /** From the background task once it holds a slot: may it run? */
  T.Object({ type: T.Literal('started'), attempt: Attempt }),
  T.Object({ type: T.Literal('metrics'), attempt: Attempt, points: T.Array(Point, { maxItems: 1000 }) }),
  T.Object({
    type: T.Literal('logs'),
    attempt: Attempt,
    lines: T.Array(
      T.Object({
        stream: T.Union([T.Literal('stdout'), T.Literal('stderr')]),
        line: T.String(),
        at: T.Number(),
        partial: T.Optional(T.Literal(true)),
        notice: T.Optional(T.Literal(true)),
      }),
      { maxItems: 1000 },
    ),
    /** With the last batch of a run whose output went past its limits: the bytes dropped. */
    droppedBytes: T.Optional(T.Integer({ minimum: 0 })),
  }),
  T.Object({
    type: T.Literal('succeeded'),
    attempt: Attempt,
    artifact: T.Object({
      path: T.String({ minLength: 1 }),
      format: T.Union([T.Literal('quadrax.tabular'), T.Literal('files')]),
      inputSchema: T.Unknown(),
      metrics: T.Record(T.String(), T.Number()),
      files: T.Array(T.Object({ path: T.String(), bytes: T.Number() })),
      bytes: T.Number(),
    }),
  }),
  T.Object({ type: T.Literal('failed'), attempt: Attempt, reason: T.String() }),
  /** From the HTTP edge. */
  T.Object({ type: T.Literal('cancel') }),
  /** The durable reminder set when the run started. */
  T.Object({ type: T.Literal('timeout'), attempt: Attempt }),
  /** At boot: a run left QUEUED or RUNNING with no task on this node is started again. */
  T.Object({ type: T.Literal('resume') }),
])
export type ModelRunMessage = Static<typeof ModelRunMessage>

/** null: no such run (yet). */
export type ModelRunState = store.RunRow | null

export interface ModelRunOptions {
  env: TaskEnv
  /** Runs executing at once on this node (TRAINING_CONCURRENCY); more wait QUEUED. */
  concurrency: number
  /** Of those, runs of one user at once (TRAINING_CONCURRENCY_PER_USER); default: all of them. */
  concurrencyPerUser?: number
  /** Queued + running runs per user (TRAINING_MAX_ACTIVE_RUNS). */
  maxActiveRunsPerUser: number
  /** The default compute quota container runs count against (admins override per user). */
  quota: quotas.QuotaLimits
  /** TRAINING_MAX_TIMEOUT_SECONDS, named in the timeout reason. */
  maxTimeoutSeconds: number
}

const ACTIVE: readonly store.RunStatus[] = ['QUEUED', 'RUNNING']

/** The run tag that records how many bytes of a container run's output were dropped past its limits. */
const DROPPED_TAG = 'quadrax.dropped_output_bytes'
const isActive = (s: store.RunRow): boolean => ACTIVE.includes(s.status)

/** A reason a user can act on, from whatever a run's task threw. */
function failureReason(err: unknown): string {
  if (err instanceof AppError && err.expose) {
    const details = err.details.length ? ` (${err.details.map((d) => `${d.field}: ${d.message}`).join('; ')})` : ''
    return err.message + details
  }
  return 'Training failed because of an internal error; start the run again, and tell an administrator if it keeps failing'
}

/** The `model-run` actor kind, bound to this node's engines and settings. */
export function modelRunActor(opts: ModelRunOptions) {
  // Runs executing at once on this node, keyed by user: one user's queue of runs never holds
  // another's first run back by more than a slot's turnover (issue 14, item 3). A run
  // cancelled while it waits gives up its place.
  const slots = new FairSemaphore(opts.concurrency, Math.min(opts.concurrency, opts.concurrencyPerUser ?? opts.concurrency))
  // Tasks of this node, by run id: cancel and timeout abort them; resume skips runs that have one.
  const local = new Map<string, { attempt: number; ctl: AbortController }>()

  const emitStatus = (ctx: TurnContext<ModelRunMessage>, run: store.RunRow, note?: string) => {
    const data = { runId: run.id, modelId: run.modelId, status: run.status, error: run.error, version: run.version, attempt: run.attempts, ...(note ? { note } : {}) }
    ctx.emit(`run:${run.id}`, 'status', data)
    ctx.emit(`user:${run.userId}`, 'model-run.status', data)
  }

  const abortLocal = (ctx: TurnContext<ModelRunMessage>, reason: string) => {
    // After commit: a turn that rolls back must not have stopped a run that goes on.
    const id = ctx.id
    ctx.background(async () => local.get(id)?.ctl.abort(new Error(reason)))
  }

  /**
   * Progress is asked, not told: the reply says whether the run still wants this attempt. When
   * it does not (the run ended, or its shard moved to another node that started attempt N+1),
   * `stale` stops this attempt's work here.
   */
  const reporter = (self: ActorRef<ModelRunMessage>, attempt: number, log: TaskEnv['logger'], stale: () => void): Reporter => {
    const progress = (m: ModelRunMessage) => {
      self.ask(m).then(
        (r) => (r as { accepted?: boolean } | undefined)?.accepted === false && stale(),
        (err) => log.warn({ err, runId: self.id }, 'could not report to the run'),
      )
    }
    const tell = (m: ModelRunMessage) => {
      try {
        self.tell(m)
      } catch (err) {
        log.warn({ err, runId: self.id }, 'could not report to the run')
      }
    }
    return {
      metrics: (points) => {
        for (let i = 0; i < points.length; i += 1000) progress({ type: 'metrics', attempt, points: points.slice(i, i + 1000) })
      },
      logs: (lines, droppedBytes) => {
        for (let i = 0; i < lines.length || (i === 0 && droppedBytes !== undefined); i += 1000) {
          const last = i + 1000 >= lines.length
          progress({ type: 'logs', attempt, lines: lines.slice(i, i + 1000), ...(last && droppedBytes !== undefined ? { droppedBytes } : {}) })
        }
      },
      succeeded: async (artifact: ArtifactInfo) => ((await self.ask({ type: 'succeeded', attempt, artifact })) as { registered: boolean }).registered,
      failed: (reason) => tell({ type: 'failed', attempt, reason }),
    }
  }

  /** The background task of one attempt. */
  const execute = (ctx: TurnContext<ModelRunMessage>, run: store.RunRow, attempt: number) => {
    const self = ctx.self
    const log = opts.env.logger
    ctx.background(async (systemSignal) => {
      const ctl = new AbortController()
      const signal = AbortSignal.any([systemSignal, ctl.signal])
      local.set(run.id, { attempt, ctl })
      try {
        await slots.acquire(run.userId, signal)
        try {
          const { proceed } = (await self.ask({ type: 'started', attempt })) as { proceed: boolean }
          if (!proceed) return
          const report = reporter(self, attempt, log, () => ctl.abort(new Error('superseded')))
          const spec = run.spec as unknown as RunSpec
          const artifactPath = runArtifactPath(run.modelId, run.id, attempt)
          try {
            if (spec.kind === 'BUILTIN') await runBuiltin(opts.env, spec, artifactPath, signal, report, run.userId)
            else await runContainer(opts.env, run, spec, artifactPath, signal, report)
          } catch (err) {
            // Cancelled or timed out: the actor already ended the run. Stopping: the next boot resumes it.
            if (signal.aborted) return
            if (!(err instanceof AppError && err.expose)) log.error({ err, runId: run.id }, 'training run failed')
            report.failed(failureReason(err))
          }
        } finally {
          slots.release(run.userId)
        }
      } catch (err) {
        if (!signal.aborted) log.error({ err, runId: run.id }, 'training run task failed')
      } finally {
        // Stopped with the node: kept, so that the node hands it on (runningHere).
        if (local.get(run.id)?.ctl === ctl && !systemSignal.aborted) local.delete(run.id)
      }
    })
  }

  const end = (ctx: TurnContext<ModelRunMessage>, run: store.RunRow, status: 'SUCCEEDED' | 'FAILED' | 'CANCELLED', fields: Partial<store.RunRow> = {}) => {
    const next: store.RunRow = { ...run, ...fields, status, finishedAt: new Date() }
    emitStatus(ctx, next)
    return next
  }

  const kind = defineActor({
    kind: 'model-run',
    messages: ModelRunMessage,
    async load(sql, id): Promise<ModelRunState> {
      return (await store.findRun(sql, id)) ?? null
    },
    persist: (tx: Db, _id: string, state: ModelRunState) => (state ? store.saveRunState(tx, state) : Promise.resolve()),
    async handle(ctx, state, msg) {
      switch (msg.type) {
        case 'create': {
          if (state) return { reply: { id: state.id, status: state.status } }
          const r = msg.run
          await quotas.lockUser(ctx.tx, r.userId)
          const active = await store.activeRunCount(ctx.tx, r.userId)
          if (active >= opts.maxActiveRunsPerUser) {
            throw new ConflictError(`You have ${active} runs queued or running, the most allowed (TRAINING_MAX_ACTIVE_RUNS); wait for one to end or cancel one`, [
              { field: 'runs', message: `${active} active of ${opts.maxActiveRunsPerUser} allowed` },
            ])
          }
          if (r.runKind === 'CONTAINER') {
            const want = r.spec.resources as { cpu: number; memory: number }
            await quotas.claim(ctx.tx, r.userId, { kind: 'run', id: ctx.id }, { cpu: want.cpu, memoryMb: want.memory }, opts.quota)
          }
          let row: store.RunRow
          try {
            row = await store.insertRun(ctx.tx, { id: ctx.id, modelId: r.modelId, userId: r.userId, runKind: r.runKind, spec: r.spec, datakitId: r.datakitId, datakitVersion: r.datakitVersion, timeoutSeconds: r.timeoutSeconds })
          } catch (err) {
            if (pgCode(err) === PG.foreignKeyViolation) throw new NotFoundError('Model')
            throw err
          }
          await store.insertParams(ctx.tx, ctx.id, r.params)
          await store.setTags(ctx.tx, ctx.id, r.tags)
          const next: store.RunRow = { ...row, attempts: 1 }
          emitStatus(ctx, next)
          execute(ctx, next, 1)
          return { state: next, reply: { id: next.id, status: next.status } }
        }
        case 'started': {
          if (!state || state.status !== 'QUEUED' || state.attempts !== msg.attempt) return { reply: { proceed: false } }
          const next: store.RunRow = { ...state, status: 'RUNNING', startedAt: new Date() }
          ctx.schedule(new Date(Date.now() + state.timeoutSeconds * 1000), { type: 'timeout', attempt: msg.attempt })
          emitStatus(ctx, next)
          return { state: next, reply: { proceed: true } }
        }
        case 'metrics': {
          if (!state || state.status !== 'RUNNING' || state.attempts !== msg.attempt) return { reply: { accepted: false } }
          await store.logMetrics(ctx.tx, ctx.id, msg.points)
          ctx.emit(`run:${ctx.id}`, 'metrics', { runId: ctx.id, points: msg.points })
          return { reply: { accepted: true } }
        }
        case 'logs': {
          if (!state || state.status !== 'RUNNING' || state.attempts !== msg.attempt) return { reply: { accepted: false } }
          if (msg.droppedBytes !== undefined) await store.setTags(ctx.tx, ctx.id, { [DROPPED_TAG]: String(msg.droppedBytes) })
          ctx.emit(`run:${ctx.id}`, 'logs', { runId: ctx.id, lines: msg.lines, ...(msg.droppedBytes !== undefined ? { droppedBytes: msg.droppedBytes } : {}) })
          return { reply: { accepted: true } }
        }
        case 'succeeded': {
          if (!state || state.status !== 'RUNNING' || state.attempts !== msg.attempt) return { reply: { registered: false } }
          const a = msg.artifact
          const version = await versions.registerVersion(ctx.tx, {
            modelId: state.modelId,
            runId: state.id,
            artifactPath: a.path,
            artifactFormat: a.format,
            inputSchema: a.inputSchema ?? null,
            metrics: a.metrics,
            files: a.files,
            bytes: a.bytes,
          })
          const next = end(ctx, state, 'SUCCEEDED', { version, error: null })
          return { state: next, reply: { registered: true, version } }
        }
        case 'failed': {
          if (!state || !isActive(state) || state.attempts !== msg.attempt) return
          return { state: end(ctx, state, 'FAILED', { error: msg.reason.slice(0, 2000) }) }
        }
        case 'cancel': {
          if (!state) throw new NotFoundError('Run')
          if (!isActive(state)) throw new ConflictError(`The run already ended: it is ${state.status}`)
          const next = end(ctx, state, 'CANCELLED', { error: 'Cancelled by the user' })
          abortLocal(ctx, 'cancelled')
          return { state: next, reply: { id: next.id, status: next.status } }
        }
        case 'timeout': {
          if (!state || !isActive(state) || state.attempts !== msg.attempt) return
          const error = `The run exceeded its timeout of ${state.timeoutSeconds} s and was stopped; give it a longer timeoutSeconds (at most ${opts.maxTimeoutSeconds}) or train on fewer rows or epochs`
          const next = end(ctx, state, 'FAILED', { error })
          abortLocal(ctx, 'timed out')
          return { state: next }
        }
        case 'resume': {
          if (!state || !isActive(state) || local.has(ctx.id)) return
          const attempt = state.attempts + 1
          await store.clearMetrics(ctx.tx, ctx.id)
          const next: store.RunRow = { ...state, status: 'QUEUED', attempts: attempt, startedAt: null }
          emitStatus(ctx, next, 'started again: the server running it stopped')
          execute(ctx, next, attempt)
          return { state: next }
        }
        default: {
          const never: never = msg
          throw new Error(`unhandled model-run message ${JSON.stringify(never)}`)
        }
      }
    },
  })
  /** Runs whose attempt this node is carrying out or waiting to (and, once it stopped, those it stopped with): a stopping node hands them on. */
  return Object.assign(kind, { runningHere: (): string[] => [...local.keys()] })
}
