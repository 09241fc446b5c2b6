/**
 * What the container engine has (its info: runtimes, cores, memory, an NVIDIA runtime), cached
 * for `infoTtlMs`, and whether a container's needs fit it (checkPlacement): a refusal is a 422
 * naming each field, given before anything is recorded. A miss asks the engine again first.
 */
import type Dockerode from 'dockerode'
import { UnprocessableError } from '../../core/errors.ts'
import { engineCall } from './docker-io.ts'
import type { EngineInfo, PlacementNeeds } from './engine.ts'

/** The engine's capabilities, and the placement check against them. */
export class EngineCapabilities {
  private cachedInfo: { info: EngineInfo; at: number } | null = null

  constructor(
    private readonly docker: Dockerode,
    private readonly defaultRuntime: string,
    private readonly infoTtlMs: number,
  ) {}

  async info(): Promise<EngineInfo> {
    const raw = (await engineCall('other', () => this.docker.info())) as {
      ServerVersion?: string
      OperatingSystem?: string
      KernelVersion?: string
      NCPU?: number
      MemTotal?: number
      Runtimes?: Record<string, unknown>
      DefaultRuntime?: string
    }
    const runtimes = Object.keys(raw.Runtimes ?? {}).sort()
    const info: EngineInfo = {
      engine: 'docker',
      version: raw.ServerVersion ?? 'unknown',
      os: raw.OperatingSystem ?? 'unknown',
      kernel: raw.KernelVersion ?? 'unknown',
      cpus: raw.NCPU ?? 0,
      memoryBytes: raw.MemTotal ?? 0,
      runtimes,
      defaultRuntime: raw.DefaultRuntime ?? 'runc',
      // The NVIDIA Container Toolkit registers itself as the `nvidia` runtime.
      nvidia: runtimes.some((r) => r === 'nvidia' || r.startsWith('nvidia-')),
    }
    this.cachedInfo = { info, at: Date.now() }
    return info
  }

  /** Runtimes and GPU support change rarely; a miss asks the engine again before refusing. */
  private async capabilities(fresh = false): Promise<EngineInfo> {
    const c = this.cachedInfo
    if (!fresh && c && Date.now() - c.at < this.infoTtlMs) return c.info
    return this.info()
  }

  /**
   * Capacity is checked here, before anything is recorded: the engine itself refuses more
   * cores than it has only when the container is created (`Range of CPUs is from 0.01 to
   * 2.00`), which reached the user as a workstation gone to ERROR after a 201 (issue 14,
   * item 14), and it accepts a memory limit above the host's, which then never holds.
   */
  async checkPlacement(runtime: string | null | undefined, needs: PlacementNeeds): Promise<string> {
    const name = runtime ?? this.defaultRuntime
    let caps = await this.capabilities()
    if (placementRefusals(caps, name, needs).length > 0) caps = await this.capabilities(true)
    const refusals = placementRefusals(caps, name, needs)
    if (refusals.length === 0) return name
    if (refusals[0]!.field === 'runtime') {
      const offered = caps.runtimes.filter((r) => !r.startsWith('io.containerd.'))
      throw new UnprocessableError(`runtime ${JSON.stringify(name)} is not available on this container engine (available: ${offered.join(', ')})`, [
        { field: 'runtime', message: 'not available on this engine' },
      ])
    }
    if (refusals.length === 1 && refusals[0]!.field === 'resources.gpu') {
      throw new UnprocessableError('no GPU is available on this engine: it has no NVIDIA runtime', refusals)
    }
    throw new UnprocessableError(refusals.map((r) => `${r.field.replace('resources.', '')}: ${r.message}`).join('; '), refusals)
  }
}

const MB = 1024 * 1024

/** What `needs` asks beyond what the engine has, one detail per field (the runtime first). */
function placementRefusals(caps: EngineInfo, runtime: string, needs: PlacementNeeds): { field: string; message: string }[] {
  if (!caps.runtimes.includes(runtime)) return [{ field: 'runtime', message: 'not available on this engine' }]
  const out: { field: string; message: string }[] = []
  // 0 means the engine did not say; nothing to check against then.
  if (needs.cpu !== undefined && caps.cpus > 0 && needs.cpu > caps.cpus) {
    out.push({ field: 'resources.cpu', message: `${needs.cpu} cores requested, the container engine has ${caps.cpus}` })
  }
  const memoryMb = Math.floor(caps.memoryBytes / MB)
  if (needs.memory !== undefined && memoryMb > 0 && needs.memory > memoryMb) {
    out.push({ field: 'resources.memory', message: `${needs.memory} MB requested, the container engine has ${memoryMb} MB` })
  }
  if (needs.gpu && !caps.nvidia) out.push({ field: 'resources.gpu', message: 'no GPU is available' })
  return out
}
