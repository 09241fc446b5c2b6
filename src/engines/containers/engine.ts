/**
 * The container engine as the actors see it: a small interface of our own, so that a
 * second engine (Kubernetes) can plug in beside the Docker one without touching the
 * workstation, VM or model-run actors.
 *
 * Every container belongs to one entity (a workstation, a VM, a training run) and is
 * addressed by `{ kind, entityId }`: its name is derived from them, so a repeated `ensure`
 * finds the container it made before instead of making a second one (the actor's side
 * effects stay idempotent across retries and redelivered messages).
 *
 * The engine decides how containers are hardened; callers only choose among what an
 * administrator allowed (image allow-list, runtimes the engine has) and the resources.
 * There is deliberately no way to pass raw engine options through.
 */
import type { Duplex, Readable, Writable } from 'node:stream'
import { Type as T, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { ServiceUnavailableError, UnprocessableError, type ErrorDetail } from '../../core/errors.ts'

/** What a container is for; part of its name and labels. */
export const ContainerKind = T.Union([T.Literal('workstation'), T.Literal('vm'), T.Literal('run')])
export type ContainerKind = Static<typeof ContainerKind>

/**
 * Resources in the guide's shape (`resources` of a workstation): cpu in cores (fractions
 * allowed), memory and storage in MB, gpu on or off.
 */
export const ContainerResources = T.Object({
  cpu: T.Number({ exclusiveMinimum: 0, maximum: 256 }),
  // Docker refuses less than 6 MB; below 16 MB not even a shell starts reliably.
  memory: T.Integer({ minimum: 16, maximum: 4 * 1024 * 1024 }),
  storage: T.Optional(T.Integer({ minimum: 0 })),
  gpu: T.Optional(T.Boolean()),
})
export type ContainerResources = Static<typeof ContainerResources>

/** The message of every 503 for a missing or silent engine. */
export const ENGINE_UNAVAILABLE = 'container engine unavailable'

/** The engine is not configured or does not answer (503). */
export function engineUnavailable(): ServiceUnavailableError {
  return new ServiceUnavailableError(ENGINE_UNAVAILABLE)
}

/** Resources checked against the schema; a bad value is a 422 naming the field. */
export function checkResources(resources: unknown): ContainerResources {
  if (Value.Check(ContainerResources, resources)) return resources
  const details: ErrorDetail[] = [...Value.Errors(ContainerResources, resources)].map((e) => ({
    field: `resources${e.path.replaceAll('/', '.')}`,
    message: e.message,
  }))
  throw new UnprocessableError('invalid container resources', details)
}

/** An image from an allow-list, or a 422 naming the allowed ones. */
export function checkImage(image: string, allowed: readonly string[]): void {
  if (!allowed.includes(image)) {
    throw new UnprocessableError(`image ${JSON.stringify(image)} is not allowed; choose one of: ${allowed.join(', ') || '(none configured)'}`, [
      { field: 'image', message: 'not on the allow-list' },
    ])
  }
}

/** Environment variables as `NAME=value`; a name that is not an identifier is a 422. */
export function checkEnv(env: Record<string, string> | undefined): string[] {
  return Object.entries(env ?? {}).map(([k, v]) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new UnprocessableError(`invalid environment variable name ${JSON.stringify(k)}`)
    return `${k}=${v}`
  })
}

/** Which entity's container. */
export interface ContainerRef {
  kind: ContainerKind
  entityId: string
}

/** What `ensure` creates when the container does not exist yet. */
export interface ContainerSpec extends ContainerRef {
  /** The user who owns the entity (label `quadrax.owner`). */
  ownerId: string
  /** Must be on the engine's image allow-list. */
  image: string
  /** Engine runtime name (`runc`, `runsc`, `kata-runtime`…); the engine's default when absent. */
  runtime?: string
  resources: ContainerResources
  /** Overrides the image's command; set by our own code, never by a user. */
  command?: string[]
  env?: Record<string, string>
}

