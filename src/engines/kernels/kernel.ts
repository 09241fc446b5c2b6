/**
 * Kernels as the CodeSheet actor sees them: a process inside a workstation's running
 * container that keeps state between executions and answers each with nbformat 4 outputs.
 *
 * - `python3`: a real ipykernel, driven through `jupyter_client` by a small driver the
 *   project ships (./jupyter-driver.py), started with a piped (non-TTY) `docker exec` and
 *   speaking JSON lines over its stdin/stdout. The container keeps no network: the kernel's
 *   ZeroMQ sockets are on the container's loopback, reached only by the driver.
 * - `shell`: a persistent `sh` (images without Python, e.g. busybox) whose variables and
 *   current directory survive between executions.
 *
 * Contract: one execution at a time per session (the caller, the CodeSheet actor, queues
 * them); `execute` resolves when the kernel finished that execution, after every output of
 * it was handed to `onOutput`, in the order the kernel produced them. `interrupt` ends the
 * running execution (KeyboardInterrupt in Python; SIGINT to the running command in the
 * shell) and leaves the kernel and its state alive. A kernel that dies (process exit,
 * container stopped, out of memory) rejects the running `execute` with a KernelDiedError,
 * calls the `onDeath` listeners once, and reports `dead`; it is not restarted here.
 */
import type { ContainerRef } from '../containers/engine.ts'

export type KernelName = 'python3' | 'shell'

/** As Jupyter reports it; `dead` once the process is gone. */
export type KernelState = 'starting' | 'idle' | 'busy' | 'dead'

/** A MIME bundle: `text/plain` → string, `image/png` → base64 string, `application/json` → any. */
type MimeBundle = Record<string, unknown>

/** One nbformat 4 output object (https://nbformat.readthedocs.io/en/latest/format_description.html). */
export type NbOutput =
  | { output_type: 'stream'; name: 'stdout' | 'stderr'; text: string }
  | { output_type: 'execute_result'; execution_count: number | null; data: MimeBundle; metadata: Record<string, unknown> }
  | { output_type: 'display_data'; data: MimeBundle; metadata: Record<string, unknown> }
  | { output_type: 'error'; ename: string; evalue: string; traceback: string[] }

export interface ExecuteReply {
  /** `error`: the code raised (an `error` output was given); `aborted`: interrupted or timed out. */
  status: 'ok' | 'error' | 'aborted'
  /** The kernel's execution counter for this execution (null for the shell kernel's aborted ones). */
  executionCount: number | null
}

export interface ExecuteOptions {
  /** Called for every output, in order, before `execute` resolves. */
  onOutput: (output: NbOutput) => void
  /** Abort to interrupt this execution (as `interrupt()`); it then resolves with `aborted`. */
  signal?: AbortSignal
  /**
   * `IPython.display.clear_output(wait)`: the outputs given so far are to be cleared (with
   * `wait`, only when the next output comes, so a redrawn progress display does not flicker).
   * Without it the request is ignored and outputs accumulate, as in a frontend that lacks it.
   */
  onClear?: (wait: boolean) => void
}

export interface KernelSession {
  readonly name: KernelName
  state(): KernelState
  execute(code: string, opts: ExecuteOptions): Promise<ExecuteReply>
  /** Interrupt the running execution, if any; the kernel stays alive with its state. */
  interrupt(): Promise<void>
  /**
   * A fresh kernel process in the same container: state cleared, execution count back to 0. A
   * running execution ends `aborted`. A dead kernel is not restarted (KernelDiedError): start a
   * new session.
   */
  restart(): Promise<void>
  /** End the kernel and its driver; idempotent. */
  shutdown(): Promise<void>
  /** Called once when the kernel dies on its own (not after shutdown()), with a reason. */
  onDeath(listener: (reason: string) => void): void
}

export interface KernelStartOptions {
  /** Environment for the kernel process (e.g. PYDEVD_DISABLE_FILE_VALIDATION). */
  env?: Record<string, string>
  /** Give up starting after this long (KernelStartError). Default 60 s. */
  startTimeoutMs?: number
}

/** Starts kernels in running containers of the container engine. */
export interface KernelProvider {
  /** Which kernels the container's image can run (`python3` needs python3 with ipykernel and jupyter_client). */
  available(ref: ContainerRef): Promise<KernelName[]>
  /** Start a kernel in the running container `ref`; rejects with KernelStartError when it cannot. */
  start(ref: ContainerRef, name: KernelName, opts?: KernelStartOptions): Promise<KernelSession>
}

/** The kernel could not be started (python3 without ipykernel, container not running, timeout). */
export class KernelStartError extends Error {
  override name = 'KernelStartError'
}

/** The kernel died while an execution ran (or before it could start). */
export class KernelDiedError extends Error {
  override name = 'KernelDiedError'
}
