/**
 * The kernels of the sheets whose actors live on this node, in memory: one KernelSession per
 * sheet at most, in its workstation's container, started on the first execution that needs it
 * and replaced on the next when it died.
 *
 * Kernel work (start, execute, restart, shutdown) is done one operation at a time per sheet
 * (a promise chain), so a restart waits for the execution it interrupted to have ended, and an
 * execution queued behind a restart runs on the fresh kernel. Interrupting does not wait in
 * that line: it aborts the running execution's signal, which the session turns into an
 * interrupt of the kernel (KeyboardInterrupt in Python, SIGINT in the shell).
 *
 * Nothing here writes: what happens is reported to the sheet's actor by the caller (./sheet.ts).
 */
import type { Logger } from '../../core/logger.ts'
import { KernelDiedError, KernelStartError, type KernelName, type KernelProvider, type KernelSession, type NbOutput } from '../../engines/kernels/kernel.ts'
import type { ExecutionEnd } from './messages.ts'

/** Why this node stopped an execution. */
export type StopReason = 'interrupted' | 'timed_out' | 'restarted' | 'deleted' | 'stopping'

interface Live {
  name: KernelName
  session: KernelSession | null
  /** Bumped with each new session: death reports of an earlier one are ignored. */
  generation: number
  chain: Promise<unknown>
  running: { executionId: string; ctl: AbortController; why: StopReason | null } | null
}

export interface ExecutionTarget {
  sheetId: string
  workstationId: string
  kernel: KernelName
  executionId: string
  code: string
  timeoutSeconds: number | null
}

export interface ExecutionHooks {
  onOutput(o: NbOutput): void
  /** clear_output(wait) in the cell. */
  onClear(wait: boolean): void
  /** The kernel is up (started, or already running) and the code was handed to it. */
  onKernelUp(): void
  /** The kernel of `generation` died on its own. */
  onDeath(generation: number, reason: string): void
}

export interface ExecutionOutcome {
  status: ExecutionEnd
  executionCount: number | null
  error: string | null
}

const STOPPED: Record<StopReason, { status: ExecutionEnd; error: string | null }> = {
  interrupted: { status: 'interrupted', error: null },
  timed_out: { status: 'timed_out', error: null },
  restarted: { status: 'interrupted', error: 'The kernel was restarted' },
  deleted: { status: 'interrupted', error: 'The cell was deleted' },
  stopping: { status: 'failed', error: 'The server stopped while the cell ran' },
}

/**
 * What a notebook's kernel runs with. Figures are shown inline, as in Jupyter: an image may set
 * MPLBACKEND=Agg for scripts (the Python image does), which would leave `plt.show()` in a cell
 * with no output. matplotlib_inline comes with ipykernel, so it is there wherever python3 runs.
 */
const KERNEL_ENV: Record<KernelName, Record<string, string>> = {
  python3: { MPLBACKEND: 'module://matplotlib_inline.backend_inline' },
  shell: {},
}

const errorOutput = (ename: string, evalue: string): NbOutput => ({ output_type: 'error', ename, evalue, traceback: [`${ename}: ${evalue}`] })

export class SheetKernels {
  readonly #live = new Map<string, Live>()

  constructor(
    private readonly provider: KernelProvider | undefined,
    private readonly logger: Logger,
    private readonly startTimeoutMs?: number,
  ) {}

  /** A kernel provider is configured (a container engine is). */
  get available(): boolean {
    return this.provider !== undefined
  }

  /** Which kernels the running container can start; undefined when it cannot be asked. */
  async kernelsOf(workstationId: string): Promise<KernelName[] | undefined> {
    return this.provider?.available({ kind: 'workstation', entityId: workstationId }).catch(() => undefined)
  }

  /** The sheet's kernel on this node: none, dead, or alive (idle unless an execution runs). */
  status(sheetId: string): 'none' | 'dead' | 'alive' {
    const s = this.#live.get(sheetId)?.session
    if (!s) return 'none'
    return s.state() === 'dead' ? 'dead' : 'alive'
  }

  /** The execution this node runs for the sheet, if any. */
  runningId(sheetId: string): string | undefined {
    return this.#live.get(sheetId)?.running?.executionId
  }

  generation(sheetId: string): number {
    return this.#live.get(sheetId)?.generation ?? 0
  }