/** Lifecycle state as the engine reports it; `missing` when there is no such container. */
export type ContainerState = 'missing' | 'created' | 'running' | 'paused' | 'restarting' | 'removing' | 'exited' | 'dead'

/** Our own view of an inspected container. */
export interface ContainerStatus {
  ref: ContainerRef
  name: string
  /** Engine id; null when missing. */
  id: string | null
  state: ContainerState
  running: boolean
  exitCode: number | null
  oomKilled: boolean
  /** A reason a user can act on when the container failed (out of memory, runtime error). */
  error: string | null
  startedAt: Date | null
  finishedAt: Date | null
  ownerId: string | null
  image: string | null
  runtime: string | null
  limits: { cpu: number; memory: number; pids: number; gpu: boolean } | null
}

/** One row of `list`: cheaper than an inspect. */
export interface ContainerSummary {
  ref: ContainerRef
  ownerId: string
  id: string
  name: string
  state: ContainerState
  image: string
}

export interface EngineInfo {
  engine: 'docker'
  version: string
  os: string
  kernel: string
  cpus: number
  memoryBytes: number
  /** Runtime names the engine can run containers under. */
  runtimes: string[]
  defaultRuntime: string
  /** True when an NVIDIA runtime is registered, i.e. `gpu: true` can be honoured. */
  nvidia: boolean
}

export interface ContainerStats {
  running: boolean
  /** Percent of one core, as `docker stats` shows it (200 = two cores busy). */
  cpuPercent: number
  /** Cores the container may use (its NanoCpus limit), to read cpuPercent against. */
  cpuLimit: number
  memoryUsedBytes: number
  memoryLimitBytes: number
  memoryPercent: number
  pids: number
  at: Date
}

export interface LogLine {
  stream: 'stdout' | 'stderr'
  line: string
  /** The engine's timestamp for the line. */
  at: Date | null
  /**
   * Set when the line was longer than the engine's line limit (CONTAINER_LOG_LINE_MAX_BYTES):
   * this piece holds that many bytes, and the line goes on in the stream's next LogLine.
   */
  partial?: true
}

/**
 * A log read ran past its byte budget (`maxBytes`): output after this point is counted, not
 * decoded. Yielded once when the budget runs out (`final: false`), and once more when the
 * read ends (`final: true`, the total count).
 */
export interface LogCut {
  cut: true
  /** The budget that ran out. */
  maxBytes: number
  /** Bytes of output dropped so far (the total when `final`). */
  droppedBytes: number
  final: boolean
}

/** The last lines of a container's output, within a byte budget (the oldest go first). */
export interface LogTail {
  lines: LogLine[]
  /** Bytes of older output left out to stay within the budget. */
  droppedBytes: number
}

/**
 * Capacity a container asks of the engine: cores, memory (MB) and a GPU, each checked
 * against what the engine has when given.
 */
export interface PlacementNeeds {
  cpu?: number
  memory?: number
  gpu?: boolean
}

/** A process started inside a running container with a TTY: a terminal. */
export interface ExecSession {
  id: string
  /** Raw TTY bytes both ways: write keyboard input, read screen output. */
  stream: Duplex
  resize(cols: number, rows: number): Promise<void>
  /** Exit code once the process ended, null while it runs. */
  exitCode(): Promise<number | null>
  /** Resolves with the exit code when the process ends (or the stream closes). */
  wait(): Promise<number | null>
  /** Close our end; the shell sees a hang-up and exits. */
  close(): void
}

export interface ExecOptions {
  cmd: string[]
  cols?: number
  rows?: number
  env?: Record<string, string>
}

/**
 * A process started inside a running container without a TTY: a pipe for its stdin and its
 * stdout and stderr apart (as a child process has them). Read both outputs, or `resume()` the
 * one you ignore: output is read only as fast as it is consumed, and the process blocks on its
 * writes meanwhile (backpressure reaches it through the engine).
 */
