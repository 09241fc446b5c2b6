/**
 * ContainerEngine on a Docker Engine, through dockerode.
 *
 * Everything a caller may choose is checked here before the engine sees it (image on the
 * allow-list, a runtime the engine has, a GPU only where there is one), and every
 * container gets the same hardened HostConfig (container-spec.ts). Names derive from the
 * entity, so create is idempotent: two concurrent `ensure`s race on the engine's unique
 * container name, the loser gets 409 and adopts the winner's container.
 */
import Dockerode from 'dockerode'
import { isAbsolute, normalize } from 'node:path'
import type { Duplex, Readable } from 'node:stream'
import { ConflictError, NotFoundError, ServiceUnavailableError, UnprocessableError } from '../../core/errors.ts'
import { mapEngineError, oomReason, statusOf, type EngineOperation } from './docker-errors.ts'
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
  type ContainerEventAction,
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
  type LogLine,
  type RunOptions,
  type RunResult,
  type RunSpec,
} from './engine.ts'
import { JsonLineDecoder, LogDecoder } from './docker-streams.ts'

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
}

const NEVER = '0001-01-01T00:00:00Z'
const EVENT_ACTIONS: readonly ContainerEventAction[] = ['start', 'die', 'stop', 'destroy', 'oom']
const STATES: readonly ContainerState[] = ['created', 'running', 'paused', 'restarting', 'removing', 'exited', 'dead']

function modemOptions(host: string | undefined): Dockerode.DockerOptions {
  if (!host) return { socketPath: '/var/run/docker.sock' }
  let url: URL
  try {
    url = new URL(host)
  } catch {
    throw new Error(`DOCKER_HOST=${host} is not a URL: expected unix:///path/docker.sock or tcp://host:port`)
  }
  switch (url.protocol) {
    case 'unix:':
      return { socketPath: decodeURIComponent(url.pathname) }
    case 'tcp:':
    case 'http:':
      return { host: url.hostname, port: Number(url.port || 2375), protocol: 'http' }
    case 'https:':
      return { host: url.hostname, port: Number(url.port || 2376), protocol: 'https' }
    default:
      throw new Error(`DOCKER_HOST=${host}: unsupported scheme ${url.protocol} (expected unix, tcp, http or https)`)
  }
}

function date(text: string | undefined): Date | null {
  if (!text || text.startsWith('0001-')) return null
  const d = new Date(text)
  return Number.isNaN(d.getTime()) ? null : d
}

function refOfLabels(labels: Record<string, string> | undefined): ContainerRef | null {
  const kind = labels?.[LABELS.kind]
  const entityId = labels?.[LABELS.entity]
  if (!kind || !entityId || !['workstation', 'vm', 'run'].includes(kind)) return null
  return { kind: kind as ContainerKind, entityId }
}

/** Docker's `since` takes `seconds.nanoseconds`; a plain fraction would be read as nanoseconds. */
function dockerTime(d: Date): string {
  const ms = d.getTime()
  return `${Math.floor(ms / 1000)}.${String((ms % 1000) * 1_000_000).padStart(9, '0')}`
}

/** Chunks of a response stream until it ends or `signal` aborts; always destroys it after. */
async function* chunks(stream: NodeJS.ReadableStream, signal?: AbortSignal): AsyncGenerator<Buffer> {
  const readable = stream as Readable
  const onAbort = () => readable.destroy()
  if (signal?.aborted) {
    readable.destroy()
    return
  }
  signal?.addEventListener('abort', onAbort, { once: true })
  try {
    for await (const chunk of readable) yield Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string)
  } catch (err) {
    if (signal?.aborted) return
    throw mapEngineError(err, 'other')
  } finally {
    signal?.removeEventListener('abort', onAbort)
    readable.destroy()
  }
}

/** Paces the bounded polls below (volume still in use, exit code not yet recorded). */
function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

