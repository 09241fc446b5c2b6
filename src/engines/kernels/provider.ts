/**
 * Kernels in the running containers of a container engine (ContainerEngine.spawn): `python3`
 * where the image has Python with ipykernel and jupyter_client, `shell` wherever there is a
 * `sh`. Nothing here is Docker's: another engine with `spawn` serves the same kernels.
 */
import type { ContainerEngine, ContainerRef } from '../containers/engine.ts'
import { JupyterKernel } from './jupyter.ts'
import { KernelStartError, type KernelName, type KernelProvider, type KernelSession, type KernelStartOptions } from './kernel.ts'
import { runToEnd } from './process-kernel.ts'
import { ShellKernel } from './shell.ts'

export interface ContainerKernelOptions {
  /** Default start timeout (KernelStartOptions.startTimeoutMs wins). Default 60 s. */
  startTimeoutMs?: number
  /**
   * Longest single output a python3 kernel may hand over (one JSON line of its driver); a
   * longer one is dropped with a note in its place. Default 16 MiB. Bounding a cell's outputs
   * as a whole is the caller's.
   */
  maxMessageBytes?: number
}

/** One exec answers both questions: no `sh` at all means no kernel at all. */
const PROBE = 'python3 -c "import ipykernel, jupyter_client" >/dev/null 2>&1 && echo python3; echo shell'

export class ContainerKernels implements KernelProvider {
  readonly #startTimeoutMs: number
  readonly #maxMessageBytes: number

  constructor(
    private readonly engine: ContainerEngine,
    opts: ContainerKernelOptions = {},
  ) {
    this.#startTimeoutMs = opts.startTimeoutMs ?? 60_000
    this.#maxMessageBytes = opts.maxMessageBytes ?? 16 * 1024 * 1024
    if (!(this.#startTimeoutMs > 0)) throw new Error('startTimeoutMs must be > 0')
    if (!Number.isInteger(this.#maxMessageBytes) || this.#maxMessageBytes < 1024) throw new Error('maxMessageBytes must be an integer >= 1024')
  }

  async available(ref: ContainerRef): Promise<KernelName[]> {
    const r = await runToEnd(this.engine, ref, ['sh', '-c', PROBE])
    if (r.code !== 0) return []
    const names = r.stdout.split('\n').map((l) => l.trim())
    return (['python3', 'shell'] as const).filter((n) => names.includes(n))
  }

  async start(ref: ContainerRef, name: KernelName, opts: KernelStartOptions = {}): Promise<KernelSession> {
    const startTimeoutMs = opts.startTimeoutMs ?? this.#startTimeoutMs
    if (!(startTimeoutMs > 0)) throw new KernelStartError('startTimeoutMs must be > 0')
    switch (name) {
      case 'python3':
        return JupyterKernel.start(this.engine, ref, { env: opts.env, startTimeoutMs, maxMessageBytes: this.#maxMessageBytes })
      case 'shell':
        return ShellKernel.start(this.engine, ref, { env: opts.env, startTimeoutMs })
      default:
        throw new KernelStartError(`unknown kernel ${JSON.stringify(name satisfies never)}`)
    }
  }
}
