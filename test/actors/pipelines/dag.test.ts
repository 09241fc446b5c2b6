/**
 * The scheduling rules (src/actors/pipelines/dag.ts): the trigger-rule table, cascades through
 * chains, diamonds and fan-outs of 1,000, incremental decisions, retry delays, run outcome.
 */
import { describe, expect, test } from 'bun:test'
import { compileDag, isTerminal, nextDecisions, retryDelaySeconds, runOutcome, type StepStatus } from '../../../src/actors/pipelines/dag.ts'
import type { StepSpec, TriggerRule } from '../../../src/actors/pipelines/definition.ts'

const step = (id: string, needs: string[] = [], trigger?: TriggerRule): StepSpec => ({ id, kind: 'empty', ...(needs.length ? { needs } : {}), ...(trigger ? { trigger } : {}) })
const statuses = (ids: readonly string[], set: Record<string, StepStatus> = {}) => new Map(ids.map((id) => [id, set[id] ?? 'PENDING']))

describe('compileDag', () => {
  test('order, upstream, downstream, closure', () => {
    const dag = compileDag({ steps: [step('d', ['b', 'c']), step('b', ['a']), step('c', ['a']), step('a'), step('lone')] })
    expect(dag.ids).toEqual(['d', 'b', 'c', 'a', 'lone'])
    expect(dag.order).toEqual(['a', 'lone', 'b', 'c', 'd'])
    expect(dag.upstream('d')).toEqual(['b', 'c'])
    expect(dag.downstream('a')).toEqual(['b', 'c'])
    expect(dag.spec('c').needs).toEqual(['a'])
    expect(dag.position('a')).toBe(3)
    expect(dag.isUpstream('a', 'd')).toBe(true)
    expect(dag.isUpstream('b', 'd')).toBe(true)
    expect(dag.isUpstream('d', 'a')).toBe(false)
    expect(dag.isUpstream('b', 'c')).toBe(false)
    expect(dag.isUpstream('a', 'a')).toBe(false)
    expect(dag.isUpstream('lone', 'd')).toBe(false)
    expect(dag.isUpstream('ghost', 'd')).toBe(false)
    expect(() => dag.spec('ghost')).toThrow(/unknown step ghost/)
  })

  test('refuses what validation refuses', () => {
    expect(() => compileDag({ steps: [step('a', ['b']), step('b', ['a'])] })).toThrow(/cycle/)
    expect(() => compileDag({ steps: [step('a', ['x'])] })).toThrow(/unknown step x/)
    expect(() => compileDag({ steps: [step('a'), step('a')] })).toThrow(/duplicate/)
  })

  test('closure over 1,000 steps (bit rows past 32 bits)', () => {
    const steps = Array.from({ length: 1000 }, (_, i) => step(`s${i}`, i ? [`s${i - 1}`] : []))
    const dag = compileDag({ steps })
    expect(dag.isUpstream('s0', 's999')).toBe(true)
    expect(dag.isUpstream('s998', 's999')).toBe(true)
    expect(dag.isUpstream('s999', 's0')).toBe(false)
    expect(dag.isUpstream('s33', 's32')).toBe(false)
    expect(dag.isUpstream('s32', 's33')).toBe(true)
  })
})

/** One PENDING step `x` after upstream steps in the given statuses: what it becomes. */
function decide(trigger: TriggerRule, upstream: StepStatus[]): 'ready' | 'skipped' | 'upstreamFailed' | 'wait' {
  const ups = upstream.map((_, i) => `u${i}`)
  const dag = compileDag({ steps: [...ups.map((id) => step(id)), step('x', ups, trigger)] })
  const set = Object.fromEntries(ups.map((id, i) => [id, upstream[i]!]))
  const d = nextDecisions(dag, statuses(dag.ids, set), ups)
  return d.ready.includes('x') ? 'ready' : d.skipped.includes('x') ? 'skipped' : d.upstreamFailed.includes('x') ? 'upstreamFailed' : 'wait'
}

