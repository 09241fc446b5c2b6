/**
 * ContainerEngine on a Docker Engine, through dockerode.
 *
 * Everything a caller may choose is checked here before the engine sees it (image on the
 * allow-list, a runtime the engine has, a GPU only where there is one), and every
 * container gets the same hardened HostConfig (docker-spec.ts). Names derive from the
 * entity, so create is idempotent: two concurrent `ensure`s race on the engine's unique
 * container name, the loser gets 409 and adopts the winner's container.
 *
 * Beside it: docker-placement.ts (what the engine has, whether a container fits),
 * docker-status.ts (inspect and stats read as the interface's types), docker-logs.ts
 * (output within its budgets), docker-exec.ts (terminals), docker-process.ts (piped
 * processes), docker-run.ts (batch jobs), docker-events.ts, docker-spec.ts (names, labels,
 * the hardened HostConfig), docker-io.ts.
 */
import Dockerode from 'dockerode'
import { isAbsolute } from 'node:path'
import { ConflictError, NotFoundError, ServiceUnavailableError, UnprocessableError } from '../../core/errors.ts'
import { mapEngineError, statusOf } from './docker-errors.ts'
import { LABELS, checkRef, containerName, hardenedHostConfig, labelsFor, limitsOf, volumeName } from './docker-spec.ts'
import {
  checkEnv,
  checkImage,
  checkResources,
  ENGINE_UNAVAILABLE,
  type ContainerEngine,
  type ContainerKind,
  type ContainerResources,
  type ContainerEvent,
  type ContainerRef,
  type ContainerSpec,
  type ContainerState,
  type ContainerStats,
  type ContainerStatus,
  type ContainerSummary,
  type EngineInfo,
  type EventOptions,
  type ExecOptions,
  type ExecSession,
  type ListFilter,
  type LogCut,
  type LogLine,
  type LogTail,
  type PlacementNeeds,
  type ProcessSession,
  type RunOptions,
  type RunResult,
  type RunSpec,
  type SpawnOptions,
} from './engine.ts'
import { DEFAULT_LOG_LIMITS, DockerLogs, type ContainerLogLimits } from './docker-logs.ts'
import { EngineCapabilities } from './docker-placement.ts'
import { missingStatus, sampledStats, STATES, toStatus } from './docker-status.ts'
import { openExec } from './docker-exec.ts'
import { spawnProcess } from './docker-process.ts'
import { awaitCreated, engineCall, inspectRaw, modemOptions, pause, pingTarget, refOfLabels } from './docker-io.ts'
import { followEvents } from './docker-events.ts'
import { runJob } from './docker-run.ts'

export interface DockerEngineOptions {
  /** DOCKER_HOST: `unix:///path/docker.sock`, `tcp://host:2375`, `http(s)://host:port`; default the local socket. */
  host?: string
  /** Images containers may run (WORKSTATION_IMAGES and the like). Anything else is a 422. */
  images: readonly string[]
  /** Runtime when a spec names none (VM_RUNTIME for VMs is passed per spec). Default `runc`. */
  defaultRuntime?: string
  /** Non-root user every container runs as. Default `1000:1000`. */
  user?: string
  /** Where the entity's volume is mounted, and HOME. Default `/home/quadrax`. */
  home?: string
  /** Processes per container. Default 512. */
  pidsLimit?: number
  /** Seconds between SIGTERM and SIGKILL on stop. Default 10. */
  stopTimeoutSeconds?: number
  /** How long ping waits for an answer. Default 3000. */
  pingTimeoutMs?: number
  /** How long the engine's runtimes list is trusted before it is asked again. Default 30000. */
  infoTtlMs?: number
  /** Bounds on container output read into the server (see DEFAULT_LOG_LIMITS). */
  logs?: Partial<ContainerLogLimits>
  /** Told of output dropped past a budget (for a metric), per kind of container. */
  onLogDropped?: (bytes: number, kind: ContainerKind) => void
}

export class DockerEngine implements ContainerEngine {
  private readonly docker: Dockerode
  /** GET /_ping on the engine, as a bare fetch (see ping). */
  private readonly pingTarget: { url: string; init: RequestInit }
  private readonly images: readonly string[]
  private readonly defaultRuntime: string
  private readonly user: string
  private readonly home: string
  private readonly pidsLimit: number
  private readonly stopTimeoutSeconds: number
  private readonly pingTimeoutMs: number
  private readonly infoTtlMs: number
  private readonly logLimits: ContainerLogLimits
  private readonly onLogDropped: (bytes: number, kind: ContainerKind) => void
  private readonly capabilities: EngineCapabilities
  private readonly logReader: DockerLogs

