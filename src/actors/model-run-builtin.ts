/**
 * Built-in training: the DataKit's columns read through the dataset engine, a model trained
 * by the tfjs trainer (a Bun Worker), the artifact written under MODEL_DIR.
 */
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { saveArtifact, train, TrainingDataError } from '../engines/trainer/trainer.ts'
import type { MetricPoint } from '../store/model-runs.ts'
import { listFiles } from './model-run-container.ts'
import { describeColumns, type BuiltinSpec, type DataColumn, type Reporter, type RunSource, type TaskEnv } from './model-run-spec.ts'

/**
 * The named columns of a version's Parquet copy as the trainer takes them: numbers as
 * doubles, text as strings, booleans, dates and times as seconds since the epoch.
 */
async function readColumns(env: TaskEnv, source: RunSource, columns: DataColumn[], signal: AbortSignal, user: string): Promise<Record<string, unknown[]>> {
  const wanted = columns.map((col) => {
    if (col.kind === 'unsupported') {
      throw new TrainingDataError(`Column "${col.name}" has type ${col.type}, which built-in training cannot use; leave it out of the features`, [{ field: col.name, message: `unsupported type ${col.type}` }])
    }
    return { name: col.name, as: col.kind }
  })
  return env.datasets.readColumns(source.parquetPath, wanted, {
    user,
    maxRows: env.maxRows,
    signal,
    tooMany: (count) =>
      new TrainingDataError(`The DataKit has ${count} rows; built-in training reads at most ${env.maxRows} (TRAINING_MAX_ROWS). Train on a sample: query one into a new DataKit version`),
  })
}

/** Final metrics are logged under `eval_<name>` so they never mix with the per-epoch series of the same name. */
const EVAL_PREFIX = 'eval_'

function points(metrics: Record<string, number>, step: number, prefix = ''): MetricPoint[] {
  const now = Date.now()
  return Object.entries(metrics)
    .filter(([, v]) => Number.isFinite(v))
    .map(([key, value]) => ({ key: prefix + key, value, step, timestamp: now }))
}

/** `user`: on whose behalf the DataKit is read (their share of the dataset engine's slots). */
export async function runBuiltin(env: TaskEnv, spec: BuiltinSpec, artifactPath: string, signal: AbortSignal, report: Reporter, user: string): Promise<void> {
  const columns = await describeColumns(env.datasets, spec.source.parquetPath, user).catch((err) => {
    throw new TrainingDataError(`The DataKit's data could not be read (was the DataKit deleted?): ${err instanceof Error ? err.message : String(err)}`)
  })
  const byName = new Map(columns.map((c) => [c.name, c]))
  const wanted = [spec.target, ...spec.features].map((name) => {
    const col = byName.get(name)
    if (!col) throw new TrainingDataError(`Column "${name}" is not in DataKit version ${spec.source.version}`, [{ field: name, message: 'no such column' }])
    return col
  })
  const data = await readColumns(env, spec.source, wanted, signal, user)
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
