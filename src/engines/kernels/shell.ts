/**
 * The `shell` kernel: one persistent `sh` in the container (busybox's in images without
 * Python), fed over a piped exec, whose variables and current directory survive between
 * executions.
 *
 * Each execution is one line on the shell's stdin:
 *
 *   command eval '<code>' </dev/null; __quadrax_status=$?; printf '\n%s %d\n' <marker> "$__quadrax_status" >&8; … >&9
 *
 * - `eval` runs the code in the shell itself, so `cd` and assignments stay. The code is one
 *   single-quoted word (a quote inside it is written '\''), so nothing in it, an unclosed
 *   quote or an `if` without `fi` included, can swallow what follows it on the line.
 * - `command` strips eval of its special-builtin status: a syntax error or an assignment to a
 *   readonly variable in the code is then an error status (2), not the end of a
 *   non-interactive shell (POSIX, "Consequences of Shell Errors").
 * - stdin from /dev/null: a command that reads its input (`cat`, `read`) gets end of file
 *   instead of the lines meant for the shell.
 * - The end marker (random per execution, unknown to the code) with the exit status is written
 *   on both outputs: once both markers are read, everything the code wrote to either has
 *   arrived. They go to copies of stdout and stderr made at start (fds 8 and 9), so code that
 *   redirects its own outputs (`exec >/dev/null`) does not hide them.
 *
 * Interrupt sends SIGINT to every process under the shell (found through /proc), not to the
 * shell itself, which would end it and its state. The commands after the interrupted one
 * still run, as in a script, and the execution ends `aborted`; a loop that runs inside the
 * shell (`while true; do …; done`) goes on after its current command is interrupted, and
 * only a restart ends it.
 */
import { StringDecoder } from 'node:string_decoder'
import type { ContainerEngine, ContainerRef, ProcessSession } from '../containers/engine.ts'
import { KernelDiedError, KernelStartError } from './kernel.ts'
import { ProcessKernel, runToEnd } from './process-kernel.ts'

/** SIGINT to every descendant of the process $1 (but not to $1). */
const INTERRUPT_SCRIPT = `root=$1; pids=" $root "; changed=1
while [ $changed = 1 ]; do changed=0
  for s in /proc/[0-9]*/stat; do
    read -r line < "$s" 2>/dev/null || continue
    pid=\${line%% *}; rest=\${line##*) }; set -- $rest
    case "$pids" in *" $2 "*) case "$pids" in *" $pid "*) ;; *) pids="$pids$pid "; changed=1;; esac;; esac
  done
done
for p in $pids; do [ "$p" = "$root" ] || kill -INT "$p" 2>/dev/null; done; true`

