/**
 * The scheduling rules of a pipeline run, pure: which pending steps may start, which are
 * skipped and which are upstream-failed, given every step's status — Airflow's trigger rules:
 *
 *   all_success (default)  ready when every upstream SUCCEEDED; UPSTREAM_FAILED as soon as one
 *                          is FAILED, UPSTREAM_FAILED or CANCELLED; else SKIPPED as soon as one
 *                          is SKIPPED (failure wins over skip, as in Airflow)
 *   all_done               ready when every upstream is terminal, whatever its outcome
 *   one_failed             ready as soon as one upstream is FAILED or UPSTREAM_FAILED; SKIPPED
 *                          when every upstream is terminal and none failed (CANCELLED is not a
 *                          failure here)
 * A step with no upstream is ready at once, whatever its rule (as Airflow). `when` is not
 * evaluated here: the run actor evaluates it when it starts a ready step (false → SKIPPED).
 *
 * `compileDag` indexes the definition once (downstream lists, a topological order, the
 * upstream closure on demand), so a decision after one step changed costs the in-degrees of
 * its downstream steps (`nextDecisions(dag, states, [changedId])`), not a pass over the run.
 * Decisions cascade within one call: a step found SKIPPED or UPSTREAM_FAILED is terminal, so
 * its own downstream steps are decided in the same call.
 */
import type { RetryPolicy, StepSpec, TriggerRule } from './definition.ts'

export type StepStatus = 'PENDING' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'SKIPPED' | 'CANCELLED' | 'UPSTREAM_FAILED'

const TERMINAL: ReadonlySet<StepStatus> = new Set(['SUCCEEDED', 'FAILED', 'SKIPPED', 'CANCELLED', 'UPSTREAM_FAILED'])

export function isTerminal(status: StepStatus): boolean {
  return TERMINAL.has(status)
}

/** Every step's status: a map id → status, or a record id → { status } (a missing step is PENDING). */
export type StepStates = ReadonlyMap<string, StepStatus> | Readonly<Record<string, { readonly status: StepStatus } | undefined>>

export interface Decisions {
  /** PENDING steps whose trigger rule holds, in definition order: start them (evaluate `when` first). */
  ready: string[]
  /** PENDING steps that become SKIPPED. */
  skipped: string[]
  /** PENDING steps that become UPSTREAM_FAILED. */
  upstreamFailed: string[]
}

export interface CompiledDag {
  /** Step ids in definition order. */
  readonly ids: readonly string[]
  /** Step ids in a topological order (upstream first; roots in definition order, then breadth-first). */
  readonly order: readonly string[]
  has(id: string): boolean
  /** The step's index in the definition; throws for an unknown id. */
  position(id: string): number
  /** The step's spec; throws for an unknown id. */
  spec(id: string): StepSpec
  /** Direct upstream (its `needs`) and direct downstream steps. */
  upstream(id: string): readonly string[]
  downstream(id: string): readonly string[]
  /** True when `ancestor` runs before `id` through `needs`, directly or transitively. */
  isUpstream(ancestor: string, id: string): boolean
}

/**
 * Index a definition whose ids are unique and whose `needs` name known steps and form no
 * cycle (./validate.ts checks that); throws an Error otherwise. O(steps + needs).
 */
export function compileDag(definition: { readonly steps: readonly StepSpec[] }): CompiledDag {
  const specs = definition.steps
  const n = specs.length
  const index = new Map<string, number>()
  specs.forEach((s, i) => {
    if (index.has(s.id)) throw new Error(`duplicate step id ${s.id}`)
    index.set(s.id, i)
  })
  const idx = (id: string): number => {
    const i = index.get(id)
    if (i === undefined) throw new Error(`unknown step ${id}`)
    return i
  }
  const up: number[][] = specs.map((s) => (s.needs ?? []).map(idx))
  const down: string[][] = specs.map(() => [])
  const indegree = new Int32Array(n)
  up.forEach((us, i) => {
    indegree[i] = us.length
    for (const u of us) down[u]!.push(specs[i]!.id)
  })
  // Kahn's algorithm with a FIFO queue, fed with the roots in definition order.
  const orderIdx: number[] = []
  for (let i = 0; i < n; i++) if (indegree[i] === 0) orderIdx.push(i)
  for (let head = 0; head < orderIdx.length; head++) {
    for (const d of down[orderIdx[head]!]!) {
      const j = index.get(d)!
      if (--indegree[j]! === 0) orderIdx.push(j)
    }
  }
  if (orderIdx.length !== n) throw new Error('the steps form a cycle')
  const ups = up.map((us) => us.map((u) => specs[u]!.id))

  // Upstream closure as bit rows, built on the first question (only validation asks).
  const words = Math.ceil(n / 32)
  let closure: Uint32Array | null = null
  const buildClosure = (): Uint32Array => {
    const c = new Uint32Array(n * words)
    for (const i of orderIdx) {
      const row = i * words
      for (const u of up[i]!) {
        const from = u * words
        for (let w = 0; w < words; w++) c[row + w]! |= c[from + w]!
        c[row + (u >>> 5)]! |= 1 << (u & 31)
      }
    }
    return c
  }

  return {
    ids: specs.map((s) => s.id),
    order: orderIdx.map((i) => specs[i]!.id),
    has: (id) => index.has(id),
    position: idx,
    spec: (id) => specs[idx(id)]!,
    upstream: (id) => ups[idx(id)]!,
    downstream: (id) => down[idx(id)]!,
    isUpstream(ancestor, id) {
      const a = index.get(ancestor)
      const i = index.get(id)
      if (a === undefined || i === undefined) return false
      closure ??= buildClosure()
      return (closure[i * words + (a >>> 5)]! & (1 << (a & 31))) !== 0
    },
  }
}