export interface ProcessSession {
  id: string
  /** The process's stdin; `end()` closes it (the process reads end of file). */
  stdin: Writable
  stdout: Readable
  stderr: Readable
  /** Resolves with the exit code when the process ends (null when the engine could not tell). */
  wait(): Promise<number | null>
  /**
   * End every process of this session (the process and all it started, wherever they moved
   * in the process tree), then resolves once the session is over. Idempotent.
   */
  kill(): Promise<void>
}

export interface SpawnOptions {
  /** argv; not run through a shell. */
  cmd: string[]
  env?: Record<string, string>
  /** Absolute path; the container's working directory when absent. */
  workingDir?: string
}

/** A batch job (custom training run): runs to completion, then its container is removed. */
export interface RunSpec {
  /** Run id: the container is `quadrax-run-<entityId>`, so a node that restarts mid-run re-attaches. */
  entityId: string
  ownerId: string
  image: string
  runtime?: string
  resources: ContainerResources
  command: string[]
  env?: Record<string, string>
  /** Host directory mounted read-only (default at /input); on the engine's host, readable by the container user. */
  input?: { hostPath: string; containerPath?: string }
  /** Host directory mounted writable (default at /output); must be writable by the container user. */
  output?: { hostPath: string; containerPath?: string }
}

export interface RunOptions {
  /** Called for every line the job writes (or piece of a long one, see LogLine.partial), in order per stream. */
  onLine?: (line: LogLine) => void
  /**
   * Bytes of output decoded at most; the rest is only counted (RunResult.droppedOutputBytes).
   * Default: no budget (memory stays bounded by the line limit all the same).
   */
  maxOutputBytes?: number
  /** Called once, in order with onLine, when maxOutputBytes runs out. */
  onOutputCut?: (cut: LogCut) => void
  /**
   * Output read at most this fast (bytes per second, averaged over a short window). The job's
   * output reaches the server over an attached stream with backpressure, so a job printing
   * faster is slowed to this rate, as a terminal slows a program that prints faster than it
   * can show: what a flood of output costs the engine and the server stays bounded, whoever
   * else shares the machine. Default: unpaced.
   */
  outputBytesPerSecond?: number
  /**
   * Lines of output read at most this fast (lines per second, averaged as above), beside
   * outputBytesPerSecond: a flood of short lines costs the engine (its log driver handles each
   * line) and the server per line far more than its bytes say. Default: unpaced.
   */
  outputLinesPerSecond?: number
  /**
   * Abort to stop following the job and leave it running (this node is stopping): the call
   * returns at once with `detached`, the container is neither killed nor removed, and a later
   * run() with the same entityId re-attaches to it.
   */
  detach?: AbortSignal
  /** Abort to cancel: the container is killed and the result says `cancelled`. */
  signal?: AbortSignal
  /** Kill the job after this long; the result says `timedOut`. */
  timeoutMs?: number
}

export interface RunResult {
  exitCode: number | null
  oomKilled: boolean
  cancelled: boolean
  timedOut: boolean
  /** A reason a user can act on when the job failed. */
  error: string | null
  durationMs: number
  /** Bytes of output past maxOutputBytes, counted and dropped. */
  droppedOutputBytes: number
  /** Left running, not followed to its end (RunOptions.detach). */
  detached?: boolean
}

export type ContainerEventAction = 'start' | 'die' | 'stop' | 'destroy' | 'oom'

/** A change the engine reports for one of our containers. */
export interface ContainerEvent {
  action: ContainerEventAction
  ref: ContainerRef
  ownerId: string | null
  containerId: string
  /** For `die`: the process's exit code. */
  exitCode: number | null
  at: Date
}

export interface EventOptions {
  /** Replay events from this time (resume after a reconnect); default: when events() was called. */
  since?: Date
  /** Abort to end the iteration. */
  signal?: AbortSignal
}

