/**
 * The hash thread of src/core/stream-hash.ts: hashes what the producer puts in the shared
 * ring, one job at a time, sleeping on the SEQ word while there is nothing to do.
 */
import { ABORTED, ENDED, FILLED, RING_BYTES, SEQ, SLEEPING, STATE, type ThreadReply, type ThreadRequest } from './stream-hash.ts'

declare const self: Worker

let ring: Uint8Array | undefined
let control: Int32Array | undefined

const reply = (r: ThreadReply) => self.postMessage(r)

function run(ring: Uint8Array, c: Int32Array): ThreadReply {
  const hasher = new Bun.CryptoHasher('sha256')
  let readPos = 0
  for (;;) {
    const seq = Atomics.load(c, SEQ)
    const state = Atomics.load(c, STATE)
    if (state === ABORTED) return { type: 'aborted' }
    const filled = Atomics.load(c, FILLED)
    if (filled > 0) {
      const n = Math.min(filled, RING_BYTES - readPos)
      hasher.update(ring.subarray(readPos, readPos + n))
      readPos = (readPos + n) % RING_BYTES
      Atomics.sub(c, FILLED, n)
      Atomics.notify(c, FILLED) // a producer waiting for room
      continue
    }
    // Everything the producer wrote before it ended the job was counted in FILLED first.
    if (state === ENDED) return { type: 'digest', hex: hasher.digest('hex') }
    // Nothing to hash yet: sleep until the producer has a batch for us or ends the job (returns
    // at once if SEQ moved since it was read above).
    Atomics.store(c, SLEEPING, 1)
    Atomics.wait(c, SEQ, seq)
    Atomics.store(c, SLEEPING, 0)
  }
}

self.onmessage = (event: MessageEvent<ThreadRequest>) => {
  const msg = event.data
  if (msg.type === 'init') {
    ring = new Uint8Array(msg.ring)
    control = new Int32Array(msg.control)
    return
  }
  try {
    reply(run(ring!, control!))
  } catch (err) {
    reply({ type: 'error', message: err instanceof Error ? err.message : String(err) })
  }
}
