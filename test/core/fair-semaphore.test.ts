import { describe, expect, test } from 'bun:test'
import { FairSemaphore } from '../../src/core/fair-semaphore.ts'

/** Start a job for `key` that holds its slot until `finish` is called; records its start order. */
function job(s: FairSemaphore, key: string, started: string[], label = key) {
  const done = Promise.withResolvers<void>()
  const run = s.run(key, async () => {
    started.push(label)
    await done.promise
  })
  return { finish: () => done.resolve(), run }
}

const tick = () => new Promise((r) => setImmediate(r))

describe('FairSemaphore', () => {
  test('a light user waits behind one slot turnover, not behind a heavy user\'s backlog', async () => {
    const s = new FairSemaphore(2, 2)
    const started: string[] = []
    const heavy = Array.from({ length: 8 }, (_, i) => job(s, 'heavy', started, `h${i}`))
    await tick()
    expect(started).toEqual(['h0', 'h1'])
    const light = job(s, 'light', started, 'l0')
    await tick()
    expect(started).toEqual(['h0', 'h1']) // no free slot yet
    heavy[0]!.finish()
    await heavy[0]!.run
    await tick()
    // The freed slot goes to the light user, whose turn it is, not to h2.
    expect(started).toEqual(['h0', 'h1', 'l0'])
    light.finish()
    for (const h of heavy) h.finish()
    await Promise.all([light.run, ...heavy.map((h) => h.run)])
    expect(started.slice(3)).toEqual(['h2', 'h3', 'h4', 'h5', 'h6', 'h7'])
    expect([s.active, s.waiting]).toEqual([0, 0])
  })

  test('a key never holds more than perKey slots, even with slots free', async () => {
    const s = new FairSemaphore(4, 1)
    const started: string[] = []
    const a = [job(s, 'a', started, 'a0'), job(s, 'a', started, 'a1')]
    const b = job(s, 'b', started, 'b0')
    await tick()
    expect(started).toEqual(['a0', 'b0'])
    expect([s.active, s.waiting]).toEqual([2, 1])
    a[0]!.finish()
    await a[0]!.run
    await tick()
    expect(started).toEqual(['a0', 'b0', 'a1'])
    a[1]!.finish()
    b.finish()
    await Promise.all([a[1]!.run, b.run])
  })

  test('a waiter whose signal aborts leaves the queue and never takes a slot', async () => {
    const s = new FairSemaphore(1)
    const started: string[] = []
    const first = job(s, 'a', started, 'first')
    const ac = new AbortController()
    const waiting = s.run('b', async () => void started.push('cancelled'), ac.signal)
    const after = job(s, 'c', started, 'after')
    await tick()
    ac.abort(new Error('gave up'))
    expect(await waiting.catch((e: Error) => e.message)).toBe('gave up')
    first.finish()
    await first.run
    await tick()
    expect(started).toEqual(['first', 'after'])
    after.finish()
    await after.run
    expect([s.active, s.waiting]).toEqual([0, 0])
  })

  test('limits are checked once', () => {
    expect(() => new FairSemaphore(0)).toThrow('size must be an integer >= 1')
    expect(() => new FairSemaphore(2, 0)).toThrow('perKey must be an integer >= 1')
    expect(() => new FairSemaphore(2).release('nobody')).toThrow('release without acquire for nobody')
  })
})
