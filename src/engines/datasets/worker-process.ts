/**
 * One dataset worker process (sandbox-worker.ts) as the pool (worker-pool.ts) holds it: started
 * with nothing of the server's environment, told its settings, answering one operation at a
 * time over Bun's IPC channel (sandbox-protocol.ts); its resident set read from /proc, and
 * SIGKILLed with a reason that becomes its operation's error. When it exits, the pool is told
 * first, then its operation (if any) fails. Also the DuckDB memory_limit a worker gets for its
 * budget (duckdbMemoryLimit).
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { Subprocess } from 'bun'
import { AppError } from '../../core/errors.ts'
import { fromWire, type FromWorker } from './sandbox-protocol.ts'
import type { WorkerSettings } from './sandbox-ops.ts'

const WORKER_ENTRY = fileURLToPath(new URL('./sandbox-worker.ts', import.meta.url))
const MiB = 1024 * 1024

/** The operation a worker is running, settled from its answer or from its exit. */
export interface WorkerJob {
  id: number
  resolve(value: unknown): void
  reject(err: unknown): void
}

export class WorkerProcess<J extends WorkerJob> {
  readonly proc: Subprocess<'ignore', 'inherit', 'inherit'>
  readonly ready: Promise<void>
  job: J | undefined
  /** Why we killed it; undefined when it died by itself. */
  killedFor: unknown
  /** Being killed: never taken again, and no longer counted in the pool's size. */
  retired = false
  /** The user whose operation made us retire it (out of memory, kept too much): its replacement is theirs. */
  retiredBy: string | undefined
  /** Started to replace a worker that `owner`'s operation retired: theirs until they (or, the pool full, anyone) take it. */
  owner: string | undefined
  idleTimer: ReturnType<typeof setTimeout> | undefined

  constructor(settings: WorkerSettings, cwd: string, onExit: (w: WorkerProcess<J>) => void) {
    const { promise, resolve, reject } = Promise.withResolvers<void>()
    this.ready = promise
    this.proc = Bun.spawn({
      cmd: [process.execPath, WORKER_ENTRY, JSON.stringify(settings)],
      cwd,
      // Nothing of the server's environment (secrets, database URL) reaches the worker; DuckDB
      // derives no directory from a home that does not exist.
      env: { PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin', HOME: '/nonexistent', TMPDIR: cwd },
      stdio: ['ignore', 'inherit', 'inherit'],
      // Structured clone, not JSON: an 8 MB answer (rowsJson) cost the server's event loop 49 ms
      // to parse as JSON and 14 ms to clone (measured, parent CPU per message).
      serialization: 'advanced',
      ipc: (m: FromWorker) => {
        if (m.type === 'ready') return resolve()
        const job = this.job
        if (!job || job.id !== m.id) return
        this.job = undefined
        if (m.type === 'done') job.resolve(m.value)
        else job.reject(fromWire(m.error))
      },
    })
    void this.proc.exited.then(() => {
      reject(new AppError('dataset_engine_failed', `DuckDB worker exited before it was ready (${this.proc.signalCode ?? this.proc.exitCode})`))
      // The pool forgets it first (and starts a replacement), then its operation fails.
      onExit(this)
      const job = this.job
      this.job = undefined
      job?.reject(this.killedFor ?? new AppError('dataset_engine_failed', `DuckDB worker died (${this.proc.signalCode ?? `exit ${this.proc.exitCode}`})`))
    })
    promise.catch(() => {})
  }

  /** Its resident set in bytes (undefined where /proc is not readable). */
  rss(): number | undefined {
    return residentBytes(this.proc.pid)
  }

  async kill(reason: unknown): Promise<void> {
    this.killedFor ??= reason
    this.retired = true
    this.proc.kill('SIGKILL')
    await this.proc.exited
  }
}

/** VmRSS of `pid` from /proc, in bytes; undefined when it cannot be read (not Linux, process gone). */
function residentBytes(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) * 1024 : undefined
  } catch {
    return undefined
  }
}

const DUCKDB_UNITS: Record<string, number> = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, KIB: 1024, MIB: MiB, GIB: 1024 * MiB, TIB: 1024 ** 4 }

/**
 * DuckDB's memory_limit for a worker with `budgetMb` MiB: the configured ceiling, but never
 * more than the budget less a reserve for the runtime and result conversion (a quarter of the
 * budget, at least 160 MiB: an idle worker with DuckDB loaded holds ~80 MB).
 */
export function duckdbMemoryLimit(ceiling: string, budgetMb: number): string {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)\s*$/i.exec(ceiling)
  const ceilingBytes = m ? Number(m[1]) * DUCKDB_UNITS[m[2]!.toUpperCase()]! : Infinity
  const reserveMb = Math.max(160, budgetMb / 4)
  const mb = Math.floor(Math.min(ceilingBytes / MiB, budgetMb - reserveMb))
  return `${Math.max(32, mb)}MiB`
}
