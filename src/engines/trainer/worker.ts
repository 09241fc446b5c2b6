/**
 * The training Worker: loads tfjs, trains, and reports back. One Worker per run, so a
 * cancel is a `terminate()` that frees everything at once, and a crash or an
 * out-of-memory in tfjs cannot take the API's thread with it.
 */
import { loadTf, runTraining, type WorkerReply, type WorkerRequest } from './core.ts'
import { toWire } from './errors.ts'

declare const self: Worker

const reply = (msg: WorkerReply, transfer: ArrayBuffer[] = []) => self.postMessage(msg, transfer)

self.onmessage = async (event: MessageEvent<WorkerRequest>) => {
  const msg = event.data
  if (msg.type !== 'train') return
  try {
    const tf = await loadTf(msg.backend)
    const artifact = runTraining(tf, msg.job, (progress) => reply({ type: 'epoch', progress }))
    reply({ type: 'done', artifact }, artifact.weights.map((w) => w.buffer as ArrayBuffer))
  } catch (err) {
    reply({ type: 'error', error: toWire(err) })
  }
}