describe('trigger rules (Airflow semantics)', () => {
  test.each<[TriggerRule, StepStatus[], ReturnType<typeof decide>]>([
    ['all_success', ['SUCCEEDED', 'SUCCEEDED'], 'ready'],
    ['all_success', ['SUCCEEDED', 'RUNNING'], 'wait'],
    ['all_success', ['SUCCEEDED', 'PENDING'], 'wait'],
    ['all_success', ['FAILED', 'RUNNING'], 'upstreamFailed'],
    ['all_success', ['UPSTREAM_FAILED', 'SUCCEEDED'], 'upstreamFailed'],
    ['all_success', ['CANCELLED', 'SUCCEEDED'], 'upstreamFailed'],
    ['all_success', ['SKIPPED', 'RUNNING'], 'skipped'],
    ['all_success', ['SKIPPED', 'FAILED'], 'upstreamFailed'],
    ['all_done', ['SUCCEEDED', 'FAILED', 'SKIPPED', 'CANCELLED', 'UPSTREAM_FAILED'], 'ready'],
    ['all_done', ['SKIPPED', 'SKIPPED'], 'ready'],
    ['all_done', ['FAILED', 'RUNNING'], 'wait'],
    ['one_failed', ['FAILED', 'RUNNING'], 'ready'],
    ['one_failed', ['UPSTREAM_FAILED', 'PENDING'], 'ready'],
    ['one_failed', ['SUCCEEDED', 'SKIPPED'], 'skipped'],
    ['one_failed', ['SUCCEEDED', 'CANCELLED'], 'skipped'],
    ['one_failed', ['SUCCEEDED', 'RUNNING'], 'wait'],
  ])('%s after %p → %s', (trigger, upstream, expected) => {
    expect(decide(trigger, upstream)).toBe(expected)
  })

  test('a step without upstream is ready whatever its rule', () => {
    for (const trigger of ['all_success', 'all_done', 'one_failed'] as const) {
      const dag = compileDag({ steps: [step('x', [], trigger)] })
      expect(nextDecisions(dag, statuses(dag.ids))).toEqual({ ready: ['x'], skipped: [], upstreamFailed: [] })
    }
  })

  test('steps not PENDING are never decided; states may be a record of { status }', () => {
    const dag = compileDag({ steps: [step('a'), step('b', ['a']), step('c', ['a'])] })
    expect(nextDecisions(dag, { a: { status: 'SUCCEEDED' }, b: { status: 'RUNNING' }, c: { status: 'PENDING' } })).toEqual({ ready: ['c'], skipped: [], upstreamFailed: [] })
    expect(nextDecisions(dag, { a: { status: 'RUNNING' } })).toEqual({ ready: [], skipped: [], upstreamFailed: [] })
  })
})

describe('shapes', () => {
  test('a diamond: a → (b, c) → d', () => {
    const dag = compileDag({ steps: [step('a'), step('b', ['a']), step('c', ['a']), step('d', ['b', 'c'])] })
    const s = statuses(dag.ids)
    expect(nextDecisions(dag, s).ready).toEqual(['a'])
    s.set('a', 'SUCCEEDED')
    expect(nextDecisions(dag, s, ['a']).ready).toEqual(['b', 'c'])
    s.set('b', 'SUCCEEDED').set('c', 'RUNNING')
    expect(nextDecisions(dag, s, ['b']).ready).toEqual([])
    s.set('c', 'SUCCEEDED')
    expect(nextDecisions(dag, s, ['c'])).toEqual({ ready: ['d'], skipped: [], upstreamFailed: [] })
    // `when` false on b (the actor marks it SKIPPED): d is skipped under all_success, as in Airflow.
    s.set('b', 'SKIPPED').set('d', 'PENDING')
    expect(nextDecisions(dag, s, ['b'])).toEqual({ ready: [], skipped: ['d'], upstreamFailed: [] })
  })

  test('a failure cascades down a chain in one call; one_failed and all_done handlers run', () => {
    const dag = compileDag({
      steps: [step('a'), step('b', ['a']), step('c', ['b']), step('d', ['c']), step('alert', ['c'], 'one_failed'), step('cleanup', ['d'], 'all_done'), step('after-alert', ['alert'])],
    })
    const s = statuses(dag.ids, { a: 'FAILED' })
    expect(nextDecisions(dag, s, ['a'])).toEqual({ ready: ['alert', 'cleanup'], skipped: [], upstreamFailed: ['b', 'c', 'd'] })
  })

  test('a skip cascades under all_success and stops at all_done; one_failed with no failure is skipped', () => {
    const dag = compileDag({ steps: [step('a'), step('b', ['a']), step('c', ['b']), step('done', ['c'], 'all_done'), step('onfail', ['c'], 'one_failed')] })
    expect(nextDecisions(dag, statuses(dag.ids, { a: 'SKIPPED' }))).toEqual({ ready: ['done'], skipped: ['b', 'c', 'onfail'], upstreamFailed: [] })
  })

  test('a chain of 1,000: one step ready after each, decided from the changed step only', () => {
    const steps = Array.from({ length: 1000 }, (_, i) => step(`s${i}`, i ? [`s${i - 1}`] : []))
    const dag = compileDag({ steps })
    const s = statuses(dag.ids)
    expect(nextDecisions(dag, s).ready).toEqual(['s0'])
    for (let i = 0; i < 999; i++) {
      s.set(`s${i}`, 'SUCCEEDED')
      expect(nextDecisions(dag, s, [`s${i}`]).ready).toEqual([`s${i + 1}`])
    }
    s.set('s999', 'SUCCEEDED')
    expect(nextDecisions(dag, s, ['s999'])).toEqual({ ready: [], skipped: [], upstreamFailed: [] })
    expect(runOutcome(s)).toBe('SUCCEEDED')
  })

  test('a chain of 1,000 whose first step fails: all 999 upstream-failed in one call', () => {
    const steps = Array.from({ length: 1000 }, (_, i) => step(`s${i}`, i ? [`s${i - 1}`] : []))
    const dag = compileDag({ steps })
    const d = nextDecisions(dag, statuses(dag.ids, { s0: 'FAILED' }), ['s0'])
    expect(d.upstreamFailed).toHaveLength(999)
    expect(d.upstreamFailed[998]).toBe('s999')
  })

  test('a fan-out of 1,000 under one join: all start together, the join waits for the last', () => {
    const fan = Array.from({ length: 998 }, (_, i) => step(`f${i}`, ['root']))
    const dag = compileDag({ steps: [step('root'), ...fan, step('join', fan.map((f) => f.id))] })
    const s = statuses(dag.ids, { root: 'SUCCEEDED' })
    expect(nextDecisions(dag, s, ['root']).ready).toEqual(fan.map((f) => f.id))
    for (const f of fan) s.set(f.id, 'RUNNING')
    for (const [i, f] of fan.entries()) {
      s.set(f.id, 'SUCCEEDED')
      expect(nextDecisions(dag, s, [f.id]).ready).toEqual(i === fan.length - 1 ? ['join'] : [])
    }
    // Several changes at once are one call too.
    const again = statuses(dag.ids, Object.fromEntries([['root', 'SUCCEEDED'], ...fan.map((f) => [f.id, 'SUCCEEDED'])]))
    expect(nextDecisions(dag, again, fan.map((f) => f.id))).toEqual({ ready: ['join'], skipped: [], upstreamFailed: [] })
  })
})

