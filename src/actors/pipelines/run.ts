/**
 * A pipeline run, as an actor of kind `pipeline-run`: the only writer of its pipeline_runs
 * row, its steps (pipeline_run_steps) and their logs.
 *
 *   create ─> QUEUED ─start (admitted by the pipeline)─> RUNNING ─> SUCCEEDED | FAILED
 *                │                                         ├─runTimeout─> TIMED_OUT
 *                └───────────────cancel (either)───────────┴──────────> CANCELLED
 *   retry (once ended, not SUCCEEDED) ─> QUEUED again as attempt N+1
 *
 * Each turn applies what happened (the run was admitted, a step ended, a reminder fired) and
 * then advances the DAG (`advance`): steps whose trigger rule is satisfied start at once, in
 * the same turn — `when` false makes them SKIPPED, a cache hit SUCCEEDED with the earlier
 * outputs, `empty` steps end in the next turn, other kinds run as background work that
 * reports back with `stepResult`. Every step transition is written in its turn and is an
 * event `step` on `pipeline-run:<id>`; the run's are `status` there and `pipeline-run.status`
 * on `user:<ownerId>`.
 *
 * Retries wait on a durable reminder (`retryStep`); step and run timeouts are reminders too.
 * While a run is RUNNING a `tick` reminder comes every TICK_MS: a node that took the run over
 * after its node died finds RUNNING steps with no task here and re-attaches to them (the step
 * kind finds the model run or container by the step's external id), so a node killed mid-run
 * loses nothing and a finished step is not run again.
 */
import { Type as T, type Static } from '@sinclair/typebox'
import { ConflictError, NotFoundError } from '../../core/errors.ts'
import * as store from '../../store/pipeline-runs.ts'
import * as pipelines from '../../store/pipelines.ts'
import * as quotas from '../../store/quotas.ts'
import type { Db } from '../../store/db.ts'
import { defineActor, type TurnContext } from '../runtime/index.ts'
import { stepCacheKey } from './cache-key.ts'
import { compileDag, nextDecisions, retryDelaySeconds, runOutcome } from './dag.ts'
import type { PipelineDefinition, StepSpec } from './definition.ts'
import { evaluate, parseExpression } from './expression.ts'
import { resolveTemplates } from './references.ts'
import { StepFailure, type StepEnv, type StepKindRuntime, type StepLogLine } from './steps/executor.ts'
import { LogPump } from './steps/log-pump.ts'
import { runView, stepView, Turn as TurnOf, type RunState } from './run-turn.ts'

type Turn = TurnOf<PipelineRunMessage>

export const PIPELINE_RUN_KIND = 'pipeline-run'
const TICK_MS = 2_000
/** Log lines kept per step; past it they are counted in a last notice. */
export const MAX_STEP_LOG_LINES = 10_000

const Id = T.String({ format: 'uuid' })
const StepId = T.String({ minLength: 1, maxLength: 64 })
const Attempt = T.Integer({ minimum: 1 })
const Json = T.Record(T.String(), T.Unknown())

export const PipelineRunMessage = T.Union([
  /** From the HTTP edge or a schedule: record the run (QUEUED) and ask the pipeline to admit it. */
  T.Object({
    type: T.Literal('create'),
    pipelineId: Id,
    ownerId: Id,
    version: T.Integer({ minimum: 1 }),
    params: Json,
    useCache: T.Boolean(),
    scheduleId: T.Union([Id, T.Null()]),
  }),
  /** From the pipeline actor: admitted (maxActiveRuns). */
  T.Object({ type: T.Literal('start') }),
  /** From a step's background work. */
  T.Object({
    type: T.Literal('stepResult'),
    stepId: StepId,
    attempt: Attempt,
    ok: T.Boolean(),
    outputs: T.Optional(Json),
    error: T.Optional(T.String()),
  }),
  /** `empty` steps started in one turn, ended together. */
  T.Object({ type: T.Literal('emptyDone'), steps: T.Array(T.Object({ stepId: StepId, attempt: Attempt }), { maxItems: 1000 }) }),
  T.Object({
    type: T.Literal('stepLogs'),
    stepId: StepId,
    attempt: Attempt,
    lines: T.Array(T.Object({ stream: T.Union([T.Literal('stdout'), T.Literal('stderr')]), line: T.String(), at: T.Number() }), { maxItems: 1000 }),
  }),
  /** Reminders. */
  T.Object({ type: T.Literal('retryStep'), stepId: StepId, attempt: T.Integer({ minimum: 0 }) }),
  T.Object({ type: T.Literal('stepTimeout'), stepId: StepId, attempt: Attempt }),
  T.Object({ type: T.Literal('runTimeout'), attempt: Attempt }),
  T.Object({ type: T.Literal('tick'), attempt: Attempt }),
  /** From the HTTP edge. */
  T.Object({ type: T.Literal('cancel') }),
  T.Object({ type: T.Literal('retry') }),
  /** At boot: re-attach to what a stopped node left running. */
  T.Object({ type: T.Literal('resume') }),
])
export type PipelineRunMessage = Static<typeof PipelineRunMessage>