  #entry(sheetId: string, name: KernelName): Live {
    let live = this.#live.get(sheetId)
    if (!live) this.#live.set(sheetId, (live = { name, session: null, generation: 0, chain: Promise.resolve(), running: null }))
    return live
  }

  #locked<T>(live: Live, fn: () => Promise<T>): Promise<T> {
    const run = live.chain.then(fn, fn)
    live.chain = run.catch(() => {})
    return run
  }

  /** The live session, started (or replaced, when it died or is another kernel) if need be. */
  async #session(live: Live, t: ExecutionTarget, hooks: ExecutionHooks): Promise<KernelSession> {
    if (live.session && live.session.state() !== 'dead' && live.name === t.kernel) return live.session
    if (live.session) await live.session.shutdown().catch(() => {})
    live.session = null
    live.name = t.kernel
    const session = await this.provider!.start({ kind: 'workstation', entityId: t.workstationId }, t.kernel, { startTimeoutMs: this.startTimeoutMs, env: KERNEL_ENV[t.kernel] })
    const generation = ++live.generation
    live.session = session
    session.onDeath((reason) => {
      if (live.generation === generation) hooks.onDeath(generation, reason)
    })
    return session
  }

  /**
   * Run one execution to its end (in line with the sheet's other kernel work) and say how it
   * ended; never throws. Outputs go to `hooks.onOutput` in order; a kernel that cannot start or
   * dies gives an `error` output saying so.
   */
  execute(t: ExecutionTarget, hooks: ExecutionHooks, systemSignal: AbortSignal): Promise<ExecutionOutcome> {
    const live = this.#entry(t.sheetId, t.kernel)
    const running = { executionId: t.executionId, ctl: new AbortController(), why: null as StopReason | null }
    live.running = running
    const stop = (why: StopReason) => {
      running.why ??= why
      running.ctl.abort()
    }
    const onSystemStop = () => stop('stopping')
    systemSignal.addEventListener('abort', onSystemStop, { once: true })
    return this.#locked(live, async (): Promise<ExecutionOutcome> => {
      let lastError: string | null = null
      const onOutput = (o: NbOutput) => {
        if (o.output_type === 'error') lastError = `${o.ename}: ${o.evalue}`
        hooks.onOutput(o)
      }
      let timer: Timer | undefined
      try {
        if (running.ctl.signal.aborted) return { executionCount: null, ...STOPPED[running.why ?? 'interrupted'] }
        let session: KernelSession
        try {
          session = await this.#session(live, t, hooks)
        } catch (err) {
          const message = err instanceof Error ? err.message : String(err)
          if (!(err instanceof KernelStartError)) this.logger.error({ err, sheetId: t.sheetId }, 'kernel start failed')
          const error = `The ${t.kernel} kernel could not start: ${message}`
          onOutput(errorOutput('KernelStartError', error))
          return { status: 'failed', executionCount: null, error }
        }
        hooks.onKernelUp()
        // Stopped while its kernel started (an interrupt, a restart): it does not run.
        if (running.ctl.signal.aborted) return { executionCount: null, ...STOPPED[running.why ?? 'interrupted'] }
        if (t.timeoutSeconds !== null) timer = setTimeout(() => stop('timed_out'), t.timeoutSeconds * 1000)
        const reply = await session.execute(t.code, { onOutput, onClear: hooks.onClear, signal: running.ctl.signal })
        if (running.why) {
          if (running.why === 'timed_out') onOutput(errorOutput('TimeoutError', `The cell ran longer than its timeoutSeconds (${t.timeoutSeconds} s) and was interrupted`))
          return { executionCount: reply.executionCount, ...STOPPED[running.why] }
        }
        if (reply.status === 'ok') return { status: 'ok', executionCount: reply.executionCount, error: null }
        if (reply.status === 'error') return { status: 'error', executionCount: reply.executionCount, error: lastError ?? 'The cell raised an error' }
        return { status: 'interrupted', executionCount: reply.executionCount, error: null }
      } catch (err) {
        if (running.why && !(err instanceof KernelDiedError)) return { executionCount: null, ...STOPPED[running.why] }
        const reason = err instanceof Error ? err.message : String(err)
        if (!(err instanceof KernelDiedError)) this.logger.error({ err, sheetId: t.sheetId }, 'kernel execution failed')
        const error = `The kernel died: ${reason}`
        onOutput(errorOutput('KernelDied', error))
        return { status: 'failed', executionCount: null, error }
      } finally {
        clearTimeout(timer)
        systemSignal.removeEventListener('abort', onSystemStop)
        if (live.running === running) live.running = null
      }
    })
  }

  /** Stop the sheet's running execution (this one, when named). */
  stop(sheetId: string, why: StopReason, executionId?: string): void {
    const running = this.#live.get(sheetId)?.running
    if (!running || (executionId !== undefined && running.executionId !== executionId)) return
    running.why ??= why
    running.ctl.abort()
  }

  /** A fresh kernel process (state cleared): 'alive', or 'none' when there was none or it could not restart. */
  async restart(sheetId: string): Promise<'alive' | 'none'> {
    const live = this.#live.get(sheetId)
    if (!live) return 'none'
    this.stop(sheetId, 'restarted')
    return this.#locked(live, async () => {
      const session = live.session
      if (!session) return 'none'
      if (session.state() !== 'dead') {
        try {
          await session.restart()
          return 'alive'
        } catch (err) {
          this.logger.warn({ err, sheetId }, 'kernel restart failed; it will be started afresh on the next run')
        }
      }
      // Dead, or did not restart: the next run starts a new one.
      live.generation++
      live.session = null
      await session.shutdown().catch(() => {})
      return 'none'
    })
  }

  /** End the sheet's kernel (the sheet is deleted, or its kernel changed). */
  async shutdown(sheetId: string, why: StopReason): Promise<void> {
    const live = this.#live.get(sheetId)
    if (!live) return
    this.stop(sheetId, why)
    await this.#locked(live, async () => {
      const session = live.session
      live.generation++
      live.session = null
      await session?.shutdown().catch(() => {})
    })
    if (!live.running && !live.session) this.#live.delete(sheetId)
  }

  /** Every kernel of this node (the server stops). */
  async shutdownAll(): Promise<void> {
    const sessions = [...this.#live.values()].map((live) => {
      if (live.running) {
        live.running.why ??= 'stopping'
        live.running.ctl.abort()
      }
      live.generation++
      const s = live.session
      live.session = null
      return s
    })
    this.#live.clear()
    await Promise.all(sessions.map((s) => s?.shutdown().catch(() => {})))
  }
}