export class DockerEngine implements ContainerEngine {
  private readonly docker: Dockerode
  private readonly images: readonly string[]
  private readonly defaultRuntime: string
  private readonly user: string
  private readonly home: string
  private readonly pidsLimit: number
  private readonly stopTimeoutSeconds: number
  private readonly pingTimeoutMs: number
  private readonly infoTtlMs: number
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
    if (this.images.length === 0) throw new Error('images must list at least one allowed image')
    if (this.pidsLimit <= 0) throw new Error('pidsLimit must be > 0')
    if (this.stopTimeoutSeconds < 0) throw new Error('stopTimeoutSeconds must be >= 0')
    if (/^(0|root)(:|$)/.test(this.user)) throw new Error('user must not be root: containers always run as a non-root user')
    if (!isAbsolute(this.home)) throw new Error('home must be an absolute path')
    this.docker = new Dockerode(modemOptions(opts.host))
  }

  // ---- engine -------------------------------------------------------------------------

  async ping(): Promise<void> {
    await this.call('other', () =>
      // @ts-expect-error dockerode's ping takes { abortSignal } (lib/docker.js); its typings only list a callback
      this.docker.ping({ abortSignal: AbortSignal.timeout(this.pingTimeoutMs) }),
    )
  }

  async info(): Promise<EngineInfo> {
    const raw = (await this.call('other', () => this.docker.info())) as {
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

  async checkPlacement(runtime: string | null | undefined, gpu: boolean): Promise<string> {
    const name = runtime ?? this.defaultRuntime
    let caps = await this.capabilities()
    if (!caps.runtimes.includes(name) || (gpu && !caps.nvidia)) caps = await this.capabilities(true)
    if (!caps.runtimes.includes(name)) {
      const offered = caps.runtimes.filter((r) => !r.startsWith('io.containerd.'))
      throw new UnprocessableError(`runtime ${JSON.stringify(name)} is not available on this container engine (available: ${offered.join(', ')})`, [
        { field: 'runtime', message: 'not available on this engine' },
      ])
    }
    if (gpu && !caps.nvidia) {
      throw new UnprocessableError('no GPU is available on this engine: it has no NVIDIA runtime', [{ field: 'resources.gpu', message: 'no GPU is available' }])
    }
    return name
  }

  // ---- lifecycle ----------------------------------------------------------------------

  async ensure(spec: ContainerSpec): Promise<ContainerStatus> {
    checkRef(spec.kind, spec.entityId)
    const resources = checkResources(spec.resources)
    checkImage(spec.image, this.images)
    const env = checkEnv(spec.env)
    const runtime = await this.checkPlacement(spec.runtime, resources.gpu ?? false)
    const name = containerName(spec.kind, spec.entityId)

    const existing = await this.inspectRaw(name)
    if (existing) return this.adopt(existing, spec)

    const labels = labelsFor(spec.kind, spec.entityId, spec.ownerId)
    const volume = volumeName(spec.kind, spec.entityId)
    // Creating a volume that exists returns it unchanged, so concurrent ensures agree.
    await this.call('create', () => this.docker.createVolume({ Name: volume, Labels: labels }))
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
    return this.adopt(await this.awaitCreated(name), spec)
  }

  /**
   * Inspect a container that was just created, by us or by a concurrent create that won the
   * name: the engine reserves the name (our 409) a moment before the winner's container can
   * be inspected, so a 404 right then is waited out, boundedly.
   */
  private async awaitCreated(name: string): Promise<Dockerode.ContainerInspectInfo> {
    const deadline = Date.now() + 15_000
    for (;;) {
      const info = await this.inspectRaw(name)
      if (info) return info
      if (Date.now() > deadline) throw new ServiceUnavailableError(`${ENGINE_UNAVAILABLE}: container ${name} did not appear after it was created`)
      await pause(20)
    }
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
    await this.call('start', () => this.container(ref).restart({ t: opts.timeoutSeconds ?? this.stopTimeoutSeconds }))
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
    const info = await this.inspectRaw(name)
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
    const info = await this.inspectRaw(name)
    if (!info) throw new NotFoundError('Container')
    const current = limitsOf(info.HostConfig)
    if (current && Boolean(r.gpu) !== current.gpu) {
      // DeviceRequests cannot be updated in place; the container would have to be recreated.
      throw new UnprocessableError('gpu cannot be changed on an existing container; remove and recreate it', [
        { field: 'resources.gpu', message: 'cannot change on an existing container' },
      ])
    }
    if (r.gpu) await this.checkPlacement(info.HostConfig.Runtime, true)
    const memory = r.memory * 1024 * 1024
    await this.call('update', () =>
      this.docker.getContainer(name).update({ Memory: memory, MemorySwap: memory, NanoCpus: Math.round(r.cpu * 1e9) }),
    )
    return this.inspect(ref)
  }

  // ---- observation --------------------------------------------------------------------

  async logs(ref: ContainerRef, opts: { tail?: number } = {}): Promise<LogLine[]> {
    const buf = await this.call('other', () =>
      this.container(ref).logs({ stdout: true, stderr: true, timestamps: true, follow: false, tail: opts.tail ?? 100 }),
    )
    const decoder = new LogDecoder(true)
    return [...decoder.push(Buffer.isBuffer(buf) ? buf : Buffer.from(buf as unknown as string)), ...decoder.end()]
  }

  async *followLogs(ref: ContainerRef, opts: { tail?: number; signal?: AbortSignal } = {}): AsyncGenerator<LogLine> {
    const stream = await this.call('other', () =>
      this.container(ref).logs({ stdout: true, stderr: true, timestamps: true, follow: true, tail: opts.tail ?? 100 }),
    )
    const decoder = new LogDecoder(true)
    for await (const chunk of chunks(stream, opts.signal)) yield* decoder.push(chunk)
    yield* decoder.end()
  }

  async stats(ref: ContainerRef): Promise<ContainerStats> {
    const name = containerName(ref.kind, ref.entityId)
    const info = await this.inspectRaw(name)
    if (!info) throw new NotFoundError('Container')
    const cpuLimit = (info.HostConfig.NanoCpus ?? 0) / 1e9
    const configuredMemory = info.HostConfig.Memory ?? 0
    if (!info.State.Running) {
      return { running: false, cpuPercent: 0, cpuLimit, memoryUsedBytes: 0, memoryLimitBytes: configuredMemory, memoryPercent: 0, pids: 0, at: new Date() }
    }
    // stream=false without one-shot: the engine samples twice, so precpu_stats is filled
    // and the CPU delta below covers a real interval.
    const s = await this.call('other', () => this.docker.getContainer(name).stats({ stream: false }))
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
    const rows = await this.call('other', () => this.docker.listContainers({ all: true, filters: { label } }))
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
    return this.eventStream(since, opts.signal)
  }

  private async *eventStream(since: Date, signal?: AbortSignal): AsyncGenerator<ContainerEvent> {
    if (signal?.aborted) return
    const stream = await this.call('other', () =>
      this.docker.getEvents({
        // @ts-expect-error the typings say number, but the engine takes "seconds.nanoseconds" text (see dockerTime)
        since: dockerTime(since),
        filters: { type: ['container'], label: [LABELS.entity], event: [...EVENT_ACTIONS] },
      }),
    )
    const decoder = new JsonLineDecoder()
    for await (const chunk of chunks(stream, signal)) {
      for (const raw of decoder.push(chunk)) {
        const ev = this.toEvent(raw)
        if (ev) yield ev
      }
    }
    // The engine never ends this stream by itself: if it ended, the engine went away.
    if (!signal?.aborted) throw new ServiceUnavailableError(`${ENGINE_UNAVAILABLE}: the event stream ended`)
  }

  private toEvent(raw: unknown): ContainerEvent | null {
    const e = raw as { Type?: string; Action?: string; Actor?: { ID?: string; Attributes?: Record<string, string> }; time?: number; timeNano?: number }
    if (e.Type !== 'container' || !EVENT_ACTIONS.includes(e.Action as ContainerEventAction)) return null
    const attrs = e.Actor?.Attributes ?? {}
    const ref = refOfLabels(attrs)
    if (!ref) return null
    const exit = attrs.exitCode
    return {
      action: e.Action as ContainerEventAction,
      ref,
      ownerId: attrs[LABELS.owner] ?? null,
      containerId: e.Actor?.ID ?? '',
      exitCode: exit !== undefined && /^-?\d+$/.test(exit) ? Number(exit) : null,
      at: e.timeNano ? new Date(Math.floor(e.timeNano / 1e6)) : new Date((e.time ?? 0) * 1000),
    }
  }

  // ---- terminals ----------------------------------------------------------------------

  async exec(ref: ContainerRef, opts: ExecOptions): Promise<ExecSession> {
    if (opts.cmd.length === 0) throw new UnprocessableError('exec needs a command')
    const c = this.container(ref)
    // The marker lets close() find every process of this session (they inherit it) and end
    // them: the Docker API has no call to kill an exec, and closing a TTY's socket leaves
    // the shell running inside the container.
    const marker = crypto.randomUUID()
    const exec = await this.call('exec', () =>
      c.exec({
        Cmd: opts.cmd,
        AttachStdin: true,
        AttachStdout: true,
        AttachStderr: true,
        Tty: true,
        Env: ['TERM=xterm-256color', `QUADRAX_SESSION=${marker}`, ...checkEnv(opts.env)],
      }),
    )
    const stream = (await this.call('exec', () => exec.start({ hijack: true, stdin: true, Tty: true }))) as Duplex
    const resize = async (cols: number, rows: number) => {
      if (!Number.isInteger(cols) || !Number.isInteger(rows) || cols < 1 || rows < 1 || cols > 1000 || rows > 1000) {
        throw new UnprocessableError('terminal size must be whole numbers between 1 and 1000')
      }
      await this.call('exec', () => exec.resize({ w: cols, h: rows }))
    }
    if (opts.cols && opts.rows) await resize(opts.cols, opts.rows)
    const exitCode = async () => {
      const i = await this.call('exec', () => exec.inspect())
      return i.Running ? null : i.ExitCode
    }
    const ended = new Promise<void>((resolve) => {
      stream.once('close', resolve)
      stream.once('end', resolve)
      stream.once('error', () => resolve())
    })
    const wait = async () => {
      await ended
      // The socket closes a moment before the engine records the exit code.
      const deadline = Date.now() + 5000
      for (;;) {
        const code = await exitCode()
        if (code !== null || Date.now() > deadline) return code
        await pause(50)
      }
    }
    const close = () => {
      stream.end()
      stream.destroy()
      void this.killSession(c, marker).catch(() => {})
    }
    return { id: exec.id, stream, resize, exitCode, wait, close }
  }

  /** End every process started under one exec session (see the marker in exec()). */
  private async killSession(c: Dockerode.Container, marker: string): Promise<void> {
    const script =
      'for p in /proc/[0-9]*; do tr "\\000" "\\n" < "$p/environ" 2>/dev/null | grep -qx "QUADRAX_SESSION=$1" && kill -HUP "${p#/proc/}" 2>/dev/null; done; ' +
      'sleep 1; ' +
      'for p in /proc/[0-9]*; do tr "\\000" "\\n" < "$p/environ" 2>/dev/null | grep -qx "QUADRAX_SESSION=$1" && kill -KILL "${p#/proc/}" 2>/dev/null; done; true'
    const killer = await c.exec({ Cmd: ['/bin/sh', '-c', script, 'sh', marker], AttachStdout: true, AttachStderr: true })
    const out = (await killer.start({})) as NodeJS.ReadableStream
    for await (const _ of chunks(out)) {
      // drained only so the exec runs to its end
    }
  }

  // ---- batch jobs ---------------------------------------------------------------------

  async run(spec: RunSpec, opts: RunOptions = {}): Promise<RunResult> {
    checkRef('run', spec.entityId)
    const resources = checkResources(spec.resources)
    checkImage(spec.image, this.images)
    const env = checkEnv(spec.env)
    if (spec.command.length === 0) throw new UnprocessableError('a run needs a command')
    const runtime = await this.checkPlacement(spec.runtime, resources.gpu ?? false)
    const ref: ContainerRef = { kind: 'run', entityId: spec.entityId }
    const name = containerName('run', spec.entityId)
    const mounts: Dockerode.MountSettings[] = []
    if (spec.input) mounts.push(bindMount(spec.input.hostPath, spec.input.containerPath ?? '/input', true))
    if (spec.output) mounts.push(bindMount(spec.output.hostPath, spec.output.containerPath ?? '/output', false))

    const started = Date.now()
    let existing = await this.inspectRaw(name)
    if (!existing) {
      try {
        await this.docker.createContainer({
          name,
          Image: spec.image,
          Cmd: spec.command,
          // No home volume for a job: its results go to the output mount, scratch to /tmp.
          Env: ['HOME=/tmp', ...env],
          WorkingDir: '/tmp',
          User: this.user,
          Labels: labelsFor('run', spec.entityId, spec.ownerId),
          Tty: false,
          NetworkDisabled: true,
          StopTimeout: this.stopTimeoutSeconds,
          HostConfig: hardenedHostConfig({ resources, runtime, pidsLimit: this.pidsLimit, mounts }),
        })
      } catch (err) {
        if (statusOf(err) !== 409) throw mapEngineError(err, 'create', { image: spec.image })
      }
      existing = await this.awaitCreated(name)
    }
    if (existing.Config.Labels?.[LABELS.owner] !== spec.ownerId) {
      throw new ConflictError(`a container named ${name} exists but does not belong to this run`)
    }

    const c = this.docker.getContainer(name)
    let cancelled = false
    let timedOut = false
    const kill = () => {
      c.kill().catch(() => {
        // 409 (not running) or 404 (gone): it has already stopped, which is the goal.
      })
    }
    const onAbort = () => {
      cancelled = true
      kill()
    }
    const timer =
      opts.timeoutMs !== undefined
        ? setTimeout(() => {
            timedOut = true
            kill()
          }, opts.timeoutMs)
        : undefined
    try {
      if (opts.signal?.aborted) {
        cancelled = true
      } else {
        opts.signal?.addEventListener('abort', onAbort, { once: true })
        // A node that restarted mid-run finds the container already started (or finished)
        // and re-attaches to its output from the beginning instead of running it twice.
        if (existing.State.Status === 'created' && (existing.State.StartedAt ?? NEVER).startsWith('0001-')) {
          try {
            await c.start()
          } catch (err) {
            if (statusOf(err) !== 304) throw mapEngineError(err, 'start')
          }
          // A cancel or timeout that fired while it was starting found nothing to kill yet.
          if (cancelled || timedOut) kill()
        }
        const logs = await this.call('other', () => c.logs({ stdout: true, stderr: true, timestamps: true, follow: true }))
        const decoder = new LogDecoder(true)
        for await (const chunk of chunks(logs)) for (const line of decoder.push(chunk)) opts.onLine?.(line)
        for (const line of decoder.end()) opts.onLine?.(line)
      }
      const waited = cancelled ? null : ((await this.call('other', () => c.wait({ condition: 'not-running' }))) as { StatusCode?: number })
      const final = await this.inspectRaw(name)
      const finished = final?.State.Status === 'exited' || final?.State.Status === 'dead'
      const exitCode = finished ? final!.State.ExitCode : (waited?.StatusCode ?? null)
      const oomKilled = final?.State.OOMKilled ?? false
      let error: string | null = null
      if (cancelled) error = 'cancelled'
      else if (timedOut) error = `timed out after ${Math.round((opts.timeoutMs ?? 0) / 1000)} s and was stopped`
      else if (oomKilled) error = oomReason(resources.memory)
      else if (final?.State.Error) error = final.State.Error
      else if (exitCode !== 0) error = `the job exited with code ${exitCode}`
      return { exitCode, oomKilled, cancelled, timedOut, error, durationMs: Date.now() - started }
    } finally {
      clearTimeout(timer)
      opts.signal?.removeEventListener('abort', onAbort)
      await this.remove(ref, { keepVolume: true }).catch(() => {
        // Left behind only if the engine went away; the next run() with this id adopts it.
      })
    }
  }

  // ---- helpers ------------------------------------------------------------------------

  private container(ref: ContainerRef): Dockerode.Container {
    return this.docker.getContainer(containerName(ref.kind, ref.entityId))
  }

  private async inspectRaw(name: string): Promise<Dockerode.ContainerInspectInfo | null> {
    try {
      return await this.docker.getContainer(name).inspect()
    } catch (err) {
      if (statusOf(err) === 404) return null
      throw mapEngineError(err, 'other')
    }
  }

  private async call<T>(op: EngineOperation, fn: () => Promise<T>, subject?: { image?: string }): Promise<T> {
    try {
      return await fn()
    } catch (err) {
      throw mapEngineError(err, op, subject)
    }
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

/** A bind mount the engine builds itself; host and container paths must be plain absolute paths. */
function bindMount(hostPath: string, containerPath: string, readOnly: boolean): Dockerode.MountSettings {
  for (const [what, p] of [
    ['host path', hostPath],
    ['container path', containerPath],
  ] as const) {
    if (!isAbsolute(p) || normalize(p) !== p.replace(/\/+$/, '') || p.split('/').includes('..') || normalize(p) === '/') {
      throw new UnprocessableError(`${what} ${JSON.stringify(p)} must be an absolute path without ".." (and not /)`)
    }
  }
  if (/docker\.sock/.test(hostPath)) throw new UnprocessableError('the Docker socket can never be mounted into a container')
  return { Type: 'bind', Source: hostPath, Target: containerPath, ReadOnly: readOnly }
}
