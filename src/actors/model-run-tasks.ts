/**
 * The work of a training run, done in the model-run actor's background tasks (after its turn
 * commits, never holding its mailbox): read the DataKit's Parquet copy with DuckDB, train
 * with the built-in trainer (a Bun Worker) or run an allow-listed container, write the
 * artifact under MODEL_DIR. Progress goes back to the actor as messages (`Reporter`), so
 * every state change still happens in one of its turns.
 */
import { chmod, chown, copyFile, link, mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api'
import { UnprocessableError } from '../core/errors.ts'
import type { Logger } from '../core/logger.ts'
import type { ContainerEngine, ContainerResources, LogLine } from '../engines/containers/engine.ts'
import { ARTIFACT_FORMAT, loadArtifact } from '../engines/trainer/artifact.ts'
import { saveArtifact, train, TrainingDataError, type Algorithm, type Task } from '../engines/trainer/trainer.ts'
import type { ResolvedParams } from '../engines/trainer/spec.ts'
import type { MetricPoint } from '../store/models.ts'

// ---- what a run is asked to do (stored as model_runs.spec) ---------------------------------

/** The DataKit version a run reads, resolved when the run was created. */
export interface RunSource {
  datakitId: string
  version: number
  /** Absolute path of the version's Parquet copy. */
  parquetPath: string
  rows: number | null
}

export interface BuiltinSpec {
  kind: 'BUILTIN'
  task: Task
  target: string
  features: string[]
  algorithm: Algorithm
  params: ResolvedParams
  validationSplit: number
  source: RunSource
}

export interface ContainerSpec {
  kind: 'CONTAINER'
  task: Task
  image: string
  command: string[]
  resources: ContainerResources
  env: Record<string, string>
  target: string | null
  features: string[] | null
  params: Record<string, unknown>
  source: RunSource
}

export type RunSpec = BuiltinSpec | ContainerSpec

/** What a successful run leaves behind, as the actor registers it. */
export interface ArtifactInfo {
  /** MODEL_DIR-relative directory. */
  path: string
  format: 'quadrax.tabular' | 'files'
  inputSchema: unknown
  metrics: Record<string, number>
  files: { path: string; bytes: number }[]
  bytes: number
}

export interface LogEntry {
  stream: 'stdout' | 'stderr'
  line: string
  at: number
}

/** How a task reports back to its actor (each call is a message to it). */
export interface Reporter {
  metrics(points: MetricPoint[]): void
  logs(lines: LogEntry[]): void
  /** Resolves true when the actor registered the version; false when the run ended meanwhile. */
  succeeded(artifact: ArtifactInfo): Promise<boolean>
  failed(reason: string): void
}

export interface TaskEnv {
  /** Absolute MODEL_DIR. */
  modelDir: string
  maxRows: number
  containers: ContainerEngine | undefined
  /** User and group the container engine runs jobs as (owner of the output folder). */
  containerUser: { uid: number; gid: number }
  logger: Logger
}

// ---- reading a DataKit ---------------------------------------------------------------------

export type ColumnKind = 'number' | 'string' | 'boolean' | 'time' | 'unsupported'

export interface DataColumn {
  name: string
  /** DuckDB's type name. */
  type: string
  kind: ColumnKind
}

function lit(s: string): string {
  if (s.includes('\0')) throw new Error('path contains a NUL byte')
  return `'${s.replaceAll("'", "''")}'`
}

function ident(s: string): string {
  return `"${s.replaceAll('"', '""')}"`
}

export function kindOfType(type: string): ColumnKind {
  const t = type.toUpperCase()
  if (t === 'BOOLEAN') return 'boolean'
  if (/^(U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)|FLOAT|DOUBLE|REAL|DECIMAL(\(\d+,\s*\d+\))?)$/.test(t)) return 'number'
  if (t === 'VARCHAR' || t === 'UUID' || t.startsWith('ENUM(')) return 'string'
  if (/^(DATE|TIME|TIMESTAMP( WITH TIME ZONE)?|TIMESTAMP_(S|MS|NS)|TIMESTAMPTZ)$/.test(t)) return 'time'
  return 'unsupported'
}

/**
 * One DuckDB for one read, closed afterwards (the dataset engine does the same: nothing
 * outlives the operation). No extension is ever installed or loaded.
 */