  constructor(opts: DockerEngineOptions) {
    this.images = [...opts.images]
    this.defaultRuntime = opts.defaultRuntime ?? 'runc'
    this.user = opts.user ?? '1000:1000'
    this.home = opts.home ?? '/home/quadrax'
    this.pidsLimit = opts.pidsLimit ?? 512
    this.stopTimeoutSeconds = opts.stopTimeoutSeconds ?? 10
    this.pingTimeoutMs = opts.pingTimeoutMs ?? 3000
    this.infoTtlMs = opts.infoTtlMs ?? 30_000
    this.logLimits = { ...DEFAULT_LOG_LIMITS, ...opts.logs }
    this.onLogDropped = opts.onLogDropped ?? (() => {})
    if (this.images.length === 0) throw new Error('images must list at least one allowed image')
    if (this.pidsLimit <= 0) throw new Error('pidsLimit must be > 0')
    if (this.stopTimeoutSeconds < 0) throw new Error('stopTimeoutSeconds must be >= 0')
    if (/^(0|root)(:|$)/.test(this.user)) throw new Error('user must not be root: containers always run as a non-root user')
    if (!isAbsolute(this.home)) throw new Error('home must be an absolute path')
    for (const [k, v] of Object.entries(this.logLimits)) if (!Number.isInteger(v) || v < 16) throw new Error(`logs.${k} must be an integer >= 16`)
    const modem = modemOptions(opts.host)
    this.docker = new Dockerode(modem)
    this.pingTarget = pingTarget(modem)
    this.capabilities = new EngineCapabilities(this.docker, this.defaultRuntime, this.infoTtlMs)
    this.logReader = new DockerLogs(this.docker, this.logLimits, this.onLogDropped)
  }

  // ---- engine -------------------------------------------------------------------------

  /**
   * A bare fetch of /_ping rather than dockerode's: /health calls it on every probe, and
   * dockerode's request machinery made a health check cost 60 % more CPU (bench:http,
   * GET /health with DOCKER_HOST set: 320 vs 198 µs per request).
   */
  async ping(): Promise<void> {
    const { url, init } = this.pingTarget
    const res = await engineCall('other', () => fetch(url, { ...init, signal: AbortSignal.timeout(this.pingTimeoutMs) }))
    await res.body?.cancel()
    if (!res.ok) throw new ServiceUnavailableError(`${ENGINE_UNAVAILABLE}: the engine answered ${res.status} to a ping`)
  }

  info(): Promise<EngineInfo> {
    return this.capabilities.info()
  }

  /**
   * Capacity is checked here, before anything is recorded: the engine itself refuses more
   * cores than it has only when the container is created (`Range of CPUs is from 0.01 to
   * 2.00`), which reached the user as a workstation gone to ERROR after a 201 (issue 14,
   * item 14), and it accepts a memory limit above the host's, which then never holds.
   */
  checkPlacement(runtime: string | null | undefined, needs: PlacementNeeds): Promise<string> {
    return this.capabilities.checkPlacement(runtime, needs)
  }

  // ---- lifecycle ----------------------------------------------------------------------

  async ensure(spec: ContainerSpec): Promise<ContainerStatus> {
    checkRef(spec.kind, spec.entityId)
    const resources = checkResources(spec.resources)
    checkImage(spec.image, this.images)
    const env = checkEnv(spec.env)
    const runtime = await this.checkPlacement(spec.runtime, resources)
    const name = containerName(spec.kind, spec.entityId)

    const existing = await inspectRaw(this.docker, name)
    if (existing) return this.adopt(existing, spec)

    const labels = labelsFor(spec.kind, spec.entityId, spec.ownerId)
    const volume = volumeName(spec.kind, spec.entityId)
    // Creating a volume that exists returns it unchanged, so concurrent ensures agree.
    await engineCall('create', () => this.docker.createVolume({ Name: volume, Labels: labels }))
    try {
      await this.docker.createContainer({
        name,
        Image: spec.image,
        ...(spec.command ? { Cmd: spec.command } : {}),
        Env: [`HOME=${this.home}`, ...env],
        WorkingDir: this.home,
        User: this.user,
        Labels: labels,
        Tty: false,
        OpenStdin: false,
        NetworkDisabled: true,
        StopTimeout: this.stopTimeoutSeconds,
        HostConfig: hardenedHostConfig({
          resources,
          runtime,
          pidsLimit: this.pidsLimit,
          mounts: [{ Type: 'volume', Source: volume, Target: this.home, ReadOnly: false }],
        }),
      })
    } catch (err) {
      // 409: another ensure (this node or another) created it first; adopt theirs.
      if (statusOf(err) !== 409) throw mapEngineError(err, 'create', { image: spec.image })
    }
    return this.adopt(await awaitCreated(this.docker, name), spec)
  }

