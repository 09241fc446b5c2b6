/**
 * Custom training in a container: the run's DataKit version and spec handed over read-only
 * in /input, an allow-listed image run to completion with the run's resources, its output
 * streamed back (metric lines as metrics, the rest as logs), /output registered as the
 * version's artifact.
 */
import { chmod, chown, mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { linkOrCopy } from '../core/files.ts'
import { join, relative } from 'node:path'
import { UnprocessableError } from '../core/errors.ts'
import type { LogLine } from '../engines/containers/engine.ts'
import { ARTIFACT_FORMAT, loadArtifact } from '../engines/trainer/artifact.ts'
import { TrainingDataError } from '../engines/trainer/errors.ts'
import type { MetricPoint } from '../store/model-runs.ts'
import type { ArtifactInfo, ContainerSpec, LogEntry, Reporter, TaskEnv } from './model-run-spec.ts'

/** Files of an artifact directory, relative, sorted (at most `max`; deeper trees are walked too). */
export async function listFiles(dir: string, max = 10_000): Promise<{ path: string; bytes: number }[]> {
  const out: { path: string; bytes: number }[] = []
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (out.length >= max) return
      const p = join(d, e.name)
      // Symlinks are listed by their own size and never followed: a container could point one
      // anywhere on the host, and the server reads these files later.
      if (e.isDirectory()) await walk(p)
      else out.push({ path: relative(dir, p), bytes: e.isFile() ? (await stat(p)).size : 0 })
    }
  }
  await walk(dir)
  return out.sort((a, b) => a.path.localeCompare(b.path))
}

/** A metric line: `{"metric": "loss", "value": 0.31, "step": 3}` (step and timestamp optional). */
function parseMetricLine(line: string, now: number): MetricPoint | null {
  const text = line.trim()
  if (!text.startsWith('{') || !text.endsWith('}') || text.length > 4096) return null
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch {
    return null
  }
  if (typeof v !== 'object' || v === null) return null
  const o = v as Record<string, unknown>
  if (typeof o.metric !== 'string' || o.metric.length === 0 || o.metric.length > 250 || typeof o.value !== 'number' || !Number.isFinite(o.value)) return null
  const step = o.step === undefined ? 0 : o.step
  if (typeof step !== 'number' || !Number.isSafeInteger(step) || step < 0) return null
  const timestamp = typeof o.timestamp === 'number' && Number.isFinite(o.timestamp) && o.timestamp > 0 ? Math.round(o.timestamp) : now
  return { key: o.metric, value: o.value, step, timestamp }
}

/** Log lines a run streams at most; beyond it one notice says the rest was dropped (and counted). */
const MAX_LOG_LINES = 10_000
const FLUSH_MS = 200
const FLUSH_ITEMS = 200

/**
 * Buffers what a container prints and hands it to the actor in batches: one message per
 * FLUSH_MS or FLUSH_ITEMS, not one per line, so a chatty job costs a few turns a second.
 *
 * What a run keeps is bounded twice: the engine decodes at most TRAINING_LOG_MAX_BYTES of
 * output (lines arrive in pieces of CONTAINER_LOG_LINE_MAX_BYTES at most) and only counts the
 * rest; here at most MAX_LOG_LINES log lines are streamed. Whatever either drops is counted,
 * said in a last notice, and recorded on the run (tag quadrax.dropped_output_bytes).
 */
class OutputPump {
  readonly tail: string[] = []
  #metrics: MetricPoint[] = []
  #logs: LogEntry[] = []
  #lines = 0
  /** Bytes of log lines past MAX_LOG_LINES. */
  #dropped = 0
  #timer: ReturnType<typeof setTimeout> | undefined
  constructor(
    readonly report: Reporter,
    readonly maxBytes: number,
  ) {}

