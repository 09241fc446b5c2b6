/**
 * The `python3` kernel: a real ipykernel in the workstation's container, driven by
 * ./jupyter-driver.py through jupyter_client, the driver spoken to in JSON lines over a piped
 * exec (ContainerEngine.spawn). The protocol is written down at the top of the driver.
 *
 * The driver's script is passed inline (`python3 -c`), not copied into the container first: the
 * root filesystem is read-only, and a copy in /tmp would be one more exec per start, a file the
 * user's code could rewrite between the copy and the run, and something to clean up. It is
 * ~16 KB, far below the limit on a command line (128 KB for one argument on Linux).
 *
 * Everything the driver writes is read as untrusted: the user's code runs as the same user in
 * the same container and can write to the driver's stdout. Each line is bounded
 * (`maxMessageBytes`; a longer one is dropped and said so) and checked against the protocol's
 * schema before anything is handed on; a line that does not fit is ignored.
 */
import { Type as T, type Static } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { readFileSync } from 'node:fs'
import type { ContainerEngine, ContainerRef, ProcessSession } from '../containers/engine.ts'
import { KernelDiedError, KernelStartError, type NbOutput } from './kernel.ts'
import { ProcessKernel } from './process-kernel.ts'

/**
 * Longest stream text in one driver message (a longer one comes as several stream outputs,
 * which nbformat readers join): as many characters as surely fit in `maxMessageBytes`, so a
 * long print is never dropped as one oversized message. The driver writes ASCII JSON, where a
 * character takes at most 12 bytes (a surrogate pair, `\ud83d\ude00`); 1 Ki for the envelope.
 */
function maxStreamChars(maxMessageBytes: number): number {
  return Math.max(256, Math.min(1 << 20, Math.floor((maxMessageBytes - 1024) / 12)))
}

const Bundle = T.Record(T.String(), T.Unknown())
const Output = T.Union([
  T.Object({ output_type: T.Literal('stream'), name: T.Union([T.Literal('stdout'), T.Literal('stderr')]), text: T.String() }),
  T.Object({ output_type: T.Literal('execute_result'), execution_count: T.Union([T.Integer(), T.Null()]), data: Bundle, metadata: Bundle }),
  T.Object({ output_type: T.Literal('display_data'), data: Bundle, metadata: Bundle }),
  T.Object({ output_type: T.Literal('error'), ename: T.String(), evalue: T.String(), traceback: T.Array(T.String()) }),
])
const Id = T.String({ maxLength: 100 })
const DriverMessage = T.Union([
  T.Object({ type: T.Literal('ready') }),
  T.Object({ type: T.Literal('output'), id: Id, output: Output }),
  T.Object({ type: T.Literal('clear_output'), id: Id, wait: T.Boolean() }),
  T.Object({
    type: T.Literal('reply'),
    id: Id,
    status: T.Union([T.Literal('ok'), T.Literal('error'), T.Literal('aborted')]),
    execution_count: T.Union([T.Integer(), T.Null()]),
  }),
  T.Object({ type: T.Literal('died'), reason: T.String() }),
  T.Object({ type: T.Literal('fatal'), message: T.String() }),
  T.Object({ type: T.Literal('error'), message: T.String() }),
])
type DriverMessage = Static<typeof DriverMessage>
const checkMessage = TypeCompiler.Compile(DriverMessage)

let driverScript: string | undefined
/** The driver's text, read once (it ships beside this module). */
function driver(): string {
  return (driverScript ??= readFileSync(new URL('./jupyter-driver.py', import.meta.url), 'utf8'))
}

export interface JupyterKernelOptions {
  env?: Record<string, string>
  startTimeoutMs: number
  /** Longest line the driver may write (one output); a longer one is dropped with a note. */
  maxMessageBytes: number
}

/** Newline-separated JSON, each line at most `max` bytes (a longer one is skipped and counted). */
class JsonLines {
  #parts: Buffer[] = []
  #size = 0
  /** Inside a line that ran past the limit: bytes skipped so far. */
  #skipping = -1

  constructor(
    private readonly max: number,
    private readonly onLine: (value: unknown) => void,
    private readonly onTooLong: (bytes: number) => void,
  ) {}

  push(chunk: Buffer): void {
    let start = 0
    while (start < chunk.length) {
      const nl = chunk.indexOf(0x0a, start)
      const end = nl === -1 ? chunk.length : nl
      if (this.#skipping >= 0) {
        this.#skipping += end - start
      } else if (this.#size + end - start > this.max) {
        this.#skipping = this.#size + end - start
        this.#parts = []
        this.#size = 0
      } else if (end > start) {
        this.#parts.push(chunk.subarray(start, end))
        this.#size += end - start
      }
      if (nl === -1) return
      if (this.#skipping >= 0) {
        this.onTooLong(this.#skipping)
        this.#skipping = -1
      } else {
        const line = this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts, this.#size)
        this.#parts = []
        this.#size = 0
        if (line.length > 0) this.#parse(line)
      }
      start = nl + 1
    }
  }

  #parse(line: Buffer): void {
    let value: unknown
    try {
      value = JSON.parse(line.toString('utf8'))
    } catch {
      return
    }
    this.onLine(value)
  }
}