async function withDuckDB<T>(signal: AbortSignal | undefined, fn: (c: DuckDBConnection) => Promise<T>): Promise<T> {
  signal?.throwIfAborted()
  const instance = await DuckDBInstance.create(':memory:', {
    threads: '2',
    memory_limit: '1GB',
    autoinstall_known_extensions: 'false',
    autoload_known_extensions: 'false',
    allow_community_extensions: 'false',
  })
  const conn = await instance.connect()
  const onAbort = () => conn.interrupt()
  signal?.addEventListener('abort', onAbort, { once: true })
  try {
    return await fn(conn)
  } catch (err) {
    if (signal?.aborted) throw signal.reason
    throw err
  } finally {
    signal?.removeEventListener('abort', onAbort)
    conn.closeSync()
    instance.closeSync()
  }
}

/** Columns of a Parquet file with their types (a request is checked against them). */
export async function describeData(parquetPath: string): Promise<DataColumn[]> {
  return withDuckDB(undefined, async (c) => {
    const rows = (await c.runAndReadAll(`DESCRIBE SELECT * FROM read_parquet(${lit(parquetPath)})`)).getRowObjectsJS() as { column_name: string; column_type: string }[]
    return rows.map((r) => ({ name: r.column_name, type: r.column_type, kind: kindOfType(r.column_type) }))
  })
}

/**
 * The named columns of a Parquet file as column arrays the trainer takes: numbers as
 * doubles, text as strings, booleans, dates and times as seconds since the epoch.
 */
export async function readColumns(parquetPath: string, columns: DataColumn[], maxRows: number, signal?: AbortSignal): Promise<Record<string, unknown[]>> {
  return withDuckDB(signal, async (c) => {
    const source = `read_parquet(${lit(parquetPath)})`
    const count = Number((await c.runAndReadAll(`SELECT count(*) AS n FROM ${source}`)).getRowObjectsJS()[0]!.n)
    if (count > maxRows) {
      throw new TrainingDataError(`The DataKit has ${count} rows; built-in training reads at most ${maxRows} (TRAINING_MAX_ROWS). Train on a sample: query one into a new DataKit version`)
    }
    const select = columns.map((col, i) => {
      const q = ident(col.name)
      const as = `c${i}`
      switch (col.kind) {
        case 'number':
          return `CAST(${q} AS DOUBLE) AS ${as}`
        case 'string':
          return `CAST(${q} AS VARCHAR) AS ${as}`
        case 'boolean':
          return `${q} AS ${as}`
        case 'time':
          return `CAST(epoch(${q}) AS DOUBLE) AS ${as}`
        case 'unsupported':
          throw new TrainingDataError(`Column "${col.name}" has type ${col.type}, which built-in training cannot use; leave it out of the features`, [{ field: col.name, message: `unsupported type ${col.type}` }])
      }
    })
    const reader = await c.runAndReadAll(`SELECT ${select.join(', ')} FROM ${source}`)
    const arrays = reader.getColumnsJS()
    const out: Record<string, unknown[]> = {}
    columns.forEach((col, i) => (out[col.name] = arrays[i] as unknown[]))
    return out
  })
}

// ---- the built-in trainer --------------------------------------------------------------------

/** Final metrics are logged under `eval_<name>` so they never mix with the per-epoch series of the same name. */
export const EVAL_PREFIX = 'eval_'

function points(metrics: Record<string, number>, step: number, prefix = ''): MetricPoint[] {
  const now = Date.now()
  return Object.entries(metrics)
    .filter(([, v]) => Number.isFinite(v))
    .map(([key, value]) => ({ key: prefix + key, value, step, timestamp: now }))
}

