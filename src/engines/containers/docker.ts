/**
 * ContainerEngine on a Docker Engine, through dockerode.
 *
 * Everything a caller may choose is checked here before the engine sees it (image on the
 * allow-list, a runtime the engine has, a GPU only where there is one), and every
 * container gets the same hardened HostConfig (docker-spec.ts). Names derive from the
 * entity, so create is idempotent: two concurrent `ensure`s race on the engine's unique
 * container name, the loser gets 409 and adopts the winner's container.
 */
import Dockerode from 'dockerode'
import { isAbsolute } from 'node:path'
import { ConflictError, NotFoundError, ServiceUnavailableError, UnprocessableError } from '../../core/errors.ts'
import { mapEngineError, oomReason, statusOf } from './docker-errors.ts'
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
  type RunOptions,
  type RunResult,
  type RunSpec,
} from './engine.ts'
import { LogDecoder } from './docker-streams.ts'
import { openExec } from './docker-exec.ts'
import { awaitCreated, chunks, date, engineCall, inspectRaw, modemOptions, pause, pingTarget, refOfLabels } from './docker-io.ts'
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

/** How much container output the server reads in: per line, per tail request, per follow. */
export interface ContainerLogLimits {
  /** CONTAINER_LOG_LINE_MAX_BYTES: a longer line comes in pieces of this size (LogLine.partial). */
  lineMaxBytes: number
  /** CONTAINER_LOG_TAIL_MAX_BYTES: the most recent output `logs` returns at most. */
  tailMaxBytes: number
  /** CONTAINER_LOG_FOLLOW_MAX_BYTES: output one `followLogs` delivers before it only counts. */
  followMaxBytes: number
}

/** The defaults of ContainerLogLimits (documented with their variables in the README). */
const DEFAULT_LOG_LIMITS: ContainerLogLimits = { lineMaxBytes: 16 * 1024, tailMaxBytes: 1024 * 1024, followMaxBytes: 64 * 1024 * 1024 }

/** Bytes a line stands for in a budget: its text and, when complete, its newline. */
const lineBytes = (l: LogLine): number => Buffer.byteLength(l.line) + (l.partial ? 0 : 1)

