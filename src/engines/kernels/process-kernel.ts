/**
 * What the two kernels share: a process in the container (ContainerEngine.spawn) that runs one
 * execution at a time, the bookkeeping of that execution, and how the kernel's death is told.
 * Each kernel says how code is sent (`send`), how it is interrupted, restarted and shut down;
 * both call `output`, `finish` and `died` as their process reports.
 */
import type { ContainerEngine, ContainerRef, ProcessSession } from '../containers/engine.ts'
import { KernelDiedError, type ExecuteOptions, type ExecuteReply, type KernelName, type KernelSession, type KernelState, type NbOutput } from './kernel.ts'

interface Running {
  opts: ExecuteOptions
  /** interrupt() or the signal asked for it while this execution ran. */
  interrupted: boolean
  resolve(reply: ExecuteReply): void
  reject(err: Error): void
  /** The first error an onOutput/onClear listener threw: execute rejects with it at the end. */
  listenerError: unknown
}

/** The last bytes a process wrote to stderr (kept to say why it failed). */
class Tail {
  #text = ''
  constructor(private readonly max = 4096) {}

  push(chunk: Buffer | string): void {
    this.#text = (this.#text + chunk.toString()).slice(-this.max)
  }

  toString(): string {
    return this.#text.trim()
  }
}

export abstract class ProcessKernel implements KernelSession {
  abstract readonly name: KernelName
  protected proc: ProcessSession | null = null
  protected running: Running | null = null
  /** The kernel's stderr (and its driver's), last few KB. */
  protected stderr = new Tail()
  #state: KernelState = 'starting'
  #deathReason: string | null = null
  #listeners: Array<(reason: string) => void> = []
  #closed = false
  readonly #gone = Promise.withResolvers<never>()

  constructor(
    protected readonly engine: ContainerEngine,
    protected readonly ref: ContainerRef,
  ) {
    this.#gone.promise.catch(() => {})
  }

  /** Rejects (KernelDiedError) when the kernel dies or is shut down: race a wait against it. */
  protected get gone(): Promise<never> {
    return this.#gone.promise
  }

  state(): KernelState {
    return this.#state
  }

  /** Why it is dead (null while it is not). */
  protected get deathReason(): string | null {
    return this.#deathReason
  }