export async function runBuiltin(env: TaskEnv, spec: BuiltinSpec, artifactPath: string, signal: AbortSignal, report: Reporter): Promise<void> {
  const columns = await describeData(spec.source.parquetPath).catch((err) => {
    throw new TrainingDataError(`The DataKit's data could not be read (was the DataKit deleted?): ${err instanceof Error ? err.message : String(err)}`)
  })
  const byName = new Map(columns.map((c) => [c.name, c]))
  const wanted = [spec.target, ...spec.features].map((name) => {
    const col = byName.get(name)
    if (!col) throw new TrainingDataError(`Column "${name}" is not in DataKit version ${spec.source.version}`, [{ field: name, message: 'no such column' }])
    return col
  })
  const data = await readColumns(spec.source.parquetPath, wanted, env.maxRows, signal)
  // The resolved params (seed included) go back in as they were recorded; the network shape
  // is refused for the linear algorithms, which resolve it to nothing.
  const { hiddenUnits, activation, ...common } = spec.params
  const params = spec.algorithm === 'dense_network' ? spec.params : common
  const result = await train(
    { data, task: spec.task, target: spec.target, features: spec.features, algorithm: spec.algorithm, params, validationSplit: spec.validationSplit },
    { signal, onEpoch: (p) => report.metrics(points(p.metrics, p.epoch)) },
  )
  const dir = join(env.modelDir, artifactPath)
  await rm(dir, { recursive: true, force: true })
  await saveArtifact(dir, result.artifact)
  report.metrics(points(result.metrics, spec.params.epochs, EVAL_PREFIX))
  const files = await listFiles(dir)
  const ok = await report.succeeded({
    path: artifactPath,
    format: 'quadrax.tabular',
    inputSchema: result.artifact.inputSchema,
    metrics: result.metrics,
    files,
    bytes: files.reduce((n, f) => n + f.bytes, 0),
  })
  if (!ok) await rm(dir, { recursive: true, force: true })
}

// ---- custom training in a container ------------------------------------------------------------

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
export function parseMetricLine(line: string, now: number): MetricPoint | null {
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

/** Log lines a run streams at most; beyond it one notice says the rest was dropped. */
export const MAX_LOG_LINES = 10_000
const MAX_LINE = 4096
const FLUSH_MS = 200
const FLUSH_ITEMS = 200

/**
 * Buffers what a container prints and hands it to the actor in batches: one message per
 * FLUSH_MS or FLUSH_ITEMS, not one per line, so a chatty job costs a few turns a second.
 */
class OutputPump {
  readonly tail: string[] = []
  #metrics: MetricPoint[] = []
  #logs: LogEntry[] = []
  #lines = 0
  #timer: ReturnType<typeof setTimeout> | undefined
  constructor(readonly report: Reporter) {}

  push(l: LogLine): void {
    const now = Date.now()
    const m = parseMetricLine(l.line, now)
    if (m) this.#metrics.push(m)
    else {
      this.tail.push(l.line.slice(0, 300))
      if (this.tail.length > 5) this.tail.shift()
      this.#lines++
      if (this.#lines <= MAX_LOG_LINES) this.#logs.push({ stream: l.stream, line: l.line.length > MAX_LINE ? l.line.slice(0, MAX_LINE) + '…' : l.line, at: l.at?.getTime() ?? now })
      else if (this.#lines === MAX_LOG_LINES + 1) this.#logs.push({ stream: 'stderr', line: `[quadrax] more than ${MAX_LOG_LINES} log lines: the rest is not streamed`, at: now })
    }
    if (this.#metrics.length + this.#logs.length >= FLUSH_ITEMS) this.flush()
    else this.#timer ??= setTimeout(() => this.flush(), FLUSH_MS)
  }

  flush(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    if (this.#metrics.length) this.report.metrics(this.#metrics.splice(0))
    if (this.#logs.length) this.report.logs(this.#logs.splice(0))
  }
}

/** The host path of a DataKit's Parquet copy handed to a container: a hard link when possible. */
async function linkOrCopy(src: string, dest: string): Promise<void> {
  await rm(dest, { force: true })
  try {
    await link(src, dest)
  } catch {
    await copyFile(src, dest)
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
    await withDuckDB(signal, (c) =>
      c.run(`COPY (SELECT * FROM read_parquet(${lit(join(input, 'data.parquet'))})) TO ${lit(join(input, 'data.csv'))} (HEADER, DELIMITER ',')`),
    )
    await writeFile(
      join(input, 'spec.json'),
      JSON.stringify({ runId: run.id, modelId: run.modelId, task: spec.task, target: spec.target, features: spec.features, params: spec.params, datakit: { id: spec.source.datakitId, version: spec.source.version } }, null, 2),
    )
    for (const f of ['data.parquet', 'data.csv', 'spec.json']) await chmod(join(input, f), 0o644)
    await chmod(input, 0o755)
    // The job runs as an unprivileged user: it must own the one folder it may write.
    await chmod(output, 0o755)
    await chown(output, env.containerUser.uid, env.containerUser.gid).catch(() => chmod(output, 0o777))

    const pump = new OutputPump(report)
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
      { signal, onLine: (l) => pump.push(l) },
    )
    pump.flush()
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