export type PipelineRunState = RunState | null

export interface PipelineRunOptions {
  env: StepEnv
  kinds: Record<string, StepKindRuntime>
  /** PIPELINE_STEP_CONCURRENCY: steps of one run running at once (`empty` steps aside). */
  stepConcurrency: number
  quota: quotas.QuotaLimits
}

const TERMINAL_RUN: readonly store.PipelineRunStatus[] = ['SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMED_OUT']

/** A step's id for what its attempt starts: stable per run, step and attempt (a UUID's shape). */
function externalIdOf(runId: string, stepId: string, attempt: number, runAttempt: number): string {
  const h = new Bun.CryptoHasher('sha256').update(`${runId}/${stepId}/${runAttempt}/${attempt}`).digest('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`
}

export function pipelineRunActor(opts: PipelineRunOptions) {
  const { env, kinds } = opts
  /** Background work of this node: `<runId>/<stepId>` → its attempt and abort. */
  const tasks = new Map<string, { attempt: number; ctl: AbortController }>()
  /** Parsed `when` expressions, by source. */
  const whens = new Map<string, ReturnType<typeof parseExpression>>()

  const abortTask = (runId: string, stepId: string, reason: string) => {
    const t = tasks.get(`${runId}/${stepId}`)
    if (t) {
      tasks.delete(`${runId}/${stepId}`)
      t.ctl.abort(new Error(reason))
    }
  }

  async function load(sql: Db, id: string): Promise<PipelineRunState> {
    const run = await store.findRun(sql, id)
    if (!run) return null
    const version = await pipelines.findVersion(sql, run.pipelineId, run.version)
    if (!version) return null
    const definition = version.definition as PipelineDefinition
    const steps = await store.listSteps(sql, id)
    // `waiting`: unknown after a load, so the first turn looks at every step.
    return { run, definition, dag: compileDag(definition), steps: new Map(steps.map((s) => [s.stepId, s])), waiting: true }
  }

  /** The step's attempt no longer runs here (it ended, or waits for a retry). */
  const forget = (runId: string, stepId: string) => tasks.delete(`${runId}/${stepId}`)

  /** End a step; the DAG advances at the end of the turn. */
  function finish(t: Turn, stepId: string, status: store.StepStatus, patch: Partial<store.StepRow> = {}) {
    forget(t.run.id, stepId)
    t.set(stepId, { status, endedAt: new Date(), cpu: null, memoryMb: null, ...patch })
  }

  /** A failed attempt: retried after its delay when it has retries left, else FAILED. */
  function failAttempt(t: Turn, spec: StepSpec, stepId: string, error: string) {
    const s = t.step(stepId)
    const retries = spec.retries?.count ?? 0
    if (s.attempts <= retries) {
      const delay = retryDelaySeconds(spec.retries!, s.attempts)
      forget(t.run.id, stepId)
      t.set(stepId, { status: 'PENDING', error, cpu: null, memoryMb: null })
      t.ctx.schedule(new Date(Date.now() + delay * 1000), { type: 'retryStep', stepId, attempt: s.attempts })
    } else {
      finish(t, stepId, 'FAILED', { error })
    }
  }

  async function start(t: Turn, spec: StepSpec): Promise<void> {
    const stepId = spec.id
    const s = t.step(stepId)
    const attempt = s.attempts + 1
    const now = new Date()
    if (spec.when !== undefined) {
      let expr = whens.get(spec.when)
      if (!expr) whens.set(spec.when, (expr = parseExpression(spec.when)))
      if (!evaluate(expr, t.scope())) {
        finish(t, stepId, 'SKIPPED', { startedAt: now, error: null })
        return
      }
    }
    let resolved: Record<string, unknown>
    try {
      resolved = (spec.with === undefined ? {} : resolveTemplates(spec.with, t.scope())) as Record<string, unknown>
    } catch (err) {
      finish(t, stepId, 'FAILED', { attempts: attempt, startedAt: now, error: err instanceof Error ? err.message : String(err) })
      return
    }
    if (spec.kind === 'empty') {
      t.set(stepId, { status: 'RUNNING', attempts: attempt, startedAt: s.startedAt ?? now, error: null })
      t.emptyDone.push({ stepId, attempt })
      return
    }
    const kind = kinds[spec.kind]
    if (!kind) {
      finish(t, stepId, 'FAILED', { attempts: attempt, startedAt: now, error: `unknown step kind ${spec.kind}` })
      return
    }
    let cacheKey: string | null = null
    if (kind.inputs && t.run.useCache && spec.cache !== false) {
      try {
        const inputs = await kind.inputs(env, t.run.userId, resolved)
        cacheKey = stepCacheKey({ kind: spec.kind, with: resolved, inputs })
      } catch (err) {
        if (!(err instanceof StepFailure)) throw err
        t.set(stepId, { attempts: attempt, startedAt: s.startedAt ?? now })
        failAttempt(t, spec, stepId, err.message)
        return
      }
      const hit = await store.findCachedStep(env.sql, t.run.userId, cacheKey)
      if (hit) {
        finish(t, stepId, 'SUCCEEDED', { attempts: attempt, cached: true, cacheKey, outputs: hit.outputs, startedAt: now, error: null })
        return
      }
    }
    const holds = kind.holds?.(resolved) ?? null
    if (holds) {
      try {
        // Steps started earlier in this turn hold their share already, though not written yet.
        await quotas.claim(t.ctx.tx, t.run.userId, { kind: 'pipeline-step', id: `${t.run.id}/${stepId}` }, holds, opts.quota, t.claimed)
        t.claimed = { running: t.claimed.running + 1, cpu: t.claimed.cpu + holds.cpu, memoryMb: t.claimed.memoryMb + holds.memoryMb }
      } catch (err) {
        t.set(stepId, { attempts: attempt, startedAt: s.startedAt ?? now })
        failAttempt(t, spec, stepId, err instanceof Error ? err.message : String(err))
        return
      }
    }
    const externalId = externalIdOf(t.run.id, stepId, attempt, t.run.attempt)
    t.set(stepId, { status: 'RUNNING', attempts: attempt, cacheKey, externalId, startedAt: s.startedAt ?? now, error: null, cpu: holds?.cpu ?? null, memoryMb: holds?.memoryMb ?? null })
    if (spec.timeoutSeconds !== undefined) t.ctx.schedule(new Date(Date.now() + spec.timeoutSeconds * 1000), { type: 'stepTimeout', stepId, attempt })
    launch(t.ctx, t.run, spec, attempt, externalId, resolved, false)
  }

  /** Run a step's attempt as background work after the turn commits. */
  function launch(ctx: TurnContext<PipelineRunMessage>, run: store.PipelineRunRow, spec: StepSpec, attempt: number, externalId: string, resolved: Record<string, unknown>, resumed: boolean) {
    const key = `${run.id}/${spec.id}`
    const kind = kinds[spec.kind]!
    const self = ctx.self
    ctx.background(async (systemSignal) => {
      if (tasks.get(key)?.attempt === attempt) return
      const ctl = new AbortController()
      tasks.set(key, { attempt, ctl })
      const onStop = () => ctl.abort(systemSignal.reason)
      systemSignal.addEventListener('abort', onStop, { once: true })
      const pump = new LogPump((lines) => self.tell({ type: 'stepLogs', stepId: spec.id, attempt, lines: lines.map((l) => ({ stream: l.stream, line: l.line, at: l.at.getTime() })) }), MAX_STEP_LOG_LINES)
      try {
        const outputs = await kind.run(env, { runId: run.id, stepId: spec.id, attempt, ownerId: run.userId, externalId, resumed, signal: ctl.signal, log: (lines: StepLogLine[]) => pump.push(lines) }, resolved)
        pump.close()
        if (!systemSignal.aborted) self.tell({ type: 'stepResult', stepId: spec.id, attempt, ok: true, outputs })
      } catch (err) {
        pump.close()
        if (systemSignal.aborted) return
        const reason = err instanceof StepFailure ? err.message : ctl.signal.aborted ? String((ctl.signal.reason as Error)?.message ?? 'stopped') : 'internal error while running the step'
        if (!(err instanceof StepFailure) && !ctl.signal.aborted) env.logger.error({ err, runId: run.id, stepId: spec.id }, 'pipeline step failed unexpectedly')
        self.tell({ type: 'stepResult', stepId: spec.id, attempt, ok: false, error: reason })
      } finally {
        // The entry stays until the turn that handles the result (or a stop) forgets it, so
        // a tick in between does not take the step for one whose node died.
        systemSignal.removeEventListener('abort', onStop)
        if (systemSignal.aborted && tasks.get(key)?.ctl === ctl) tasks.delete(key)
      }
    })
  }

  /** Start what can start, skip what cannot run, and end the run when every step has ended. */
  async function advance(t: Turn, everything = false): Promise<void> {
    if (t.run.status !== 'RUNNING') return
    for (let first = true; ; first = false) {
      const endedBefore = t.ended
      // All steps when asked, or while some wait for a free slot; else what changed and its downstream.
      const full = (first && everything) || t.waiting
      const d = nextDecisions(t.state.dag, t.statuses, full ? undefined : [...t.undecided])
      t.undecided.clear()
      for (const id of d.skipped) finish(t, id, 'SKIPPED')
      for (const id of d.upstreamFailed) finish(t, id, 'UPSTREAM_FAILED')
      let capped = false
      for (const id of d.ready) {
        const spec = t.state.dag.spec(id)
        if (spec.kind !== 'empty' && t.running >= opts.stepConcurrency) {
          capped = true
          continue
        }
        await start(t, spec)
      }
      t.waiting = capped
      // Steps that ended here (skipped, unresolvable, cache hits) may let others start.
      if (t.ended === endedBefore) break
    }
    if (t.open === 0) {
      const all = [...t.steps.values()]
      const outcome = runOutcome(all.map((s) => s.status))
      const failed = all.filter((s) => s.status === 'FAILED').map((s) => s.stepId)
      endRun(t, outcome, outcome === 'FAILED' ? `step${failed.length === 1 ? '' : 's'} failed: ${failed.slice(0, 10).join(', ')}` : null)
    }
  }

  function endRun(t: Turn, status: store.PipelineRunStatus, error: string | null) {
    t.setRun({ status, error, endedAt: new Date() })
    t.ctx.send('pipeline', t.run.pipelineId, { type: 'runEnded', runId: t.run.id })
  }

  /** Stop every running step and end the pending ones (cancel, run timeout). */
  function stopAll(t: Turn, why: string) {
    for (const s of t.steps.values()) {
      if (s.status === 'RUNNING' || s.status === 'PENDING') {
        if (s.status === 'RUNNING') abortTask(t.run.id, s.stepId, why)
        finish(t, s.stepId, 'CANCELLED', { error: s.status === 'RUNNING' ? why : null })
      }
    }
  }

  /** Write and announce what the turn changed. */
  function commit(t: Turn): RunState {
    const changed = [...t.changed].map((id) => t.step(id))
    const topic = `pipeline-run:${t.run.id}`
    for (const s of changed) t.ctx.emit(topic, 'step', { runId: t.run.id, ...stepView(s) })
    if (t.runChanged) {
      if (t.run.status !== t.state.run.status || t.run.attempt !== t.state.run.attempt) {
        const data = { runId: t.run.id, ...runView(t.run) }
        t.ctx.emit(topic, 'status', data)
        t.ctx.emit(`user:${t.run.userId}`, 'pipeline-run.status', data)
      }
    }
    if (t.emptyDone.length) t.ctx.self.tell({ type: 'emptyDone', steps: t.emptyDone })
    // Written by `persist`, in the turn's transaction: a turn that did not use ctx.tx joins a
    // group commit (one flight for the turns of many actors), the common case of a step ending.
    return { ...t.state, run: t.run, steps: t.steps, waiting: t.waiting, written: { steps: changed, run: t.runChanged } }
  }

  return defineActor({
    kind: PIPELINE_RUN_KIND,
    messages: PipelineRunMessage,
    load,
    // What the turn changed (commit, above); the create turn wrote its rows itself.
    async persist(tx, id, state: PipelineRunState) {
      if (!state?.written) return
      await store.saveSteps(tx, id, state.written.steps)
      const r = state.run
      if (state.written.run) await store.updateRun(tx, id, { status: r.status, error: r.error, attempt: r.attempt, startedAt: r.startedAt, endedAt: r.endedAt })
    },
    async handle(ctx, state: PipelineRunState, msg) {
      if (msg.type === 'create') {
        if (state) return { state, reply: runView(state.run) }
        const version = await pipelines.findVersion(ctx.tx, msg.pipelineId, msg.version)
        if (!version) throw new NotFoundError('Pipeline version')
        const definition = version.definition as PipelineDefinition
        const run = await store.insertRun(ctx.tx, {
          id: ctx.id,
          pipelineId: msg.pipelineId,
          userId: msg.ownerId,
          version: msg.version,
          params: msg.params,
          useCache: msg.useCache,
          scheduleId: msg.scheduleId,
          steps: definition.steps.map((s) => ({ stepId: s.id, kind: s.kind })),
        })
        const steps = await store.listSteps(ctx.tx, ctx.id)
        const data = { runId: run.id, ...runView(run) }
        ctx.emit(`pipeline-run:${run.id}`, 'status', data)
        ctx.emit(`user:${run.userId}`, 'pipeline-run.status', data)
        ctx.send('pipeline', run.pipelineId, { type: 'enqueue', runId: run.id })
        return { state: { run, definition, dag: compileDag(definition), steps: new Map(steps.map((s) => [s.stepId, s])), waiting: false }, reply: runView(run) }
      }
      if (!state) {
        if (msg.type === 'cancel' || msg.type === 'retry') throw new NotFoundError('Pipeline run')
        return { state }
      }
      const t: Turn = new TurnOf(ctx, state)
      const run = state.run
      switch (msg.type) {
        case 'start': {
          if (run.status !== 'QUEUED') break
          t.setRun({ status: 'RUNNING', startedAt: run.startedAt ?? new Date(), error: null })
          if (state.definition.timeoutSeconds !== undefined) ctx.schedule(new Date(Date.now() + state.definition.timeoutSeconds * 1000), { type: 'runTimeout', attempt: run.attempt })
          ctx.schedule(new Date(Date.now() + TICK_MS), { type: 'tick', attempt: run.attempt })
          await advance(t, true)
          break
        }
        case 'stepResult': {
          const s = t.steps.get(msg.stepId)
          if (!s || s.status !== 'RUNNING' || s.attempts !== msg.attempt || run.status !== 'RUNNING') break
          if (msg.ok) finish(t, msg.stepId, 'SUCCEEDED', { outputs: msg.outputs ?? {}, error: null })
          else failAttempt(t, state.dag.spec(msg.stepId), msg.stepId, msg.error ?? 'failed')
          await advance(t)
          break
        }
        case 'emptyDone': {
          if (run.status !== 'RUNNING') break
          for (const e of msg.steps) {
            const s = t.steps.get(e.stepId)
            if (s && s.status === 'RUNNING' && s.attempts === e.attempt) finish(t, e.stepId, 'SUCCEEDED', { outputs: {}, error: null })
          }
          await advance(t)
          break
        }
        case 'stepLogs': {
          const s = t.steps.get(msg.stepId)
          if (!s || s.attempts !== msg.attempt) break
          const lines = msg.lines.map((l) => ({ stream: l.stream, line: l.line, at: new Date(l.at) }))
          await store.appendLogs(ctx.tx, run.id, msg.stepId, lines)
          ctx.emit(`pipeline-run:${run.id}`, 'logs', { runId: run.id, stepId: msg.stepId, attempt: msg.attempt, lines: msg.lines })
          break
        }
        case 'retryStep': {
          const s = t.steps.get(msg.stepId)
          if (!s || s.status !== 'PENDING' || s.attempts !== msg.attempt || run.status !== 'RUNNING') break
          await start(t, state.dag.spec(msg.stepId))
          await advance(t)
          break
        }
        case 'stepTimeout': {
          const s = t.steps.get(msg.stepId)
          if (!s || s.status !== 'RUNNING' || s.attempts !== msg.attempt || run.status !== 'RUNNING') break
          const spec = state.dag.spec(msg.stepId)
          const why = `timed out after ${spec.timeoutSeconds} s (timeoutSeconds) and was stopped`
          abortTask(run.id, msg.stepId, why)
          failAttempt(t, spec, msg.stepId, why)
          await advance(t)
          break
        }
        case 'runTimeout': {
          if (run.status !== 'RUNNING' || run.attempt !== msg.attempt) break
          stopAll(t, `the run timed out after ${state.definition.timeoutSeconds} s (timeoutSeconds)`)
          endRun(t, 'TIMED_OUT', `the run timed out after ${state.definition.timeoutSeconds} s (timeoutSeconds)`)
          break
        }
        case 'tick': {
          if (run.status !== 'RUNNING' || run.attempt !== msg.attempt) break
          ctx.schedule(new Date(Date.now() + TICK_MS), { type: 'tick', attempt: run.attempt })
          reattach(t)
          break
        }
        case 'resume': {
          if (run.status === 'RUNNING') reattach(t)
          else if (run.status === 'QUEUED') ctx.send('pipeline', run.pipelineId, { type: 'enqueue', runId: run.id })
          break
        }
        case 'cancel': {
          if (TERMINAL_RUN.includes(run.status)) throw new ConflictError(`The run has already ended (${run.status})`)
          stopAll(t, 'cancelled')
          endRun(t, 'CANCELLED', null)
          break
        }
        case 'retry': {
          if (!TERMINAL_RUN.includes(run.status) || run.status === 'SUCCEEDED') {
            throw new ConflictError(run.status === 'SUCCEEDED' ? 'The run succeeded: there is nothing to retry' : `The run is ${run.status}: retry it once it has ended`)
          }
          for (const s of t.steps.values()) {
            if (s.status !== 'SUCCEEDED') t.set(s.stepId, { status: 'PENDING', attempts: 0, cached: false, cacheKey: null, outputs: null, error: null, externalId: null, startedAt: null, endedAt: null, cpu: null, memoryMb: null })
          }
          t.setRun({ status: 'QUEUED', attempt: run.attempt + 1, error: null, endedAt: null })
          ctx.send('pipeline', run.pipelineId, { type: 'enqueue', runId: run.id })
          break
        }
        default: {
          const never: never = msg
          throw new Error(`unhandled message ${(never as { type: string }).type}`)
        }
      }
      const next = commit(t)
      return { state: next, reply: msg.type === 'cancel' || msg.type === 'retry' ? runView(next.run) : undefined }
    },
  })

  /** RUNNING steps with no task on this node (it took the run over): start them again. */
  function reattach(t: Turn) {
    for (const s of t.steps.values()) {
      if (s.status !== 'RUNNING') continue
      if (tasks.get(`${t.run.id}/${s.stepId}`)?.attempt === s.attempts) continue
      const spec = t.state.dag.spec(s.stepId)
      if (spec.kind === 'empty') {
        t.emptyDone.push({ stepId: s.stepId, attempt: s.attempts })
        continue
      }
      let resolved: Record<string, unknown>
      try {
        resolved = (spec.with === undefined ? {} : resolveTemplates(spec.with, t.scope())) as Record<string, unknown>
      } catch (err) {
        finish(t, s.stepId, 'FAILED', { error: err instanceof Error ? err.message : String(err) })
        continue
      }
      launch(t.ctx, t.run, spec, s.attempts, s.externalId ?? externalIdOf(t.run.id, s.stepId, s.attempts, t.run.attempt), resolved, true)
    }
  }
}