describe('retryDelaySeconds', () => {
  test('fixed, exponential (doubling), capped', () => {
    expect([1, 2, 3].map((a) => retryDelaySeconds({ count: 3, delaySeconds: 5 }, a))).toEqual([5, 5, 5])
    expect([1, 2, 3, 4].map((a) => retryDelaySeconds({ count: 4, delaySeconds: 2, backoff: 'exponential' }, a))).toEqual([2, 4, 8, 16])
    expect([1, 2, 3, 4, 5].map((a) => retryDelaySeconds({ count: 5, delaySeconds: 1, backoff: 'exponential', maxDelaySeconds: 6 }, a))).toEqual([1, 2, 4, 6, 6])
    expect(retryDelaySeconds({ count: 1 }, 1)).toBe(0)
    expect(retryDelaySeconds({ count: 20, delaySeconds: 86_400, backoff: 'exponential' }, 20)).toBe(86_400)
    expect(retryDelaySeconds({ count: 2, delaySeconds: 10, maxDelaySeconds: 3 }, 1)).toBe(3)
    expect(retryDelaySeconds({ count: 2, delaySeconds: 0.25, backoff: 'exponential' }, 3)).toBe(1)
  })
})

describe('runOutcome', () => {
  test('FAILED with a failed, upstream-failed or cancelled step; SKIPPED counts as success', () => {
    expect(runOutcome(['SUCCEEDED', 'SKIPPED'])).toBe('SUCCEEDED')
    expect(runOutcome([])).toBe('SUCCEEDED')
    expect(runOutcome(['SUCCEEDED', 'FAILED'])).toBe('FAILED')
    expect(runOutcome(['SKIPPED', 'UPSTREAM_FAILED'])).toBe('FAILED')
    expect(runOutcome(['CANCELLED'])).toBe('FAILED')
    expect(runOutcome(new Map<string, StepStatus>([['a', 'SUCCEEDED']]))).toBe('SUCCEEDED')
    expect(runOutcome({ a: { status: 'SUCCEEDED' }, b: { status: 'FAILED' } })).toBe('FAILED')
  })

  test('refuses while a step has not ended', () => {
    expect(() => runOutcome(['SUCCEEDED', 'RUNNING'])).toThrow(/still RUNNING/)
    expect(isTerminal('PENDING')).toBe(false)
    expect(isTerminal('UPSTREAM_FAILED')).toBe(true)
  })
})