export class JupyterKernel extends ProcessKernel {
  readonly name = 'python3'
  /** Request id of the running execution. */
  #execId: string | null = null
  /** Resolved by the driver's next `ready` (start, restart). */
  #ready: PromiseWithResolvers<void> | null = null
  /** Why the driver says it ended (fatal at start, the kernel died). */
  #reason: string | null = null

  private constructor(
    engine: ContainerEngine,
    ref: ContainerRef,
    private readonly opts: JupyterKernelOptions,
  ) {
    super(engine, ref)
  }

  /** Start the driver and its kernel; KernelStartError when it does not come up. */
  static async start(engine: ContainerEngine, ref: ContainerRef, opts: JupyterKernelOptions): Promise<JupyterKernel> {
    const k = new JupyterKernel(engine, ref, opts)
    await k.#boot()
    return k
  }

  async #boot(): Promise<void> {
    this.#ready = Promise.withResolvers()
    const cmd = ['python3', '-Xfrozen_modules=off', '-c', driver(), String(maxStreamChars(this.opts.maxMessageBytes))]
    // The debugger ipykernel loads warns on every start without it (frozen modules).
    const env = { PYDEVD_DISABLE_FILE_VALIDATION: '1', ...this.opts.env }
    let proc: ProcessSession
    try {
      proc = await this.spawnProcess(cmd, env, (code) => this.#reason ?? `the kernel's driver exited with code ${code ?? 'unknown'}`)
    } catch (err) {
      throw new KernelStartError(`the python3 kernel could not start: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
    }
    const lines = new JsonLines(
      this.opts.maxMessageBytes,
      (v) => checkMessage.Check(v) && this.#message(v),
      (bytes) => this.#tooLong(bytes),
    )
    proc.stdout.on('data', (b: Buffer) => lines.push(b))
    try {
      await this.#awaitReady()
    } catch (err) {
      await this.discard()
      throw err
    }
  }

  /** The driver's next `ready`, within the start timeout; KernelStartError otherwise. */
  async #awaitReady(): Promise<void> {
    const ready = this.#ready!.promise
    const timeout = () => new KernelStartError(`the python3 kernel did not start within ${this.opts.startTimeoutMs} ms${this.#stderrNote()}`)
    try {
      await ProcessKernel.within(Promise.race([ready, this.gone]), this.opts.startTimeoutMs, timeout)
    } catch (err) {
      if (err instanceof KernelDiedError) throw new KernelStartError(`the python3 kernel could not start: ${err.message}${this.#stderrNote()}`, { cause: err })
      throw err
    } finally {
      this.#ready = null
    }
  }

  #stderrNote(): string {
    const tail = this.stderr.toString()
    return tail ? ` (its output ended with: ${tail.slice(-600)})` : ''
  }

  #message(m: DriverMessage): void {
    switch (m.type) {
      case 'ready':
        this.setState('idle')
        this.#ready?.resolve()
        return
      case 'output':
        if (m.id === this.#execId) this.output(m.output as NbOutput)
        return
      case 'clear_output':
        if (m.id === this.#execId) this.clear(m.wait)
        return
      case 'reply':
        if (m.id !== this.#execId) return
        this.#execId = null
        this.finish(m.status, m.execution_count)
        return
      case 'died':
        this.#reason = m.reason
        this.died(m.reason)
        return
      case 'fatal':
        this.#reason = m.message
        return
      case 'error':
        // A command the driver did not understand would be our own bug, and the execution it
        // concerned still ends.
        return
      default:
        m satisfies never
    }
  }

  #tooLong(bytes: number): void {
    this.output({
      output_type: 'stream',
      name: 'stderr',
      text: `[an output of ${bytes} bytes was dropped: one output may be at most ${this.opts.maxMessageBytes} bytes]\n`,
    })
  }

  protected send(code: string): Promise<void> {
    const id = crypto.randomUUID()
    this.#execId = id
    return this.write(JSON.stringify({ op: 'execute', id, code }) + '\n')
  }

  async interrupt(): Promise<void> {
    if (!this.markInterrupted()) return
    await this.write('{"op":"interrupt"}\n')
  }

  async restart(): Promise<void> {
    if (this.state() === 'dead') throw new KernelDiedError(this.deathReason ?? 'the kernel is not running')
    // The driver answers a running execution `aborted` before it restarts.
    this.markInterrupted()
    this.setState('starting')
    this.#ready = Promise.withResolvers()
    await this.write('{"op":"restart"}\n')
    try {
      await this.#awaitReady()
    } catch (err) {
      // Half restarted is no state to go on from: the kernel is dead, its process ended.
      this.died(err instanceof Error ? err.message : String(err))
      throw err
    }
  }

  protected async close(): Promise<void> {
    const proc = this.proc
    if (!proc) return
    // Asked first, so the kernel ends cleanly (its atexit handlers run); killed if it does not.
    proc.stdin.end('{"op":"shutdown"}\n')
    const ended = await ProcessKernel.within(proc.wait().then(() => true), 10_000, () => new Error('timeout')).catch(() => false)
    if (!ended) await proc.kill()
  }
}
