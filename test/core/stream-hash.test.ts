/**
 * SHA-256 on a hash thread (src/core/stream-hash.ts): the digest is the one Bun.CryptoHasher
 * gives for the same bytes, however they are cut — chunks that wrap the ring, chunks larger
 * than the ring, a ring filled exactly — and a thread is handed out again after a digest or
 * an abort.
 */
import { describe, expect, test } from 'bun:test'
import { until } from '../support/until.ts'
import { RING_BYTES, streamHasher, THREAD_MIN_BYTES, type StreamHasher } from '../../src/core/stream-hash.ts'

function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n)
  let x = seed >>> 0 || 1
  for (let i = 0; i < n; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}

const expected = (chunks: Uint8Array[]) => {
  const h = new Bun.CryptoHasher('sha256')
  for (const c of chunks) h.update(c)
  return h.digest('hex')
}

async function feed(hasher: StreamHasher, chunks: Uint8Array[]): Promise<string> {
  for (const c of chunks) {
    const p = hasher.update(c)
    if (p) await p
  }
  return hasher.digest()
}

/** `data` cut at the given sizes, repeating the last. */
function cut(data: Uint8Array, sizes: number[]): Uint8Array[] {
  const out: Uint8Array[] = []
  for (let off = 0, i = 0; off < data.length; i++) {
    const n = sizes[Math.min(i, sizes.length - 1)]!
    out.push(data.subarray(off, off + n))
    off += n
  }
  return out
}

describe('streamHasher', () => {
  test('a large stream is hashed on the thread, with the digest of the same bytes in line', async () => {
    const data = bytes(3 * RING_BYTES + 12_345, 7)
    for (const sizes of [[65_536], [1, 7, 4093, 65_536, 1_000_003], [RING_BYTES], [RING_BYTES - 1, RING_BYTES + 1], [2 * RING_BYTES + 5]]) {
      const chunks = cut(data, sizes)
      const hasher = streamHasher(data.length)
      expect(hasher.where).toBe('thread')
      expect(await feed(hasher, chunks)).toBe(expected(chunks))
    }
  })

  test('chunks that leave the thread asleep (below its wake-up batch) lose no wake-up, before or after the digest', async () => {
    // The thread sleeps once the ring is empty and is woken only when a batch (1 MiB) is waiting
    // or the job ends: fed 1,000-byte chunks with a turn of the event loop after each, it sleeps
    // with bytes pending again and again. A lost wake-up would leave the digest waiting forever.
    const data = bytes(THREAD_MIN_BYTES + 777, 5)
    for (const size of [1000, 1024 * 1024 - 1, 1024 * 1024 + 1]) {
      const hasher = streamHasher(data.length)
      expect(hasher.where).toBe('thread')
      const chunks = cut(data, [size])
      for (const c of chunks) {
        const p = hasher.update(c)
        if (p) await p
        await new Promise((resolve) => setImmediate(resolve))
      }
      expect(await hasher.digest()).toBe(expected(chunks))
    }
    // Less than one batch in all: only the digest wakes the thread.
    const small = streamHasher(THREAD_MIN_BYTES)
    expect(await feed(small, [data.subarray(0, 100), data.subarray(100, 5000)])).toBe(expected([data.subarray(0, 5000)]))
  })

  test('an empty stream on the thread', async () => {
    const hasher = streamHasher(THREAD_MIN_BYTES)
    expect(hasher.where).toBe('thread')
    expect(await hasher.digest()).toBe(expected([]))
  })

  test('a small body, or one of unknown length, is hashed in line', async () => {
    const data = bytes(1000, 3)
    for (const declared of [THREAD_MIN_BYTES - 1, undefined]) {
      const hasher = streamHasher(declared)
      expect(hasher.where).toBe('inline')
      expect(await feed(hasher, [data])).toBe(expected([data]))
    }
  })

  test('while the threads are busy another stream is hashed in line; an abort frees its thread', async () => {
    const data = bytes(RING_BYTES * 2, 11)
    const held: StreamHasher[] = []
    // Take every thread (one per core but the event loop's own).
    for (;;) {
      const h = streamHasher(data.length)
      if (h.where === 'inline') {
        expect(await feed(h, [data])).toBe(expected([data]))
        break
      }
      held.push(h)
      expect(held.length).toBeLessThanOrEqual(64)
    }
    expect(held.length).toBeGreaterThanOrEqual(1)
    // Half-fed, then given up: the thread comes back and hashes a fresh stream correctly.
    const first = held[0]!
    const p = first.update(data.subarray(0, RING_BYTES + 99))
    first.abort()
    // A write still waiting for room in the ring gives up too.
    if (p) expect(await p.then(() => 'written', (e: Error) => e.message)).toMatch(/^(written|hash aborted)$/)
    for (const h of held.slice(1)) expect(await h.digest()).toBe(expected([]))
    // The thread is free once its abort has been answered.
    const again = await until(() => {
      const h = streamHasher(data.length)
      return h.where === 'thread' ? h : undefined
    }, 'the aborted thread to be handed out again')
    expect(await feed(again, [data.subarray(5)])).toBe(expected([data.subarray(5)]))
    expect(() => again.update(data)).toThrow('hasher already finished')
  })
})