  /** A container with our name must also carry our labels; anything else is not ours to use. */
  private adopt(info: Dockerode.ContainerInspectInfo, spec: ContainerSpec): ContainerStatus {
    const l = info.Config.Labels ?? {}
    if (l[LABELS.entity] !== spec.entityId || l[LABELS.kind] !== spec.kind || l[LABELS.owner] !== spec.ownerId) {
      throw new ConflictError(`a container named ${info.Name.replace(/^\//, '')} exists but does not belong to this ${spec.kind}`)
    }
    return toStatus({ kind: spec.kind, entityId: spec.entityId }, info)
  }

  async start(ref: ContainerRef): Promise<ContainerStatus> {
    const c = this.container(ref)
    try {
      await c.start()
    } catch (err) {
      // 304: already running, which is what the caller wants.
      if (statusOf(err) !== 304) throw mapEngineError(err, 'start')
    }
    return this.inspect(ref)
  }

  async stop(ref: ContainerRef, opts: { timeoutSeconds?: number } = {}): Promise<ContainerStatus> {
    const c = this.container(ref)
    try {
      await c.stop({ t: opts.timeoutSeconds ?? this.stopTimeoutSeconds })
    } catch (err) {
      const s = statusOf(err)
      // 304: not running; 404: gone. Either way it is stopped, and inspect says which.
      if (s !== 304 && s !== 404) throw mapEngineError(err, 'stop')
    }
    return this.inspect(ref)
  }

  async restart(ref: ContainerRef, opts: { timeoutSeconds?: number } = {}): Promise<ContainerStatus> {
    await engineCall('start', () => this.container(ref).restart({ t: opts.timeoutSeconds ?? this.stopTimeoutSeconds }))
    return this.inspect(ref)
  }

  async remove(ref: ContainerRef, opts: { keepVolume?: boolean } = {}): Promise<void> {
    try {
      await this.container(ref).remove({ force: true, v: true })
    } catch (err) {
      const s = statusOf(err)
      // 404: already gone; 409: a removal is already in progress (the volume loop waits for it).
      if (s !== 404 && s !== 409) throw mapEngineError(err, 'other')
    }
    if (opts.keepVolume) return
    const volume = this.docker.getVolume(volumeName(ref.kind, ref.entityId))
    // The volume stays "in use" (409) until the container's removal has finished.
    const deadline = Date.now() + 30_000
    for (;;) {
      try {
        await volume.remove()
        return
      } catch (err) {
        const s = statusOf(err)
        if (s === 404) return
        if (s !== 409 || Date.now() > deadline) throw mapEngineError(err, 'other')
      }
      await pause(100)
    }
  }

  async inspect(ref: ContainerRef): Promise<ContainerStatus> {
    const name = containerName(ref.kind, ref.entityId)
    const info = await inspectRaw(this.docker, name)
    if (info) return toStatus(ref, info)
    return missingStatus(ref, name)
  }

  async updateLimits(ref: ContainerRef, resources: ContainerResources): Promise<ContainerStatus> {
    const r = checkResources(resources)
    const name = containerName(ref.kind, ref.entityId)
    const info = await inspectRaw(this.docker, name)
    if (!info) throw new NotFoundError('Container')
    const current = limitsOf(info.HostConfig)
    if (current && Boolean(r.gpu) !== current.gpu) {
      // DeviceRequests cannot be updated in place; the container would have to be recreated.
      throw new UnprocessableError('gpu cannot be changed on an existing container; remove and recreate it', [
        { field: 'resources.gpu', message: 'cannot change on an existing container' },
      ])
    }
    await this.checkPlacement(info.HostConfig.Runtime, r)
    const memory = r.memory * 1024 * 1024
    await engineCall('update', () =>
      this.docker.getContainer(name).update({ Memory: memory, MemorySwap: memory, NanoCpus: Math.round(r.cpu * 1e9) }),
    )
    return this.inspect(ref)
  }

