/**
 * Batch jobs on the Docker engine (a container training run): created hardened like every
 * container, its output followed to the end, bounded by a timeout and a cancel signal, and
 * removed afterwards. A node that restarts mid-job re-attaches instead of running it twice.
 */
import type Dockerode from 'dockerode'
import { ConflictError, UnprocessableError } from '../../core/errors.ts'
import { mapEngineError, oomReason, statusOf } from './docker-errors.ts'
import { awaitCreated, bindMount, chunks, engineCall, inspectRaw, NEVER } from './docker-io.ts'
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
      const logs = await engineCall('other', () => c.logs({ stdout: true, stderr: true, timestamps: true, follow: true }))
      const decoder = new LogDecoder(true, { maxLineBytes: engine.maxLineBytes, maxBytes: opts.maxOutputBytes })
      const deliver = (items: Array<LogLine | LogCut>) => {
        for (const item of items) {
          if (!('cut' in item)) opts.onLine?.(item)
          else if (!item.final) opts.onOutputCut?.(item)
        }
      }
      // Read to the end even past the budget (only counting): the stream's end is the job's.
      for await (const chunk of chunks(logs)) deliver(decoder.push(chunk))
      deliver(decoder.end())
      droppedOutputBytes = decoder.droppedBytes
      if (droppedOutputBytes > 0) engine.onLogDropped(droppedOutputBytes)
    }
    const waited = cancelled ? null : ((await engineCall('other', () => c.wait({ condition: 'not-running' }))) as { StatusCode?: number })
    const final = await inspectRaw(docker, name)
    const finished = final?.State.Status === 'exited' || final?.State.Status === 'dead'
    const exitCode = finished ? final!.State.ExitCode : (waited?.StatusCode ?? null)
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
    await engine.remove(ref, { keepVolume: true }).catch(() => {
      // Left behind only if the engine went away; the next run() with this id adopts it.
    })
  }
}
