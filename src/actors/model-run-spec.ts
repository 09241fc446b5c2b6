/**
 * What a training run is asked to do (stored as model_runs.spec) and what its work reports
 * back; where its artifact goes; which DataKit columns built-in training can use.
 */
import { join } from 'node:path'
import type { Logger } from '../core/logger.ts'
import type { ContainerEngine, ContainerResources } from '../engines/containers/engine.ts'
import type { DatasetEngine } from '../engines/datasets/engine.ts'
import type { Algorithm, ResolvedParams, Task } from '../engines/trainer/spec.ts'
import type { MetricPoint } from '../store/model-runs.ts'

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
  /** A piece of a line longer than CONTAINER_LOG_LINE_MAX_BYTES: it goes on in the stream's next entry. */
  partial?: true
  /** Written by the platform, not the job (a limit reached, output dropped). */
  notice?: true
}

/** How a task reports back to its actor (each call is a message to it). */
export interface Reporter {
  metrics(points: MetricPoint[]): void
  /** `droppedBytes`: the run's final count of output dropped past its limits (recorded on the run). */
  logs(lines: LogEntry[], droppedBytes?: number): void
  /** Resolves true when the actor registered the version; false when the run ended meanwhile. */
  succeeded(artifact: ArtifactInfo): Promise<boolean>
  failed(reason: string): void
}

export interface TaskEnv {
  /** Absolute MODEL_DIR. */
  modelDir: string
  maxRows: number
  /** Reads the DataKit's Parquet copy (its background slots, threads and memory limit). */
  datasets: DatasetEngine
  containers: ContainerEngine | undefined
  /** User and group the container engine runs jobs as (owner of the output folder). */
  containerUser: { uid: number; gid: number }
  /** TRAINING_LOG_MAX_BYTES: output of one container run kept and streamed; the rest is counted. */
  logMaxBytes: number
  /** TRAINING_OUTPUT_BYTES_PER_SECOND: a container run printing faster is slowed to this. */
  outputBytesPerSecond: number
  /** TRAINING_OUTPUT_LINES_PER_SECOND: a container run printing more lines a second is slowed to this. */
  outputLinesPerSecond: number
  logger: Logger
}

type ColumnKind = 'number' | 'string' | 'boolean' | 'time' | 'unsupported'

export interface DataColumn {
  name: string
  /** DuckDB's type name. */
  type: string
  kind: ColumnKind
}

/** How built-in training can use a column, from DuckDB's type name. */
function kindOfType(type: string): ColumnKind {
  const t = type.toUpperCase()
  if (t === 'BOOLEAN') return 'boolean'
  if (/^(U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)|FLOAT|DOUBLE|REAL|DECIMAL(\(\d+,\s*\d+\))?)$/.test(t)) return 'number'
  if (t === 'VARCHAR' || t === 'UUID' || t.startsWith('ENUM(')) return 'string'
  if (/^(DATE|TIME|TIMESTAMP( WITH TIME ZONE)?|TIMESTAMP_(S|MS|NS)|TIMESTAMPTZ)$/.test(t)) return 'time'
  return 'unsupported'
}

/** The columns of a DataKit version with what built-in training can make of them (read in `user`'s share of the dataset engine). */
export async function describeColumns(datasets: DatasetEngine, parquetPath: string, user: string): Promise<DataColumn[]> {
  return (await datasets.describe(parquetPath, { user })).map((c) => ({ name: c.name, type: c.type, kind: kindOfType(c.type) }))
}

/**
 * MODEL_DIR-relative directory of a run attempt's artifact (also its container's /output).
 * Per attempt: an attempt that lost its node's shard may still be writing when the next one
 * starts elsewhere, and the two must never share a folder.
 */
export function runArtifactPath(modelId: string, runId: string, attempt: number): string {
  return join(modelId, 'runs', runId, `attempt-${attempt}`)
}
