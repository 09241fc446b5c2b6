/**
 * Batch jobs on the Docker engine (a container training run): created hardened like every
 * container, its output read to the end over an attached stream at a bounded pace (a job that
 * prints faster is slowed), bounded by a timeout and a cancel signal, and removed afterwards. A node that restarts mid-job re-attaches instead of running it twice.
 */
import type Dockerode from 'dockerode'
import { ConflictError, UnprocessableError } from '../../core/errors.ts'
import { Pace } from '../../core/pace.ts'
import { mapEngineError, oomReason, statusOf } from './docker-errors.ts'
import type { Readable } from 'node:stream'
import { awaitCreated, bindMount, chunks, engineCall, inspectRaw, NEVER, pause } from './docker-io.ts'
import { LABELS, checkRef, containerName, hardenedHostConfig, labelsFor } from './docker-spec.ts'
import { LogDecoder } from './docker-streams.ts'
import { checkEnv, checkImage, checkResources, type ContainerEngine, type ContainerRef, type LogCut, type LogLine, type RunOptions, type RunResult, type RunSpec } from './engine.ts'

/** What a job needs of the engine that runs it. */
export interface JobEngine extends Pick<ContainerEngine, 'checkPlacement' | 'remove'> {
  docker: Dockerode
  images: readonly string[]
  user: string
  stopTimeoutSeconds: number
  pidsLimit: number
  /** CONTAINER_LOG_LINE_MAX_BYTES: longer lines reach onLine in pieces. */
  maxLineBytes: number
  /** Told of output dropped past RunOptions.maxOutputBytes (a metric). */
  onLogDropped: (bytes: number) => void
}

/** Output reads may run ahead of their pace by this long's worth (a quarter second), then wait. */
const READ_BURST_SECONDS = 0.25

/** How fast a job's output is read: `rate` bytes (or lines) a second. */
const readPace = (rate: number) => new Pace(rate, rate * READ_BURST_SECONDS)

