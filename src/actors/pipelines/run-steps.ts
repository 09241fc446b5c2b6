/**
 * How a `pipeline-run` actor (./run.ts) starts, ends and re-attaches its steps, inside its
 * turns: `when`, templates, the step cache, the compute quota and retries are decided here;
 * the step kinds' work runs as background tasks of this node (`tasks`), which report back to
 * the actor with `stepResult` and `stepLogs`. A task's entry is kept until the turn that
 * handles its result (or a stop) forgets it, so a `tick` in between does not take it for the
 * work of a node that died.
 */
import * as store from '../../store/pipeline-runs.ts'
import * as quotas from '../../store/quotas.ts'
import type { TurnContext } from '../runtime/index.ts'
import { stepCacheKey } from './cache-key.ts'
import { retryDelaySeconds } from './dag.ts'
import type { StepSpec } from './definition.ts'
import { evaluate, parseExpression } from './expression.ts'
import { resolveTemplates } from './references.ts'
import type { PipelineRunMessage } from './run-messages.ts'
import type { Turn as TurnOf } from './run-turn.ts'
import { StepFailure, type StepEnv, type StepKindRuntime, type StepLogLine } from './steps/executor.ts'
import { LogPump } from './steps/log-pump.ts'

type Turn = TurnOf<PipelineRunMessage>

/** Log lines kept per step attempt; past it they are counted in a last notice. */
export const MAX_STEP_LOG_LINES = 10_000

/** A step's id for what its attempt starts: stable per run, step and attempt (a UUID's shape). */
function externalIdOf(runId: string, stepId: string, attempt: number, runAttempt: number): string {
  const h = new Bun.CryptoHasher('sha256').update(`${runId}/${stepId}/${runAttempt}/${attempt}`).digest('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`
}

export interface StepRunnerOptions {
  env: StepEnv
  kinds: Record<string, StepKindRuntime>
  quota: quotas.QuotaLimits
}

export function stepRunner(opts: StepRunnerOptions) {
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

  return { abortTask, finish, failAttempt, start, reattach }
}