  protected setState(state: KernelState): void {
    if (this.#state !== 'dead') this.#state = state
  }

  /** shutdown() was called: the end of the process is not a death. */
  protected get closed(): boolean {
    return this.#closed
  }

  onDeath(listener: (reason: string) => void): void {
    this.#listeners.push(listener)
  }

  async execute(code: string, opts: ExecuteOptions): Promise<ExecuteReply> {
    if (this.#state === 'dead') throw new KernelDiedError(this.#deathReason ?? 'the kernel is not running')
    if (this.running || this.#state !== 'idle') throw new Error(`the ${this.name} kernel is ${this.#state}: it runs one execution at a time`)
    const { promise, resolve, reject } = Promise.withResolvers<ExecuteReply>()
    const running: Running = { opts, interrupted: false, resolve, reject, listenerError: undefined }
    this.running = running
    this.#state = 'busy'
    const onAbort = () => void this.interrupt().catch(() => {})
    // Aborted before: interrupted once the code was handed over. Aborted later: once, by the
    // listener (a second SIGINT can land in the kernel's own handling of the first).
    const abortedBefore = opts.signal?.aborted === true
    if (!abortedBefore) opts.signal?.addEventListener('abort', onAbort, { once: true })
    try {
      await this.send(code)
      if (abortedBefore) onAbort()
      return await promise
    } finally {
      opts.signal?.removeEventListener('abort', onAbort)
      if (this.running === running) this.running = null
    }
  }

  /** Hand the code to the process; the result comes back through output/finish/died. */
  protected abstract send(code: string): Promise<void>
  abstract interrupt(): Promise<void>
  abstract restart(): Promise<void>
  /** End the process (its kernel with it) for good. */
  protected abstract close(): Promise<void>

  async shutdown(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.finish('aborted', null)
    this.#state = 'dead'
    this.#deathReason = 'the kernel was shut down'
    this.#gone.reject(new KernelDiedError(this.#deathReason))
    await this.close()
  }

  /** Give up on a kernel that did not come up: its processes are ended, no death is told. */
  protected async discard(): Promise<void> {
    this.#closed = true
    this.died('the kernel did not start')
    await this.proc?.kill()
  }

  /** Mark the running execution interrupted (it then ends `aborted`); false when none runs. */
  protected markInterrupted(): boolean {
    if (!this.running) return false
    this.running.interrupted = true
    return true
  }

  protected output(o: NbOutput): void {
    const r = this.running
    if (!r) return
    try {
      r.opts.onOutput(o)
    } catch (err) {
      r.listenerError ??= err
    }
  }

  protected clear(wait: boolean): void {
    const r = this.running
    if (!r?.opts.onClear) return
    try {
      r.opts.onClear(wait)
    } catch (err) {
      r.listenerError ??= err
    }
  }

  /** The running execution ended; an interrupted one that did not succeed ends `aborted`. */
  protected finish(status: ExecuteReply['status'], executionCount: number | null): void {
    const r = this.running
    if (!r) return
    this.running = null
    this.setState('idle')
    if (r.listenerError !== undefined) return r.reject(r.listenerError instanceof Error ? r.listenerError : new Error(String(r.listenerError)))
    r.resolve({ status: r.interrupted && status !== 'ok' ? 'aborted' : status, executionCount })
  }

  /** The kernel is gone: the running execution fails, the listeners hear it once, leftovers are ended. */
  protected died(reason: string): void {
    if (this.#state === 'dead') return
    this.#state = 'dead'
    this.#deathReason = reason
    this.#gone.reject(new KernelDiedError(reason))
    const r = this.running
    this.running = null
    r?.reject(new KernelDiedError(reason))
    if (!this.#closed) {
      for (const listener of this.#listeners) {
        try {
          listener(reason)
        } catch {
          // A listener's failure is its own; the others still hear of the death.
        }
      }
    }
    void this.proc?.kill()
  }

  /**
   * A piped process in the container; its end is a death (unless shut down), told as the
   * container stopping when it did, else as `describeExit` says.
   */
  protected async spawnProcess(cmd: string[], env: Record<string, string> | undefined, describeExit: (code: number | null) => string): Promise<ProcessSession> {
    const proc = await this.engine.spawn(this.ref, { cmd, env })
    this.proc = proc
    this.stderr = new Tail()
    const tail = this.stderr
    proc.stderr.on('data', (b: Buffer) => tail.push(b))
    // A write after the process ended fails; its end is reported through wait() below.
    proc.stdin.on('error', () => {})
    void proc
      .wait()
      // Killed by a signal (or no code at all): perhaps by a container stopping, which the
      // engine reports a moment after the processes are gone.
      .then(async (code) => (await this.#containerGone(code === null || code >= 128)) ?? describeExit(code))
      .catch(async () => (await this.#containerGone(true)) ?? 'the kernel process was lost (the container engine did not answer)')
      .then((reason) => this.proc === proc && this.died(reason))
    return proc
  }

  /** Why the container no longer runs, or null when it does (asked for up to 3 s when `patient`). */
  async #containerGone(patient: boolean): Promise<string | null> {
    const deadline = Date.now() + (patient ? 3000 : 0)
    for (;;) {
      const status = await this.engine.inspect(this.ref).catch(() => null)
      if (status && !status.running) {
        if (status.oomKilled) return 'the container ran out of memory and was stopped'
        return status.state === 'missing' ? 'the container was removed' : 'the container stopped'
      }
      if (Date.now() >= deadline) return null
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }

  /** Write to the process's stdin; resolves once handed to the engine. */
  protected write(text: string): Promise<void> {
    const proc = this.proc
    if (!proc) return Promise.reject(new KernelDiedError('the kernel is not running'))
    return new Promise((resolve, reject) => proc.stdin.write(text, (err) => (err ? reject(new KernelDiedError(`the kernel is gone: ${err.message}`)) : resolve())))
  }

  /** Await `p`, or fail with `onTimeout()` after `ms`. */
  protected static within<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
    let timer: Timer | undefined
    const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(onTimeout()), ms)))
    return Promise.race([p, timeout]).finally(() => clearTimeout(timer))
  }
}

/** Run a short command in the container to its end: its exit code and output (bounded). */
export async function runToEnd(engine: ContainerEngine, ref: ContainerRef, cmd: string[], timeoutMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = await engine.spawn(ref, { cmd })
  proc.stdin.on('error', () => {})
  proc.stdin.end()
  const out = new Tail(16_384)
  const err = new Tail(16_384)
  proc.stdout.on('data', (b: Buffer) => out.push(b))
  proc.stderr.on('data', (b: Buffer) => err.push(b))
  const timer = setTimeout(() => void proc.kill(), timeoutMs)
  try {
    const code = await proc.wait()
    return { code, stdout: out.toString(), stderr: err.toString() }
  } finally {
    clearTimeout(timer)
  }
}
