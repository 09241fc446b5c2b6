/**
 * SHA-256 of a byte stream, computed on another thread as the bytes pass.
 *
 * Hashing is the largest single cost of receiving an upload (about 1.1 GB/s here, so 40 ms of
 * a 48 MB file, against about 40 ms to receive and write it): on the event loop it doubles
 * the time an upload takes. A hash thread takes it off: the producer copies each chunk into
 * a ring of shared memory (a memcpy, ~10 GB/s) and the thread hashes behind it.
 *
 * The ring's control words: FILLED, the bytes written and not yet hashed (the producer adds,
 * the thread subtracts; the producer waits on it asynchronously when the ring is full);
 * STATE, the job's state; SEQ, bumped by the producer on every change, which is what the
 * thread sleeps on — a change between its look and its sleep makes the sleep return at once,
 * so no wake-up is lost; SLEEPING, set by the thread around its sleep. A sleeping thread is
 * woken only once WAKE_BYTES are waiting (or the job ends): waking it for every 64 KB chunk
 * cost a futex wake-up each, 7–9 % of the event loop's samples in a CPU profile of 48 MB
 * uploads (`Atomics.notify`), 1–2 % batched. A thread runs one job at a time; with none
 * free, or for a small or chunked body, the hash is computed in line as before
 * (`Bun.CryptoHasher`).
 */
import { availableParallelism } from 'node:os'

export interface StreamHasher {
  /** Where the hash is computed. */
  readonly where: 'thread' | 'inline'
  /** Add bytes; wait before the next call when it returns a promise (the ring is full). */
  update(bytes: Uint8Array): void | Promise<void>
  /** The hex digest of everything added. */
  digest(): Promise<string>
  /** Give up (the upload failed): frees the thread. */
  abort(): void
}

export const RING_BYTES = 8 * 1024 * 1024
/** Bodies smaller than this are hashed in line: a thread's hand-off costs more than it saves. */
export const THREAD_MIN_BYTES = 4 * 1024 * 1024

/** A sleeping hash thread is woken once this much is waiting in the ring (or at the end). */
const WAKE_BYTES = 1024 * 1024

export const FILLED = 0
export const STATE = 1
export const SEQ = 2
export const SLEEPING = 3
const RUNNING = 1
export const ENDED = 2
export const ABORTED = 3

export type ThreadRequest = { type: 'init'; ring: SharedArrayBuffer; control: SharedArrayBuffer } | { type: 'begin' }
export type ThreadReply = { type: 'digest'; hex: string } | { type: 'aborted' } | { type: 'error'; message: string }

class HashThread {
  readonly #worker: Worker
  readonly #ring = new Uint8Array(new SharedArrayBuffer(RING_BYTES))
  readonly #control = new Int32Array(new SharedArrayBuffer(4 * 4)) // FILLED, STATE, SEQ, SLEEPING
  #writePos = 0
  #reply: ((r: ThreadReply) => void) | undefined
  /** The thread died: never handed out again. */
  broken = false
  busy = false