type Verdict = 'ready' | 'skipped' | 'upstreamFailed' | 'wait'

function verdict(rule: TriggerRule, upstream: readonly string[], statusOf: (id: string) => StepStatus): Verdict {
  if (upstream.length === 0) return 'ready'
  let done = 0
  let failed = 0
  let cancelled = 0
  let skipped = 0
  let succeeded = 0
  for (const u of upstream) {
    const s = statusOf(u)
    if (!TERMINAL.has(s)) continue
    done++
    if (s === 'FAILED' || s === 'UPSTREAM_FAILED') failed++
    else if (s === 'CANCELLED') cancelled++
    else if (s === 'SKIPPED') skipped++
    else succeeded++
  }
  const all = done === upstream.length
  switch (rule) {
    case 'all_success':
      return failed + cancelled > 0 ? 'upstreamFailed' : skipped > 0 ? 'skipped' : succeeded === upstream.length ? 'ready' : 'wait'
    case 'all_done':
      return all ? 'ready' : 'wait'
    case 'one_failed':
      return failed > 0 ? 'ready' : all ? 'skipped' : 'wait'
    default: {
      const never: never = rule
      throw new Error(`unknown trigger rule ${String(never)}`)
    }
  }
}

const reader = (states: StepStates) =>
  states instanceof Map ? (id: string): StepStatus => states.get(id) ?? 'PENDING' : (id: string): StepStatus => (states as Record<string, { status: StepStatus } | undefined>)[id]?.status ?? 'PENDING'

/**
 * Decide the PENDING steps. With `changed` (the steps whose status changed since the last
 * call), only those and their downstream steps are looked at; without it, every step (use
 * that for the first call and after loading a run). Steps already RUNNING or terminal are
 * never in the result; a step waiting for a retry should be given as RUNNING.
 */
export function nextDecisions(dag: CompiledDag, states: StepStates, changed?: Iterable<string>): Decisions {
  const read = reader(states)
  const decided = new Map<string, StepStatus>()
  const statusOf = (id: string) => decided.get(id) ?? read(id)
  const ready = new Set<string>()
  const out: Decisions = { ready: [], skipped: [], upstreamFailed: [] }
  // A step is queued at most once at a time; it is queued again when an upstream is decided.
  const queue: string[] = []
  const queued = new Set<string>()
  const enqueue = (ids: readonly string[]) => {
    for (const id of ids) {
      if (queued.has(id)) continue
      queued.add(id)
      queue.push(id)
    }
  }
  if (changed === undefined) enqueue(dag.order)
  else {
    for (const id of changed) {
      if (!dag.has(id)) continue
      enqueue([id])
      enqueue(dag.downstream(id))
    }
  }
  for (let head = 0; head < queue.length; head++) {
    const id = queue[head]!
    queued.delete(id)
    if (ready.has(id) || statusOf(id) !== 'PENDING') continue
    const v = verdict(dag.spec(id).trigger ?? 'all_success', dag.upstream(id), statusOf)
    if (v === 'wait') continue
    if (v === 'ready') {
      ready.add(id)
      continue
    }
    decided.set(id, v === 'skipped' ? 'SKIPPED' : 'UPSTREAM_FAILED')
    out[v].push(id)
    enqueue(dag.downstream(id))
  }
  out.ready = [...ready].sort((a, b) => dag.position(a) - dag.position(b))
  return out
}

/** Exponential waits are capped at this without `maxDelaySeconds` (Airflow's max_task_retry_delay default). */
const DEFAULT_MAX_DELAY_SECONDS = 86_400

/**
 * Seconds to wait before the next attempt, after `attempt` (1, 2, …) failed attempts:
 * `delaySeconds` (default 0), doubled for each attempt after the first with `exponential`,
 * never above `maxDelaySeconds` (default 86400). No jitter: the waits are predictable.
 */
export function retryDelaySeconds(policy: RetryPolicy, attempt: number): number {
  const base = policy.delaySeconds ?? 0
  const cap = policy.maxDelaySeconds ?? DEFAULT_MAX_DELAY_SECONDS
  const delay = policy.backoff === 'exponential' ? base * 2 ** Math.min(Math.max(attempt, 1) - 1, 60) : base
  return Math.min(delay, cap)
}

/**
 * The outcome of a run whose steps have all ended: FAILED when one is FAILED, UPSTREAM_FAILED
 * or CANCELLED, else SUCCEEDED (SKIPPED counts as success). Throws while a step has not ended.
 */
export function runOutcome(states: Iterable<StepStatus> | StepStates): 'SUCCEEDED' | 'FAILED' {
  const all: Iterable<StepStatus> =
    states instanceof Map ? states.values() : Symbol.iterator in states ? (states as Iterable<StepStatus>) : Object.values(states as Record<string, { status: StepStatus }>).map((s) => s.status)
  let failed = false
  for (const s of all) {
    if (!TERMINAL.has(s)) throw new Error(`runOutcome: a step is still ${s}`)
    if (s === 'FAILED' || s === 'UPSTREAM_FAILED' || s === 'CANCELLED') failed = true
  }
  return failed ? 'FAILED' : 'SUCCEEDED'
}
