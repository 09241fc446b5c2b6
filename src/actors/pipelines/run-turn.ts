/**
 * One turn of a `pipeline-run` actor (src/actors/pipelines/run.ts): a working copy of the run
 * and its steps that the turn changes, with what the DAG needs kept up to date as it goes
 * (each step's status for the trigger rules, how many steps run, how many have not ended),
 * so deciding after one step ended costs its downstream, not the whole run. The actor writes
 * and announces the changed steps together at the end of the turn.
 */
import type * as store from '../../store/pipeline-runs.ts'
import type { TurnContext } from '../runtime/index.ts'
import type { CompiledDag } from './dag.ts'
import type { PipelineDefinition } from './definition.ts'
import type { Scope } from './expression.ts'

export interface RunState {
  run: store.PipelineRunRow
  definition: PipelineDefinition
  dag: CompiledDag
  steps: ReadonlyMap<string, store.StepRow>
  /** Ready steps were left waiting for a free slot (PIPELINE_STEP_CONCURRENCY): look at every step next time. */
  waiting: boolean
  /** What the last turn changed, for `persist` to write (absent after a load or a create). */
  written?: { steps: store.StepRow[]; run: boolean }
}

const TERMINAL_STEP: ReadonlySet<store.StepStatus> = new Set(['SUCCEEDED', 'FAILED', 'SKIPPED', 'CANCELLED', 'UPSTREAM_FAILED'])

export function runView(run: store.PipelineRunRow) {
  return { id: run.id, pipelineId: run.pipelineId, version: run.version, status: run.status, attempt: run.attempt, error: run.error, startedAt: run.startedAt, endedAt: run.endedAt }
}

export function stepView(s: store.StepRow) {
  return { id: s.stepId, kind: s.kind, status: s.status, attempts: s.attempts, cached: s.cached, startedAt: s.startedAt, endedAt: s.endedAt, outputs: s.outputs, error: s.error }
}

/** A step's status as the trigger rules see it: one waiting for its retry is still under way. */
const decisionStatus = (s: store.StepRow): store.StepStatus => (s.status === 'PENDING' && s.attempts > 0 ? 'RUNNING' : s.status)

export class Turn<M> {
  readonly steps: Map<string, store.StepRow>
  /** Each step's status for the trigger rules (see decisionStatus). */
  readonly statuses: Map<string, store.StepStatus>
  /** Steps changed in this turn (written and announced at its end). */
  readonly changed = new Set<string>()
  /** Steps changed since the DAG last decided (it looks at them and their downstream). */
  readonly undecided = new Set<string>()
  run: store.PipelineRunRow
  runChanged = false
  /** See RunState.waiting. */
  waiting: boolean
  /** Steps that reached a terminal status in this turn (the DAG advances while it grows). */
  ended = 0
  /** RUNNING steps other than `empty` (bounded by PIPELINE_STEP_CONCURRENCY). */
  running = 0
  /** Steps not in a terminal status. */
  open = 0
  /** Compute claimed by container steps started in this turn (not written until it commits). */
  claimed = { running: 0, cpu: 0, memoryMb: 0 }
  #scope: Scope | undefined
  /** `empty` steps started in this turn: they end in the next one. */
  readonly emptyDone: Array<{ stepId: string; attempt: number }> = []

  constructor(
    readonly ctx: TurnContext<M>,
    readonly state: RunState,
  ) {
    this.steps = new Map(state.steps)
    this.statuses = new Map()
    for (const [id, s] of this.steps) {
      this.statuses.set(id, decisionStatus(s))
      if (s.status === 'RUNNING' && s.kind !== 'empty') this.running++
      if (!TERMINAL_STEP.has(s.status)) this.open++
    }
    this.run = state.run
    this.waiting = state.waiting
  }

  step(id: string): store.StepRow {
    return this.steps.get(id)!
  }

  set(id: string, patch: Partial<store.StepRow>): store.StepRow {
    const prev = this.step(id)
    const next = { ...prev, ...patch }
    this.steps.set(id, next)
    this.statuses.set(id, decisionStatus(next))
    this.changed.add(id)
    this.undecided.add(id)
    if (next.kind !== 'empty') this.running += (next.status === 'RUNNING' ? 1 : 0) - (prev.status === 'RUNNING' ? 1 : 0)
    const wasOpen = !TERMINAL_STEP.has(prev.status)
    const isOpen = !TERMINAL_STEP.has(next.status)
    if (wasOpen !== isOpen) {
      this.open += isOpen ? 1 : -1
      if (!isOpen) this.ended++
    }
    if (patch.outputs !== undefined) this.#scope = undefined
    return next
  }

  /** What `when` and `${{ }}` references see: the run's params and the outputs of steps so far. */
  scope(): Scope {
    if (!this.#scope) {
      const steps: Record<string, { outputs: Record<string, unknown> }> = {}
      for (const [id, s] of this.steps) if (s.outputs) steps[id] = { outputs: s.outputs }
      this.#scope = { params: this.run.params, steps }
    }
    return this.#scope
  }

  setRun(patch: Partial<store.PipelineRunRow>): void {
    this.run = { ...this.run, ...patch }
    this.runChanged = true
  }
}