  constructor() {
    this.#worker = new Worker(new URL('./stream-hash-thread.ts', import.meta.url))
    this.#worker.postMessage({ type: 'init', ring: this.#ring.buffer as SharedArrayBuffer, control: this.#control.buffer as SharedArrayBuffer } satisfies ThreadRequest)
    this.#worker.onmessage = (e: MessageEvent<ThreadReply>) => this.#settle(e.data)
    this.#worker.onerror = (e) => {
      this.broken = true
      this.#settle({ type: 'error', message: e.message || 'hash thread failed' })
    }
    this.#worker.unref()
  }

  #settle(r: ThreadReply) {
    const reply = this.#reply
    this.#reply = undefined
    this.busy = false
    reply?.(r)
  }

  /** Start a job; the thread is busy until its digest or abort has come back. */
  begin(): StreamHasher {
    const c = this.#control
    this.busy = true
    this.#writePos = 0
    Atomics.store(c, FILLED, 0)
    Atomics.store(c, STATE, RUNNING)
    const done = new Promise<ThreadReply>((resolve) => (this.#reply = resolve))
    this.#worker.postMessage({ type: 'begin' } satisfies ThreadRequest)
    const signal = () => {
      Atomics.add(c, SEQ, 1)
      Atomics.notify(c, SEQ)
    }
    /** Copy `n` bytes from `off` into the ring (there is room) and tell the thread. */
    const put = (bytes: Uint8Array, off: number, n: number) => {
      this.#ring.set(n === bytes.byteLength ? bytes : bytes.subarray(off, off + n), this.#writePos)
      this.#writePos = (this.#writePos + n) % RING_BYTES
      const filled = Atomics.add(c, FILLED, n) + n
      // SEQ first, SLEEPING after: a thread that set SLEEPING after this look finds SEQ changed
      // and does not sleep; one that set it before is seen here (the atomics are sequentially
      // consistent). The flag is taken back here, so a thread slow to wake up is notified once,
      // not once per chunk until it runs. A full ring is always past WAKE_BYTES, so a producer
      // waiting for room has woken the thread.
      Atomics.add(c, SEQ, 1)
      if (filled >= WAKE_BYTES && Atomics.compareExchange(c, SLEEPING, 1, 0) === 1) Atomics.notify(c, SEQ)
    }
    let finished = false
    const update = async (bytes: Uint8Array, from: number): Promise<void> => {
      let off = from
      while (off < bytes.byteLength) {
        // Given up meanwhile: the thread no longer takes from the ring.
        if (finished) throw new Error('hash aborted')
        const filled = Atomics.load(c, FILLED)
        if (filled === RING_BYTES) {
          // Full: wait for the thread to take some (FILLED changes), without blocking the loop.
          if (this.broken) throw new Error('hash thread failed')
          const w = Atomics.waitAsync(c, FILLED, filled, 1000)
          if (w.async) await w.value
          continue
        }
        const n = Math.min(RING_BYTES - filled, bytes.byteLength - off, RING_BYTES - this.#writePos)
        put(bytes, off, n)
        off += n
      }
    }
    return {
      where: 'thread',
      update: (bytes) => {
        if (finished) throw new Error('hasher already finished')
        // The usual case, room for the whole chunk, stays synchronous.
        const filled = Atomics.load(c, FILLED)
        if (RING_BYTES - filled >= bytes.byteLength && RING_BYTES - this.#writePos >= bytes.byteLength) return put(bytes, 0, bytes.byteLength)
        return update(bytes, 0)
      },
      digest: async () => {
        if (finished) throw new Error('hasher already finished')
        finished = true
        Atomics.store(c, STATE, ENDED)
        signal()
        const r = await done
        if (r.type !== 'digest') throw new Error(r.type === 'error' ? r.message : 'hash aborted')
        return r.hex
      },
      abort: () => {
        if (finished) return
        finished = true
        Atomics.store(c, STATE, ABORTED)
        signal()
      },
    }
  }
}

function inline(): StreamHasher {
  const h = new Bun.CryptoHasher('sha256')
  return {
    where: 'inline',
    update: (bytes) => void h.update(bytes),
    digest: async () => h.digest('hex'),
    abort: () => {},
  }
}

const threads: HashThread[] = []
// One thread per core but the event loop's own (at least one, at most four: each holds its ring).
const MAX_THREADS = Math.min(4, Math.max(1, availableParallelism() - 1))

/**
 * A SHA-256 hasher for a stream of about `expectedBytes`: on a hash thread when one is free
 * and the body is declared large enough, else in line. A body of unknown length (chunked) is
 * hashed in line: it may be small, and a large one arrives no faster than the client streams it.
 */
export function streamHasher(expectedBytes: number | undefined): StreamHasher {
  if (expectedBytes === undefined || !(expectedBytes >= THREAD_MIN_BYTES)) return inline()
  let thread = threads.find((t) => !t.busy && !t.broken)
  if (!thread) {
    for (let i = threads.length - 1; i >= 0; i--) if (threads[i]!.broken) threads.splice(i, 1)
    if (threads.length >= MAX_THREADS) return inline()
    thread = new HashThread()
    threads.push(thread)
  }
  return thread.begin()
}