  // ---- observation --------------------------------------------------------------------

  logs(ref: ContainerRef, opts: { tail?: number; maxBytes?: number } = {}): Promise<LogTail> {
    return this.logReader.logs(ref, opts)
  }

  followLogs(ref: ContainerRef, opts: { tail?: number; signal?: AbortSignal; maxBytes?: number } = {}): AsyncGenerator<LogLine | LogCut> {
    return this.logReader.followLogs(ref, opts)
  }

  async stats(ref: ContainerRef): Promise<ContainerStats> {
    const name = containerName(ref.kind, ref.entityId)
    const info = await inspectRaw(this.docker, name)
    if (!info) throw new NotFoundError('Container')
    const cpuLimit = (info.HostConfig.NanoCpus ?? 0) / 1e9
    const configuredMemory = info.HostConfig.Memory ?? 0
    if (!info.State.Running) {
      return { running: false, cpuPercent: 0, cpuLimit, memoryUsedBytes: 0, memoryLimitBytes: configuredMemory, memoryPercent: 0, pids: 0, at: new Date() }
    }
    // stream=false without one-shot: the engine samples twice, so precpu_stats is filled
    // and the CPU delta below covers a real interval.
    const s = await engineCall('other', () => this.docker.getContainer(name).stats({ stream: false }))
    return sampledStats(s, cpuLimit, configuredMemory)
  }

  async list(filter: ListFilter = {}): Promise<ContainerSummary[]> {
    const label = [LABELS.entity as string]
    if (filter.ownerId) label.push(`${LABELS.owner}=${filter.ownerId}`)
    if (filter.kind) label.push(`${LABELS.kind}=${filter.kind}`)
    if (filter.entityId) label.push(`${LABELS.entity}=${filter.entityId}`)
    const rows = await engineCall('other', () => this.docker.listContainers({ all: true, filters: { label } }))
    const out: ContainerSummary[] = []
    for (const row of rows) {
      const ref = refOfLabels(row.Labels)
      if (!ref) continue
      out.push({
        ref,
        ownerId: row.Labels[LABELS.owner] ?? '',
        id: row.Id,
        name: (row.Names[0] ?? '').replace(/^\//, ''),
        state: STATES.includes(row.State as ContainerState) ? (row.State as ContainerState) : 'dead',
        image: row.Image,
      })
    }
    return out
  }

  events(opts: EventOptions = {}): AsyncIterable<ContainerEvent> {
    // Taken now, not when iteration begins: an event between this call and the first
    // next() is replayed by the engine instead of lost.
    const since = opts.since ?? new Date()
    return followEvents(this.docker, since, opts.signal)
  }

  // ---- terminals ----------------------------------------------------------------------

  exec(ref: ContainerRef, opts: ExecOptions): Promise<ExecSession> {
    return openExec(this.container(ref), opts)
  }

  spawn(ref: ContainerRef, opts: SpawnOptions): Promise<ProcessSession> {
    return spawnProcess(this.container(ref), opts)
  }

  // ---- batch jobs ---------------------------------------------------------------------

  run(spec: RunSpec, opts: RunOptions = {}): Promise<RunResult> {
    const job = {
      docker: this.docker,
      images: this.images,
      user: this.user,
      stopTimeoutSeconds: this.stopTimeoutSeconds,
      pidsLimit: this.pidsLimit,
      maxLineBytes: this.logLimits.lineMaxBytes,
      onLogDropped: (bytes: number) => this.onLogDropped(bytes, 'run'),
      checkPlacement: (runtime: string | null | undefined, needs: PlacementNeeds) => this.checkPlacement(runtime, needs),
      remove: (ref: ContainerRef, o?: { keepVolume?: boolean }) => this.remove(ref, o),
    }
    return runJob(job, spec, opts)
  }

  // ---- helpers ------------------------------------------------------------------------

  private container(ref: ContainerRef): Dockerode.Container {
    return this.docker.getContainer(containerName(ref.kind, ref.entityId))
  }

}