export async function runJob(engine: JobEngine, spec: RunSpec, opts: RunOptions = {}): Promise<RunResult> {
  const { docker } = engine
  checkRef('run', spec.entityId)
  const resources = checkResources(spec.resources)
  checkImage(spec.image, engine.images)
  const env = checkEnv(spec.env)
  if (spec.command.length === 0) throw new UnprocessableError('a run needs a command')
  const runtime = await engine.checkPlacement(spec.runtime, resources)
  const ref: ContainerRef = { kind: 'run', entityId: spec.entityId }
  const name = containerName('run', spec.entityId)
  const mounts: Dockerode.MountSettings[] = []
  if (spec.input) mounts.push(bindMount(spec.input.hostPath, spec.input.containerPath ?? '/input', true))
  if (spec.output) mounts.push(bindMount(spec.output.hostPath, spec.output.containerPath ?? '/output', false))

  const started = Date.now()
  let existing = await inspectRaw(docker, name)
  if (!existing) {
    try {
      await docker.createContainer({
        name,
        Image: spec.image,
        Cmd: spec.command,
        // No home volume for a job: its results go to the output mount, scratch to /tmp.
        Env: ['HOME=/tmp', ...env],
        WorkingDir: '/tmp',
        User: engine.user,
        Labels: labelsFor('run', spec.entityId, spec.ownerId),
        Tty: false,
        NetworkDisabled: true,
        StopTimeout: engine.stopTimeoutSeconds,
        HostConfig: hardenedHostConfig({ resources, runtime, pidsLimit: engine.pidsLimit, mounts }),
      })
    } catch (err) {
      if (statusOf(err) !== 409) throw mapEngineError(err, 'create', { image: spec.image })
    }
    existing = await awaitCreated(docker, name)
  }
  if (existing.Config.Labels?.[LABELS.owner] !== spec.ownerId) {
    throw new ConflictError(`a container named ${name} exists but does not belong to this run`)
  }

  const c = docker.getContainer(name)
  let cancelled = false
  let timedOut = false
  let droppedOutputBytes = 0
  // Cancelled or timed out: stop reading too (what it printed meanwhile no longer matters).
  const stopReading = new AbortController()
  let detached = false
  const onDetach = () => {
    detached = true
    stopReading.abort()
  }
  if (opts.detach?.aborted) detached = true
  opts.detach?.addEventListener('abort', onDetach, { once: true })
  const kill = () => {
    stopReading.abort()
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
      // Cancelled before it was followed: a re-attached job that is running is stopped too.
      cancelled = true
      kill()
    } else {
      opts.signal?.addEventListener('abort', onAbort, { once: true })
      // The job's output comes over an attached stream, not from the engine's log file: the
      // engine hands it on as the job writes it and blocks the job's writes while we do not
      // read, so pacing the reads (outputBytesPerSecond, outputLinesPerSecond) paces the job.
      // A fresh container is attached before it starts, so nothing it prints is missed. A node
      // that restarted mid-run finds it already started and re-attaches with the output from
      // the beginning (the engine's log) instead of running it twice; one that has finished is
      // read from its log.
      const fresh = existing.State.Status === 'created' && (existing.State.StartedAt ?? NEVER).startsWith('0001-')
      let output: NodeJS.ReadableStream
      let timestamps = false
      if (fresh) {
        output = (await engineCall('other', () => c.attach({ stream: true, stdout: true, stderr: true, logs: false }))) as NodeJS.ReadableStream
        try {
          await c.start()
        } catch (err) {
          if (statusOf(err) !== 304) {
            ;(output as Readable).destroy()
            throw mapEngineError(err, 'start')
          }
        }
        // A cancel or timeout that fired while it was starting found nothing to kill yet.
        if (cancelled || timedOut) kill()
      } else if (existing.State.Running) {
        output = (await engineCall('other', () => c.attach({ stream: true, stdout: true, stderr: true, logs: true }))) as NodeJS.ReadableStream
      } else {
        output = await engineCall('other', () => c.logs({ stdout: true, stderr: true, timestamps: true, follow: true }))
        timestamps = true
      }
      const decoder = new LogDecoder(timestamps, { maxLineBytes: engine.maxLineBytes, maxBytes: opts.maxOutputBytes })
      const deliver = (items: Array<LogLine | LogCut>) => {
        for (const item of items) {
          if (!('cut' in item)) opts.onLine?.(item)
          else if (!item.final) opts.onOutputCut?.(item)
        }
      }
      const bytePace = opts.outputBytesPerSecond !== undefined ? readPace(opts.outputBytesPerSecond) : undefined
      const linePace = opts.outputLinesPerSecond !== undefined ? readPace(opts.outputLinesPerSecond) : undefined
      // Read to the end even past the budget (only counting): the stream's end is the job's.
      for await (const chunk of chunks(output, stopReading.signal)) {
        const lines = decoder.newlines
        deliver(decoder.push(chunk))
        const wait = Math.max(bytePace?.after(chunk.length) ?? 0, linePace?.after(decoder.newlines - lines) ?? 0)
        if (wait > 0) await pause(wait)
      }
      deliver(decoder.end())
      droppedOutputBytes = decoder.droppedBytes
      if (droppedOutputBytes > 0) engine.onLogDropped(droppedOutputBytes)
    }
    if (detached) return { exitCode: null, oomKilled: false, cancelled: false, timedOut: false, error: null, durationMs: Date.now() - started, droppedOutputBytes, detached: true }
    // Cancelled or timed out, reading stopped at once: the kill is under way, wait for it.
    const waited = (await engineCall('other', () => c.wait({ condition: 'not-running' }))) as { StatusCode?: number }
    const final = await inspectRaw(docker, name)
    const finished = final?.State.Status === 'exited' || final?.State.Status === 'dead'
    const exitCode = finished ? final!.State.ExitCode : (waited.StatusCode ?? null)
    const oomKilled = final?.State.OOMKilled ?? false
    let error: string | null = null
    if (cancelled) error = 'cancelled'
    else if (timedOut) error = `timed out after ${Math.round((opts.timeoutMs ?? 0) / 1000)} s and was stopped`
    else if (oomKilled) error = oomReason(resources.memory)
    else if (final?.State.Error) error = final.State.Error
    else if (exitCode !== 0) error = `the job exited with code ${exitCode}`
    return { exitCode, oomKilled, cancelled, timedOut, error, durationMs: Date.now() - started, droppedOutputBytes }
  } finally {
    clearTimeout(timer)
    opts.signal?.removeEventListener('abort', onAbort)
    opts.detach?.removeEventListener('abort', onDetach)
    if (!detached)
      await engine.remove(ref, { keepVolume: true }).catch(() => {
      // Left behind only if the engine went away; the next run() with this id adopts it.
    })
  }
}
