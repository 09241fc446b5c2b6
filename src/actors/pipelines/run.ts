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
import { ConflictError, NotFoundError } from '../../core/errors.ts'
import * as store from '../../store/pipeline-runs.ts'
import * as pipelines from '../../store/pipelines.ts'
import type * as quotas from '../../store/quotas.ts'
import type { Db } from '../../store/db.ts'
import { defineActor } from '../runtime/index.ts'
import { compileDag, nextDecisions, runOutcome } from './dag.ts'
import type { PipelineDefinition } from './definition.ts'
import { PipelineRunMessage } from './run-messages.ts'
import { stepRunner } from './run-steps.ts'
import { runView, stepView, Turn as TurnOf, type RunState } from './run-turn.ts'
import type { StepEnv, StepKindRuntime } from './steps/executor.ts'

export { PipelineRunMessage } from './run-messages.ts'
export { MAX_STEP_LOG_LINES } from './run-steps.ts'

type Turn = TurnOf<PipelineRunMessage>

export const PIPELINE_RUN_KIND = 'pipeline-run'
const TICK_MS = 2_000




export type PipelineRunState = RunState | null

export interface PipelineRunOptions {
  env: StepEnv
  kinds: Record<string, StepKindRuntime>
  /** PIPELINE_STEP_CONCURRENCY: steps of one run running at once (`empty` steps aside). */
  stepConcurrency: number
  quota: quotas.QuotaLimits
}

const TERMINAL_RUN: readonly store.PipelineRunStatus[] = ['SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMED_OUT']

export function pipelineRunActor(opts: PipelineRunOptions) {
  const steps = stepRunner(opts)
  const { abortTask, finish, failAttempt, start, reattach } = steps

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

}