  push(l: LogLine): void {
    const now = Date.now()
    const m = l.partial ? null : parseMetricLine(l.line, now)
    if (m) this.#metrics.push(m)
    else {
      this.tail.push(l.line.slice(0, 300))
      if (this.tail.length > 5) this.tail.shift()
      this.#lines++
      if (this.#lines <= MAX_LOG_LINES) this.#logs.push({ stream: l.stream, line: l.line, at: l.at?.getTime() ?? now, ...(l.partial ? { partial: true as const } : {}) })
      else {
        this.#dropped += Buffer.byteLength(l.line) + (l.partial ? 0 : 1)
        if (this.#lines === MAX_LOG_LINES + 1) this.#notice(`[quadrax] more than ${MAX_LOG_LINES} log lines: the rest is not streamed`)
      }
    }
    this.#schedule()
  }

  /** The engine stopped decoding: the run's output reached maxBytes. */
  cut(): void {
    this.#notice(`[quadrax] output past ${this.maxBytes} bytes is not kept (TRAINING_LOG_MAX_BYTES): the rest, metric lines included, is only counted`)
    this.#schedule()
  }

  /** The job ended: the last batch, with the count of everything dropped (returned too). */
  finish(droppedByEngine: number): number {
    const dropped = droppedByEngine + this.#dropped
    if (dropped > 0) this.#notice(`[quadrax] ${dropped} bytes of output were dropped (limits: TRAINING_LOG_MAX_BYTES=${this.maxBytes}, ${MAX_LOG_LINES} log lines)`)
    this.flush(dropped > 0 ? dropped : undefined)
    return dropped
  }

  flush(droppedBytes?: number): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    if (this.#metrics.length) this.report.metrics(this.#metrics.splice(0))
    if (this.#logs.length || droppedBytes !== undefined) this.report.logs(this.#logs.splice(0), droppedBytes)
  }

  #notice(line: string): void {
    this.#logs.push({ stream: 'stderr', line, at: Date.now(), notice: true })
  }

  #schedule(): void {
    if (this.#metrics.length + this.#logs.length >= FLUSH_ITEMS) this.flush()
    else this.#timer ??= setTimeout(() => this.flush(), FLUSH_MS)
  }
}

export async function runContainer(env: TaskEnv, run: { id: string; modelId: string; userId: string }, spec: ContainerSpec, artifactPath: string, signal: AbortSignal, report: Reporter): Promise<void> {
  if (!env.containers) throw new UnprocessableError('Container runs are not available: no container engine is configured (DOCKER_HOST)')
  const output = join(env.modelDir, artifactPath)
  // Beside the attempt's output, removed when the job ends.
  const input = `${output}-input`
  try {
    // The input folder holds only this run's data (never the upload folder itself, where
    // other users' files live): the Parquet copy, a CSV export of it, and the run's spec.
    await mkdir(input, { recursive: true })
    await mkdir(output, { recursive: true })
    await linkOrCopy(spec.source.parquetPath, join(input, 'data.parquet')).catch((err) => {
      throw new TrainingDataError(`The DataKit's data could not be read (was the DataKit deleted?): ${err instanceof Error ? err.message : String(err)}`)
    })
    // The data as it is (no spreadsheet-formula neutralising: a program reads this file), written
    // in a background slot: a burst of runs never holds the slots other users' queries need.
    await env.datasets.exportTo(join(input, 'data.parquet'), 'csv', join(input, 'data.csv'), { user: run.userId, neutraliseFormulas: false, slot: 'background', signal })
    await writeFile(
      join(input, 'spec.json'),
      JSON.stringify({ runId: run.id, modelId: run.modelId, task: spec.task, target: spec.target, features: spec.features, params: spec.params, datakit: { id: spec.source.datakitId, version: spec.source.version } }, null, 2),
    )
    for (const f of ['data.parquet', 'data.csv', 'spec.json']) await chmod(join(input, f), 0o644)
    await chmod(input, 0o755)
    // The job runs as an unprivileged user: it must own the one folder it may write.
    await chmod(output, 0o755)
    await chown(output, env.containerUser.uid, env.containerUser.gid).catch(() => chmod(output, 0o777))

    const pump = new OutputPump(report, env.logMaxBytes)
    const result = await env.containers.run(
      {
        entityId: run.id,
        ownerId: run.userId,
        image: spec.image,
        command: spec.command,
        resources: spec.resources,
        env: { ...spec.env, QUADRAX_RUN_ID: run.id, QUADRAX_MODEL_ID: run.modelId, QUADRAX_INPUT: '/input', QUADRAX_OUTPUT: '/output' },
        input: { hostPath: input, containerPath: '/input' },
        output: { hostPath: output, containerPath: '/output' },
      },
      { signal, onLine: (l) => pump.push(l), maxOutputBytes: env.logMaxBytes, onOutputCut: () => pump.cut(), outputBytesPerSecond: env.outputBytesPerSecond, outputLinesPerSecond: env.outputLinesPerSecond },
    )
    pump.finish(result.droppedOutputBytes)
    if (result.cancelled || signal.aborted) return
    if (result.error !== null || result.exitCode !== 0) {
      const tail = pump.tail.length ? `; last output: ${pump.tail.join(' | ')}` : ''
      report.failed(`The training container failed: ${result.error ?? `exit code ${result.exitCode}`}${tail}`)
      await rm(output, { recursive: true, force: true })
      return
    }
    const files = await listFiles(output)
    if (files.length === 0) {
      report.failed('The training container exited without writing anything to /output: save the model files there (they become the version\'s artifact)')
      return
    }
    // A job that writes a quadrax.tabular model (model.json + weights.bin) can be served.
    let format: ArtifactInfo['format'] = 'files'
    let inputSchema: unknown = null
    let metrics: Record<string, number> = {}
    if (files.some((f) => f.path === 'model.json')) {
      try {
        const a = await loadArtifact(output)
        if (a.format === ARTIFACT_FORMAT) {
          format = 'quadrax.tabular'
          inputSchema = a.inputSchema
          metrics = a.metrics
        }
      } catch {
        // Any other model.json (a framework's own format) is just one of the files.
      }
    }
    const ok = await report.succeeded({ path: artifactPath, format, inputSchema, metrics, files, bytes: files.reduce((n, f) => n + f.bytes, 0) })
    if (!ok) await rm(output, { recursive: true, force: true })
  } finally {
    await rm(input, { recursive: true, force: true })
  }
}