export interface ListFilter {
  ownerId?: string
  kind?: ContainerKind
  entityId?: string
}

/**
 * What workstations, VMs and training runs need from a container engine.
 *
 * Errors: an unreachable engine is a ServiceUnavailableError ("container engine
 * unavailable"); a request the engine cannot honour (image not allowed or missing, runtime
 * or GPU not available, limits refused) is an UnprocessableError; a container that does
 * not exist where one is required is a NotFoundError.
 */
export interface ContainerEngine {
  /** Throws ServiceUnavailableError when the engine does not answer. */
  ping(): Promise<void>
  info(): Promise<EngineInfo>
  /**
   * Can the engine run a container under `runtime` (null: its default) with these needs: no
   * more cores or memory than the engine has, a GPU only where there is one? A clear 422
   * naming each field it cannot honour (`resources.cpu`, `resources.memory`, `resources.gpu`,
   * `runtime`), so a caller can refuse before it records anything; returns the runtime's name.
   * The engine's capabilities are cached briefly, and asked again before a refusal.
   */
  checkPlacement(runtime: string | null | undefined, needs: PlacementNeeds): Promise<string>
  /**
   * Create the container and its home volume unless they exist; never starts it. An
   * existing container is returned as it is (a changed image or runtime means remove and
   * ensure again; changed cpu/memory means updateLimits). Same name but another owner: 409.
   */
  ensure(spec: ContainerSpec): Promise<ContainerStatus>
  /** Start (a running container is left as it is). */
  start(ref: ContainerRef): Promise<ContainerStatus>
  /** Stop, killing after `timeoutSeconds` (a stopped or missing one is left as it is). */
  stop(ref: ContainerRef, opts?: { timeoutSeconds?: number }): Promise<ContainerStatus>
  restart(ref: ContainerRef, opts?: { timeoutSeconds?: number }): Promise<ContainerStatus>
  /** Remove the container and (unless keepVolume) its volume; missing ones are fine. */
  remove(ref: ContainerRef, opts?: { keepVolume?: boolean }): Promise<void>
  /** State is `missing` when there is no such container. */
  inspect(ref: ContainerRef): Promise<ContainerStatus>
  /** New cpu/memory limits (resize); gpu cannot change on an existing container. */
  updateLimits(ref: ContainerRef, resources: ContainerResources): Promise<ContainerStatus>
  /**
   * The last `tail` lines, at most `maxBytes` of them (default: the engine's tail budget); the
   * engine's response is read as a stream, so memory stays within the budget and one line.
   */
  logs(ref: ContainerRef, opts?: { tail?: number; maxBytes?: number }): Promise<LogTail>
  /**
   * The last `tail` lines, then new ones as they come, until the container stops or `signal`
   * aborts. Past `maxBytes` of output (default: the engine's follow budget) a LogCut is
   * yielded and the rest only counted; a final LogCut gives the total when it ends.
   */
  followLogs(ref: ContainerRef, opts?: { tail?: number; signal?: AbortSignal; maxBytes?: number }): AsyncIterable<LogLine | LogCut>
  stats(ref: ContainerRef): Promise<ContainerStats>
  /** A TTY process in a running container (a terminal). */
  exec(ref: ContainerRef, opts: ExecOptions): Promise<ExecSession>
  /** A piped process (no TTY) in a running container: kernels and other programs spoken to over stdin/stdout. */
  spawn(ref: ContainerRef, opts: SpawnOptions): Promise<ProcessSession>
  /** Run a batch job to completion (see RunSpec). */
  run(spec: RunSpec, opts?: RunOptions): Promise<RunResult>
  list(filter?: ListFilter): Promise<ContainerSummary[]>
  /** Start/die/stop/destroy/oom of our containers, for reconciliation. */
  events(opts?: EventOptions): AsyncIterable<ContainerEvent>
}
