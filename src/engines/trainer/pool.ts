/**
 * Training Workers, reused. A Worker that finished a run cleanly waits, unref'd, for the
 * next run for IDLE_WORKER_MS: back-to-back runs (a sweep, a retrain) then skip the Worker
 * start, the tfjs load and the JIT warm-up, which cost the first epoch of a cold Worker
 * about a second here (bench/models-trainer.ts). At most one Worker waits, so an idle
 * server holds at most one tfjs heap; a cancelled or crashed run's Worker is terminated,
 * never reused. Runs share nothing else: each disposes every tensor it creates.
 */
const IDLE_WORKER_MS = 30_000

let idle: { worker: Worker; timer: ReturnType<typeof setTimeout> } | null = null
let spawned = 0

function spawn(): Worker {
  spawned++
  const worker = new Worker(new URL('./worker.ts', import.meta.url))
  worker.addEventListener('close', () => {
    if (idle?.worker === worker) {
      clearTimeout(idle.timer)
      idle = null
    }
  })
  return worker
}

/** A Worker for one run: the idle one if there is one, else a new one. */
export function acquireWorker(): Worker {
  if (idle) {
    const { worker, timer } = idle
    idle = null
    clearTimeout(timer)
    worker.ref()
    return worker
  }
  return spawn()
}

/** Hand back a Worker whose run ended cleanly (done, or a data error it reported). */
export function releaseWorker(worker: Worker): void {
  if (idle) {
    worker.terminate()
    return
  }
  worker.unref() // an idle Worker must not keep the process alive
  const timer = setTimeout(() => {
    if (idle?.worker === worker) {
      idle = null
      worker.terminate()
    }
  }, IDLE_WORKER_MS)
  timer.unref()
  idle = { worker, timer }
}

/** Terminate the idle Worker, if any (server shutdown, tests). */
export function closeIdleWorker(): void {
  if (!idle) return
  const { worker, timer } = idle
  idle = null
  clearTimeout(timer)
  worker.terminate()
}

/** How many Workers this process has started, and whether one is waiting (for tests and metrics). */
export function poolStats(): { spawned: number; idle: boolean } {
  return { spawned, idle: idle !== null }
}