const STATES: readonly ContainerState[] = ['created', 'running', 'paused', 'restarting', 'removing', 'exited', 'dead']

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
  private cachedInfo: { info: EngineInfo; at: number } | null = null

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
    return this.toStatus({ kind: spec.kind, entityId: spec.entityId }, info)
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
    if (info) return this.toStatus(ref, info)
    return {
      ref: { kind: ref.kind, entityId: ref.entityId },
      name,
      id: null,
      state: 'missing',
      running: false,
      exitCode: null,
      oomKilled: false,
      error: null,
      startedAt: null,
      finishedAt: null,
      ownerId: null,
      image: null,
      runtime: null,
      limits: null,
    }
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

  async logs(ref: ContainerRef, opts: { tail?: number; maxBytes?: number } = {}): Promise<LogTail> {
    const maxBytes = opts.maxBytes ?? this.logLimits.tailMaxBytes
    // As a stream even without follow: dockerode would gather the whole answer in memory, and
    // `tail` counts the engine's messages (16 KiB each at most), not bytes.
    const stream = await this.logStream(ref, { follow: false, tail: opts.tail ?? 100 })
    const decoder = new LogDecoder(true, { maxLineBytes: this.logLimits.lineMaxBytes })
    // The newest lines within the budget: the oldest leave first.
    const kept: LogLine[] = []
    let head = 0
    let bytes = 0
    let dropped = 0
    const keep = (items: Array<LogLine | LogCut>) => {
      for (const l of items) {
        if ('cut' in l) continue
        kept.push(l)
        bytes += lineBytes(l)
        while (bytes > maxBytes && head < kept.length) {
          const old = lineBytes(kept[head]!)
          bytes -= old
          dropped += old
          head++
        }
        // Compact now and then rather than shift() per line.
        if (head > 1024 && head * 2 > kept.length) {
          kept.splice(0, head)
          head = 0
        }
      }
    }
    for await (const chunk of chunks(stream)) keep(decoder.push(chunk))
    keep(decoder.end())
    if (dropped > 0) this.onLogDropped(dropped, ref.kind)
    return { lines: kept.slice(head), droppedBytes: dropped }
  }

  async *followLogs(ref: ContainerRef, opts: { tail?: number; signal?: AbortSignal; maxBytes?: number } = {}): AsyncGenerator<LogLine | LogCut> {
    const stream = await this.logStream(ref, { follow: true, tail: opts.tail ?? 100 })
    const decoder = new LogDecoder(true, { maxLineBytes: this.logLimits.lineMaxBytes, maxBytes: opts.maxBytes ?? this.logLimits.followMaxBytes })
    try {
      for await (const chunk of chunks(stream, opts.signal)) yield* decoder.push(chunk)
      yield* decoder.end()
    } finally {
      if (decoder.droppedBytes > 0) this.onLogDropped(decoder.droppedBytes, ref.kind)
    }
  }

  /** The container's log as a response stream (dockerode streams only with follow). */
  private logStream(ref: ContainerRef, opts: { follow: boolean; tail: number }): Promise<NodeJS.ReadableStream> {
    const name = containerName(ref.kind, ref.entityId)
    return engineCall(
      'other',
      () =>
        new Promise<NodeJS.ReadableStream>((resolve, reject) => {
          // dockerode types its modem as any; this is docker-modem's dial.
          ;(this.docker.modem as { dial(o: object, cb: (err: unknown, data: unknown) => void): void }).dial(
            {
              path: `/containers/${name}/logs?`,
              method: 'GET',
              isStream: true,
              statusCodes: { 200: true, 404: 'no such container', 500: 'server error' },
              options: { stdout: true, stderr: true, timestamps: true, follow: opts.follow, tail: opts.tail },
            },
            (err, data) => (err ? reject(err) : resolve(data as NodeJS.ReadableStream)),
          )
        }),
    )
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
    const cpu = s.cpu_stats
    const pre = s.precpu_stats
    const cpuDelta = (cpu?.cpu_usage?.total_usage ?? 0) - (pre?.cpu_usage?.total_usage ?? 0)
    const systemDelta = (cpu?.system_cpu_usage ?? 0) - (pre?.system_cpu_usage ?? 0)
    const onlineCpus = cpu?.online_cpus || cpu?.cpu_usage?.percpu_usage?.length || 1
    // Same formula as the docker CLI (calculateCPUPercentUnix): the container's share of all
    // CPU time in the interval, scaled to cores. Without a previous sample there is no interval.
    const cpuPercent = (pre?.system_cpu_usage ?? 0) > 0 && systemDelta > 0 && cpuDelta > 0 ? (cpuDelta / systemDelta) * onlineCpus * 100 : 0
    const mem = s.memory_stats ?? {}
    const memStats = (mem.stats ?? {}) as Record<string, number | undefined>
    // Page cache the kernel can drop is not "used" (the CLI subtracts inactive_file:
    // total_inactive_file under cgroup v1, inactive_file under v2).
    const inactive = memStats.total_inactive_file ?? memStats.inactive_file ?? 0
    const usage = mem.usage ?? 0
    const memoryUsedBytes = Math.max(0, usage - (inactive < usage ? inactive : 0))
    const memoryLimitBytes = mem.limit || configuredMemory
    return {
      running: true,
      cpuPercent: Math.round(cpuPercent * 100) / 100,
      cpuLimit,
      memoryUsedBytes,
      memoryLimitBytes,
      memoryPercent: memoryLimitBytes > 0 ? Math.round((memoryUsedBytes / memoryLimitBytes) * 10000) / 100 : 0,
      pids: s.pids_stats?.current ?? 0,
      at: date(s.read) ?? new Date(),
    }
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

  private toStatus(ref: ContainerRef, info: Dockerode.ContainerInspectInfo): ContainerStatus {
    const st = info.State
    const state = STATES.includes(st.Status as ContainerState) ? (st.Status as ContainerState) : 'dead'
    const limits = limitsOf(info.HostConfig)
    const finished = state === 'exited' || state === 'dead'
    let error: string | null = null
    if (st.OOMKilled) error = oomReason(limits?.memory)
    else if (st.Error) error = st.Error
    return {
      ref: { kind: ref.kind, entityId: ref.entityId },
      name: info.Name.replace(/^\//, ''),
      id: info.Id,
      state,
      running: st.Running,
      exitCode: finished ? st.ExitCode : null,
      oomKilled: st.OOMKilled,
      error,
      startedAt: date(st.StartedAt),
      finishedAt: finished ? date(st.FinishedAt) : null,
      ownerId: info.Config.Labels?.[LABELS.owner] ?? null,
      image: info.Config.Image ?? null,
      runtime: info.HostConfig.Runtime ?? null,
      limits,
    }
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