/** A word the shell reads back as exactly `text`. */
function quote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`
}

function endLine(marker: string, status: string): string {
  return `printf '\\n%s %d\\n' ${marker} "${status}" >&8; printf '\\n%s %d\\n' ${marker} "${status}" >&9\n`
}

/**
 * One output of the shell: text up to this execution's end marker, handed on as it comes.
 * Only a tail that may be the start of the marker is held back (usually a final newline).
 */
class MarkerScanner {
  #text = new StringDecoder('utf8')
  #held: Buffer = Buffer.alloc(0)
  #marker: Buffer | null = null
  /** The number after the marker, once it was read. */
  value: number | null = null

  expect(marker: string): void {
    this.#marker = Buffer.from(`\n${marker} `)
    this.#held = Buffer.alloc(0)
    this.#text = new StringDecoder('utf8')
    this.value = null
  }

  get done(): boolean {
    return this.value !== null
  }

  /** Text to hand on from this chunk ('' when none). */
  push(chunk: Buffer): string {
    const marker = this.#marker
    // Between executions (a background job's late output): nobody to give it to.
    if (!marker || this.value !== null) return ''
    const buf = this.#held.length ? Buffer.concat([this.#held, chunk]) : chunk
    const at = buf.indexOf(marker)
    if (at >= 0) {
      const nl = buf.indexOf(0x0a, at + marker.length)
      if (nl === -1) {
        this.#held = Buffer.from(buf.subarray(at))
        return this.#text.write(buf.subarray(0, at))
      }
      this.value = Number.parseInt(buf.toString('latin1', at + marker.length, nl), 10)
      this.#held = Buffer.alloc(0)
      return this.#text.write(buf.subarray(0, at)) + this.#text.end()
    }
    const keep = heldTail(buf, marker)
    this.#held = Buffer.from(buf.subarray(buf.length - keep))
    return this.#text.write(buf.subarray(0, buf.length - keep))
  }
}

/** Length of the longest end of `buf` that is a beginning of `marker` (which starts with \n). */
function heldTail(buf: Buffer, marker: Buffer): number {
  for (let i = Math.max(0, buf.length - marker.length + 1); i < buf.length; i++) {
    if (buf[i] === 0x0a && marker.subarray(0, buf.length - i).equals(buf.subarray(i))) return buf.length - i
  }
  return 0
}

export interface ShellKernelOptions {
  env?: Record<string, string>
  startTimeoutMs: number
}

export class ShellKernel extends ProcessKernel {
  readonly name = 'shell'
  readonly #out = new MarkerScanner()
  readonly #err = new MarkerScanner()
  /** The shell's pid inside the container (interrupt signals what runs under it). */
  #pid: number | null = null
  #count = 0
  /** Settled when both markers of the current line are read. */
  #line: PromiseWithResolvers<number> | null = null
  /** The current line is an execution (not the start handshake). */
  #executing = false

  private constructor(
    engine: ContainerEngine,
    ref: ContainerRef,
    private readonly opts: ShellKernelOptions,
  ) {
    super(engine, ref)
  }

  static async start(engine: ContainerEngine, ref: ContainerRef, opts: ShellKernelOptions): Promise<ShellKernel> {
    const k = new ShellKernel(engine, ref, opts)
    try {
      await k.#boot()
    } catch (err) {
      await k.discard()
      if (err instanceof KernelStartError) throw err
      throw new KernelStartError(`the shell kernel could not start: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
    }
    return k
  }

  async #boot(): Promise<void> {
    const proc = await this.spawnProcess(['sh'], this.opts.env, (code) => `the shell exited with code ${code ?? 'unknown'}`)
    proc.stdout.on('data', (b: Buffer) => proc === this.proc && this.#chunk('stdout', b))
    proc.stderr.on('data', (b: Buffer) => proc === this.proc && this.#chunk('stderr', b))
    // The handshake is a line like any other, its "status" the shell's pid.
    const marker = this.#expect(false)
    const timeout = () => new KernelStartError(`the shell did not start within ${this.opts.startTimeoutMs} ms${this.#stderrNote()}`)
    const pid = this.#line!.promise
    await this.write(`exec 8>&1 9>&2; ${endLine(marker, '$$')}`)
    try {
      this.#pid = await ProcessKernel.within(Promise.race([pid, this.gone]), this.opts.startTimeoutMs, timeout)
    } catch (err) {
      if (err instanceof KernelDiedError) throw new KernelStartError(`the shell kernel could not start: ${err.message}${this.#stderrNote()}`, { cause: err })
      throw err
    }
    this.#count = 0
    this.setState('idle')
  }

  #stderrNote(): string {
    const tail = this.stderr.toString()
    return tail ? ` (it wrote: ${tail.slice(-600)})` : ''
  }

  /** A new line's marker; its promise settles when both outputs reached it. */
  #expect(executing: boolean): string {
    const marker = `__quadrax_end_${crypto.randomUUID().replaceAll('-', '')}`
    this.#out.expect(marker)
    this.#err.expect(marker)
    this.#executing = executing
    this.#line = Promise.withResolvers()
    this.#line.promise.catch(() => {})
    return marker
  }

  #chunk(name: 'stdout' | 'stderr', chunk: Buffer): void {
    const scanner = name === 'stdout' ? this.#out : this.#err
    const text = scanner.push(chunk)
    if (text && this.#executing) this.output({ output_type: 'stream', name, text })
    if (this.#line && this.#out.done && this.#err.done) {
      const line = this.#line
      this.#line = null
      line.resolve(this.#out.value!)
    }
  }

  protected async send(code: string): Promise<void> {
    const n = ++this.#count
    const marker = this.#expect(true)
    const line = this.#line!.promise
    void line.then((status) => {
      if (!this.running) return
      if (status !== 0) this.output({ output_type: 'error', ename: 'ExitCode', evalue: String(status), traceback: [`ExitCode: ${status}`] })
      // Interrupted is `aborted` even when the commands after the interrupted one succeeded.
      if (this.running.interrupted) this.finish('aborted', null)
      else this.finish(status === 0 ? 'ok' : 'error', n)
    })
    await this.write(`command eval ${quote(code)} </dev/null; __quadrax_status=$?; ${endLine(marker, '$__quadrax_status')}`)
  }

  async interrupt(): Promise<void> {
    if (!this.markInterrupted() || this.#pid === null) return
    await runToEnd(this.engine, this.ref, ['sh', '-c', INTERRUPT_SCRIPT, 'sh', String(this.#pid)], 10_000)
  }

  async restart(): Promise<void> {
    if (this.state() === 'dead') throw new KernelDiedError(this.deathReason ?? 'the kernel is not running')
    this.markInterrupted()
    this.finish('aborted', null)
    this.setState('starting')
    const old = this.proc
    // Unhooked first: the old shell's end is not this kernel's death.
    this.proc = null
    this.#line = null
    await old?.kill()
    try {
      await this.#boot()
    } catch (err) {
      this.died(err instanceof Error ? err.message : String(err))
      throw err
    }
  }

  protected async close(): Promise<void> {
    const proc: ProcessSession | null = this.proc
    // Every process of the session goes, background jobs the code started included.
    await proc?.kill()
  }
}
