/**
 * BullMQ request/reply with nothing of the actor runtime, the baseline a cross-node ask is
 * measured against (bench/actors.ts): `queue.add`, a Worker running `work`, and the caller
 * waiting with `job.waitUntilFinished(queueEvents)` — BullMQ's own way of getting a result back.
 */
import { Queue, QueueEvents, Worker, type WorkerOptions } from 'bullmq'
import { Redis } from 'ioredis'

export interface QueueRoundTrip {
  /** Add a job with `data` and wait for its result. */
  call(data: Record<string, unknown>): Promise<unknown>
  close(): Promise<void>
}

export async function queueRoundTrip(
  url: string,
  prefix: string,
  name: string,
  work: (data: Record<string, unknown>) => Promise<unknown>,
  workerOptions: Pick<WorkerOptions, 'concurrency' | 'lockDuration' | 'stalledInterval' | 'maxStalledCount' | 'drainDelay'>,
): Promise<QueueRoundTrip> {
  const connection = new Redis(url, { maxRetriesPerRequest: null })
  const queue = new Queue(name, { connection, prefix })
  const worker = new Worker(name, (job) => work(job.data as Record<string, unknown>), { connection, prefix, ...workerOptions })
  const events = new QueueEvents(name, { connection: { url }, prefix })
  await Promise.all([worker.waitUntilReady(), events.waitUntilReady()])
  return {
    call: async (data) => (await queue.add('x', data, { removeOnComplete: { age: 60, count: 10_000 } })).waitUntilFinished(events),
    async close() {
      await worker.close()
      await events.close()
      await queue.obliterate({ force: true })
      await queue.close()
      connection.disconnect()
    },
  }
}
