/**
 * Dataset work in worker processes, one per slot, each held to a memory budget and a time
 * limit by the operating system: the process is killed past either, and the memory it held
 * goes back with it.
 *
 * Why processes: DuckDB's memory_limit does not cover every allocation. In one process,
 * `SELECT list_sum(range(1000000000))` under `memory_limit='256MB'` reached 7.7 GB of RSS and
 * ignored an interrupt for 37 s (measured here, DuckDB 1.5.6); several in parallel took the
 * server past 15 GB. A cgroup would bound a process's memory (memory.max), but the server
 * cannot count on a writable cgroup hierarchy (a container normally has none). So two bounds,
 * both outside DuckDB:
 * - the kernel's: each worker, once DuckDB is loaded, sets RLIMIT_DATA on itself to what it has
 *   mapped plus the budget (rlimit.ts). An allocation past it fails at once (DuckDB: "Out of
 *   Memory Error"), so the bomb above is refused in ~20 ms at a resident set of ~100 MB. It
 *   bounds address space, not memory used, hence relative (RLIMIT_AS cannot be: Bun reserves
 *   gigabytes of address space at start);
 * - the pool's: each busy worker's resident set is read from /proc/<pid>/status every
 *   `watchMs`, and the process is killed (SIGKILL) once it is over budget; the overshoot is
 *   what it can touch in that interval.
 * DuckDB's own memory_limit stays set, below the budget, so the operators it governs fail
 * cleanly (or spill) first. A worker whose operation ran out of memory, either way, is retired.
 *
 * Who may start an operation, and when, is an Admission (admission.ts): slots shared fairly
 * between users, a per-user queue cap, and (interactive pools) each user's pace of the bytes
 * of rows they are answered with. A worker runs one operation at a time in a fresh DuckDB;
 * one that ends above half its budget (allocators keep what they freed) is retired, and an
 * idle one exits after `idleMs`, so the memory comes back.
 *
 * Starting a worker costs ~0.2 s of a core on an idle machine (Bun plus libduckdb), 0.4 s to
 * over 1 s under load, and that cost falls on the user who caused it. A worker retired because
 * of a user's operation (killed over its memory or time, died, ran out of memory, kept too
 * much) is replaced at once by one started for that user: their next operation waits for it,
 * even when another worker is idle, and no one else takes it while they have not (unless the
 * pool is full). Without that, a user whose every query ends in a memory error takes the warm
 * worker another user's `select 1` was about to use, each time, and that user waits for the
 * start instead (issue 14: the abuser's answers alternated 36 and ~370 ms, the light user's
 * p90 was 360–490 ms; with it, 28–29 ms, quiet 17). Besides, one spare is kept ready (or
 * starting) whenever none is idle, so a user whose slot was freed by someone else's retired
 * worker finds a warm one too (interactive pools; a background pool keeps one only below
 * `size`, as before).
 *
 * Those replacements are paced per user (REPLACEMENT_BURST at once, then one per
 * `replacementIntervalMs`: a Pace each, core/pace.ts): unpaced, a user whose every query is a
 * memory bomb had workers started for them as fast as they could start, about a core of the 2
 * (bench:abuse, README). Past it, their next operation waits for their replacement (within its
 * time limit); no one else's does.
 *
 * Processes: at most `size` + 1 workers alive in an interactive pool (`size` running, one
 * spare or replacement), `size` in a background one, plus those already SIGKILLed whose exit
 * the kernel is finishing (their memory is on its way back). The workers run at a lower
 * scheduling priority than the server (10 nice levels below, set by each on itself:
 * sandbox-worker.ts), so their start-up and their queries do not starve the server's event
 * loop, which answers every user.
 *
 * One worker process (its start, IPC, resident set and kill) is a WorkerProcess (worker-process.ts).
 */
import { mkdirSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { AppError, ServiceUnavailableError } from '../../core/errors.ts'
import { untilAborted } from '../../core/abortable.ts'
import { Paces } from '../../core/pace.ts'
import { Admission, type AdmissionOptions } from './admission.ts'
import type { ToWorker } from './sandbox-protocol.ts'
import { answersRows, DUCKDB_OUT_OF_MEMORY, type SandboxOp, type SandboxResults, type WorkerSettings } from './sandbox-ops.ts'
import { duckdbMemoryLimit, WorkerProcess, type WorkerJob } from './worker-process.ts'

const MiB = 1024 * 1024

/** Replacement workers one user's operations may have started at once, before the pace applies. */
const REPLACEMENT_BURST = 2

/** `size`: worker processes, i.e. operations running at once; the rest of AdmissionOptions as there. */
export interface WorkerPoolOptions extends AdmissionOptions {
  /** Resident memory one worker may use, MiB. */
  memoryMb: number
  /**
   * Address space a worker may map beyond what it holds once ready (the kernel's RLIMIT_DATA,
   * rlimit.ts), MiB; default `memoryMb`. Mapped is not resident: see the background pool in
   * duckdb.ts for a workload that maps four times what it touches.
   */
  addressSpaceMb?: number
  /** DuckDB threads per operation. */
  threads: number
  /**
   * Interactive pools: workers keep a DuckDB instance ready for the next query (see prepareSpare
   * in duckdb-instance.ts), and the pool may keep one spare worker beyond `size` (see #spare).
   */
  spareInstance: boolean
  /** Workers run user SQL (see prepareSandbox in duckdb-sandbox.ts). */
  sandbox: boolean
  /** Upper bound of DuckDB's memory_limit, as DuckDB spells it ("1GB"); see duckdbMemoryLimit (worker-process.ts). */
  duckdbMemoryLimit: string
  /** Working directory of the workers, and the parent of each operation's scratch directory. */
  tempDirectory: string
  /** An idle worker exits after this long (default 30 s); the next operation starts one (~0.2 s). */
  idleMs?: number
  /** How often a busy worker's memory (and `watch`) is checked, ms (default 20). */
  watchMs?: number
  /** Past REPLACEMENT_BURST, a user's operations get at most one replacement worker per this long (default 1000 ms). */
  replacementIntervalMs?: number
  /**
   * Whether an operation's time limit counts from its arrival (waiting for a slot included:
   * interactive work, so no request outlives it) or from its start (background work, which
   * may queue behind a user's other uploads for longer than one of them may run).
   */
  deadlineFromArrival: boolean
}

/** The bounds of one operation, and the errors that say which was crossed. */
export interface RunLimits {
  timeoutMs: number
  /** `queued`: the time ran out while it waited for a slot (see deadlineFromArrival). */
  timeoutError(queued: boolean): AppError
  /** `cause`: what ran out (DuckDB's error, or the resident set seen over the budget). */
  memoryError(cause?: unknown): AppError
  /** Checked with the memory; an error stops the operation (an export file past its size). */
  watch?(): AppError | undefined
  signal?: AbortSignal
  /** Told the pid of the worker process that runs the operation, and whether it was ready when taken (for tests and measurements). */
  onWorker?(pid: number, warm: boolean): void
}

/** An operation as callers give it: the pool adds its scratch directory. */
export type PoolOp = SandboxOp extends infer T ? (T extends unknown ? Omit<T, 'scratch'> : never) : never

interface Job extends WorkerJob {
  user: string
  limits: RunLimits
}

type Worker = WorkerProcess<Job>

export class WorkerPool {
  readonly #opts: Required<Omit<WorkerPoolOptions, 'queuePerUser' | 'answerPace' | 'addressSpaceMb'>> & Pick<WorkerPoolOptions, 'queuePerUser' | 'answerPace' | 'addressSpaceMb'>
  readonly #settings: WorkerSettings
  readonly #admission: Admission
  /** Every worker process not yet exited (retired ones included until they have). */
  readonly #workers = new Set<Worker>()
  /** Ready and waiting for an operation: spares first, then the others by when they were last used. */
  readonly #idle: Worker[] = []
  /** Started ahead of an operation (a spare, or a user's replacement), not ready yet. */
  readonly #starting = new Set<Worker>()
  /** Workers running an operation, with what stops it. */
  readonly #busy = new Map<Worker, (err: AppError) => void>()
  /** Workers alive at most (retired ones aside): `size`, plus the spare of an interactive pool. */
  readonly #cap: number
  /** The pace of each user's replacement workers. */
  readonly #replacements: Paces
  /** Users whose replacement waits for the pace: their operations wait for its start. */
  readonly #heldBack = new Map<string, Promise<void>>()
  #watch: ReturnType<typeof setInterval> | undefined
  #seq = 0
  #closed = false

  constructor(opts: WorkerPoolOptions) {
    this.#opts = { ...opts, idleMs: opts.idleMs ?? 30_000, watchMs: opts.watchMs ?? 20, replacementIntervalMs: opts.replacementIntervalMs ?? 1000 }
    if (!Number.isInteger(opts.size) || opts.size < 1) throw new Error('size must be an integer >= 1')
    if (!(opts.memoryMb >= 64)) throw new Error('memoryMb must be >= 64')
    this.#admission = new Admission(opts)
    this.#cap = opts.size + (opts.spareInstance ? 1 : 0)
    this.#replacements = new Paces(1000 / this.#opts.replacementIntervalMs, REPLACEMENT_BURST)
    this.#settings = {
      threads: opts.threads,
      duckdbMemoryLimit: duckdbMemoryLimit(opts.duckdbMemoryLimit, opts.memoryMb),
      spareInstance: opts.spareInstance,
      sandbox: opts.sandbox,
      memoryGrowthBytes: (opts.addressSpaceMb ?? opts.memoryMb) * MiB,
    }
    // The workers' working directory (and where each operation's scratch directory goes).
    mkdirSync(opts.tempDirectory, { recursive: true })
  }

  /** Pids of the live workers (for measurements: their RSS is the engine's memory). */
  pids(): number[] {
    return [...this.#workers].map((w) => w.proc.pid)
  }

  /**
   * Run `op` for `user` in a worker, within `limits`. Waits for a slot (fairly between users;
   * QueueFullError when the user already has `queuePerUser` waiting), then resolves with the
   * operation's result or rejects with its error — or with `timeoutError()`, `memoryError()`,
   * a `watch()` error or the signal's reason once the worker was killed for it.
   */
  async run<K extends PoolOp['kind']>(user: string, op: Extract<PoolOp, { kind: K }>, limits: RunLimits): Promise<SandboxResults[K]> {
    const arrived = performance.now()
    const deadline = this.#opts.deadlineFromArrival ? AbortSignal.timeout(limits.timeoutMs) : undefined
    const waiting = deadline && limits.signal ? AbortSignal.any([limits.signal, deadline]) : (deadline ?? limits.signal)
    const queued = (err: unknown) => (deadline?.aborted && !limits.signal?.aborted ? limits.timeoutError(true) : err)
    const answering = answersRows(op.kind) ? { deadline: this.#opts.deadlineFromArrival ? arrived + limits.timeoutMs : undefined } : undefined
    await this.#admit(user, waiting, answering).catch((err: unknown) => {
      throw queued(err)
    })
    const scratch = join(this.#opts.tempDirectory, `op-${crypto.randomUUID()}`)
    try {
      const held = this.#heldBack.get(user)
      if (held) await untilAborted(held, waiting).catch((err: unknown) => {
        throw queued(err)
      })
      limits.signal?.throwIfAborted()
      if (this.#closed) throw new ServiceUnavailableError('The dataset engine is stopping')
      const { worker, warm } = this.#take(user)
      await worker.ready
      limits.onWorker?.(worker.proc.pid, warm)
      const left = this.#opts.deadlineFromArrival ? Math.max(1, limits.timeoutMs - (performance.now() - arrived)) : limits.timeoutMs
      const result = (await this.#exec(worker, user, { ...op, scratch } as SandboxOp, { ...limits, timeoutMs: left })) as SandboxResults[K]
      if (answering) this.#admission.answered(user, (result as SandboxResults['query' | 'preview']).bytes)
      return result
    } finally {
      await rm(scratch, { recursive: true, force: true })
      this.#admission.release(user)
    }
  }

  /**
   * `fn` in this process, holding one of the pool's slots for `user` (same fairness and queue
   * cap as run): for light work that needs no worker, e.g. reading a Parquet footer.
   */
  async hold<T>(user: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    // No deadline: what runs here is light and trusted (see DuckDBDatasetEngine.describe).
    await this.#admit(user, signal)
    try {
      signal?.throwIfAborted()
      return await fn()
    } finally {
      this.#admission.release(user)
    }
  }

  /** Wait for a slot for `user` (Admission.admit), unless the pool is closing. */
  async #admit(user: string, signal: AbortSignal | undefined, answering?: { deadline: number | undefined }): Promise<void> {
    if (this.#closed) throw new ServiceUnavailableError('The dataset engine is stopping')
    await this.#admission.admit(user, signal, answering)
  }

  /** Stop every worker; operations in flight fail with 503. */
  async close(): Promise<void> {
    this.#closed = true
    const stopping = new ServiceUnavailableError('The dataset engine is stopping')
    await Promise.all([...this.#workers].map((w) => w.kill(stopping)))
  }

  /**
   * A worker for `user`'s operation (they hold a slot), in this order: the replacement started
   * for them (ready or not: the start is theirs to wait for), a ready one, the spare on its way,
   * a new one while the pool has room, else one started for someone else (the pool is full, and
   * fewer than `size` workers run an operation, so one is free). When that leaves no spare, one
   * is started.
   */
  #take(user: string): { worker: Worker; warm: boolean } {
    const starting = (p: (w: Worker) => boolean) => [...this.#starting].find(p)
    const theirs = (w: Worker) => w.owner === user
    const free = (w: Worker) => w.owner === undefined
    const worker =
      this.#idle.findLast(theirs) ??
      starting(theirs) ??
      this.#idle.findLast(free) ??
      starting(free) ??
      (this.#alive() < this.#cap ? this.#spawn() : (this.#idle.at(-1) ?? starting(() => true) ?? this.#spawn()))
    const i = this.#idle.indexOf(worker)
    if (i >= 0) {
      this.#idle.splice(i, 1)
      clearTimeout(worker.idleTimer)
      worker.proc.ref()
    }
    this.#starting.delete(worker)
    worker.owner = undefined
    this.#spare()
    return { worker, warm: i >= 0 }
  }

  /** Workers alive and not retired: at most #cap (#take, #spare and #forget start one only below it). */
  #alive(): number {
    let n = 0
    for (const w of this.#workers) if (!w.retired) n++
    return n
  }

  #spawn(): Worker {
    const w: Worker = new WorkerProcess<Job>(this.#settings, this.#opts.tempDirectory, (dead) => this.#forget(dead))
    this.#workers.add(w)
    return w
  }

  /** Start a worker ahead of an operation: `owner`'s replacement, or (undefined) the pool's spare. */
  #start(owner: string | undefined): void {
    const w = this.#spawn()
    w.owner = owner
    this.#starting.add(w)
    w.ready.then(
      () => {
        // Otherwise taken by an operation meanwhile, or gone.
        if (this.#starting.delete(w)) this.#park(w, 'unused')
      },
      () => this.#starting.delete(w),
    )
  }

  /** Keep one worker ready or starting that anyone may take, while the pool has room for it. */
  #spare(): void {
    const free = (w: Worker) => w.owner === undefined
    if (this.#closed || this.#idle.some(free) || [...this.#starting].some(free) || this.#alive() >= this.#cap) return
    this.#start(undefined)
  }

  #forget(w: Worker): void {
    // Killed mid-operation (over a limit, or its user went away), died mid-operation, or
    // retired after one: the user of that operation gets the replacement.
    const by = w.retiredBy ?? (this.#busy.has(w) ? w.job?.user : undefined)
    this.#workers.delete(w)
    this.#starting.delete(w)
    const i = this.#idle.indexOf(w)
    if (i >= 0) this.#idle.splice(i, 1)
    clearTimeout(w.idleTimer)
    // Not past #cap: the pool may have started a worker while this one was dying (it no longer
    // counted); one is then free for the user's next operation.
    if (by !== undefined && !this.#closed) this.#replace(by)
  }

  /** Start `user`'s replacement now, or once their pace allows (their operations wait for it meanwhile). */
  #replace(user: string): void {
    const wait = this.#replacements.after(user, 1)
    if (wait === 0) {
      if (this.#alive() < this.#cap) this.#start(user)
      return
    }
    const held: Promise<void> = new Promise<void>((resolve) => setTimeout(resolve, wait).unref?.()).then(() => {
      if (this.#heldBack.get(user) === held) this.#heldBack.delete(user)
      if (!this.#closed && this.#alive() < this.#cap) this.#start(user)
    })
    this.#heldBack.set(user, held)
  }

  /** Stop `w` for good; once it has exited, #forget starts its replacement if it was retired because of someone. */
  #retire(w: Worker, by: string | undefined): Promise<void> {
    w.retiredBy = by
    const i = this.#idle.indexOf(w)
    if (i >= 0) this.#idle.splice(i, 1)
    return w.kill(undefined)
  }

  #exec(worker: Worker, user: string, op: SandboxOp, limits: RunLimits): Promise<unknown> {
    const budget = this.#opts.memoryMb * MiB
    return new Promise((resolve, reject) => {
      let stopped = false
      const stop = (err: unknown) => {
        if (stopped) return
        stopped = true
        void worker.kill(err)
      }
      const timer = setTimeout(() => stop(limits.timeoutError(false)), limits.timeoutMs)
      const onAbort = () => stop(limits.signal!.reason)
      limits.signal?.addEventListener('abort', onAbort, { once: true })
      const settle = (ok: boolean, value: unknown) => {
        clearTimeout(timer)
        limits.signal?.removeEventListener('abort', onAbort)
        this.#busy.delete(worker)
        if (this.#busy.size === 0) {
          clearInterval(this.#watch)
          this.#watch = undefined
        }
        const outOfMemory = !ok && value instanceof AppError && value.code === DUCKDB_OUT_OF_MEMORY
        const answer = () => (ok ? resolve(value) : reject(outOfMemory ? limits.memoryError(value) : value))
        // A worker that was killed, or died, has exited by now (its job is rejected from the
        // exit handler, after #forget started its replacement).
        if (stopped || !this.#workers.has(worker)) return answer()
        if (this.#closed) {
          void worker.kill(undefined)
          return answer()
        }
        // One whose DuckDB ran out of memory (its memory_limit, or the kernel's RLIMIT_DATA
        // refusing an allocation) is retired as one killed over its budget is: a fresh process
        // is the only sure way to have all of it back. So is one that kept more than half its
        // budget (allocators keep what they freed). Answered once it is gone (SIGKILL: a few
        // ms), so its memory is back, and its replacement (this user's) started, by then.
        if (outOfMemory || (worker.rss() ?? 0) > budget / 2) {
          void this.#retire(worker, user).then(answer)
          return
        }
        this.#park(worker)
        answer()
      }
      worker.job = { id: ++this.#seq, user, resolve: (v) => settle(true, v), reject: (e) => settle(false, e), limits }
      this.#busy.set(worker, stop)
      this.#watch ??= setInterval(() => this.#check(budget), this.#opts.watchMs)
      const message: ToWorker = { id: worker.job.id, op }
      try {
        worker.proc.send(message)
      } catch (err) {
        // It died between being taken and being asked (its exit found no job to fail).
        worker.job = undefined
        stop(err)
        settle(false, new AppError('dataset_engine_failed', 'DuckDB worker is gone', { cause: err }))
        return
      }
      // Aborted while a worker was being started: no abort event will come.
      if (limits.signal?.aborted) onAbort()
    })
  }

  /** Stop busy workers past their memory budget or their `watch`. */
  #check(budget: number): void {
    for (const [worker, stop] of this.#busy) {
      const limits = worker.job?.limits
      if (!limits) continue
      const rss = worker.rss()
      if (rss !== undefined && rss > budget) stop(limits.memoryError(new Error(`resident set ${rss} bytes, over the budget of ${budget}`)))
      else {
        const err = limits.watch?.()
        if (err) stop(err)
      }
    }
  }

  /**
   * Into the idle list, until an operation takes it or `idleMs` passes. The most recently used
   * is taken first; one that never ran anything (a spare) waits behind those that did.
   */
  #park(worker: Worker, used: 'used' | 'unused' = 'used'): void {
    if (this.#closed) {
      void worker.kill(undefined)
      return
    }
    worker.idleTimer = setTimeout(() => void this.#retire(worker, undefined), this.#opts.idleMs)
    worker.idleTimer.unref?.()
    // The server's event loop does not wait for idle workers; they exit when it does (IPC closes).
    worker.proc.unref()
    if (used === 'used') this.#idle.push(worker)
    else this.#idle.unshift(worker)
  }
}
