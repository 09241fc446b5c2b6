/**
 * Planning a training run: a train request checked against the model, the DataKit version it
 * names (owner, status, columns) and the configuration, and turned into the run's spec,
 * MLflow-style params and tags. No HTTP here: the edge hands the plan to the run's actor.
 */
import { Type as T, type Static } from '@sinclair/typebox'
import type { Config } from '../config.ts'
import { ConflictError, NotFoundError, UnprocessableError, ValidationError, type ErrorDetail } from '../core/errors.ts'
import type { Principal } from '../auth/principal.ts'
import { checkEnv, checkResources, engineUnavailable, type ContainerEngine } from '../engines/containers/engine.ts'
import type { DatasetEngine } from '../engines/datasets/engine.ts'
import { AlgorithmSchema, resolveSettings } from '../engines/trainer/spec.ts'
import * as datakits from '../store/datakits.ts'
import type { Db } from '../store/db.ts'
import type { ModelRow } from '../store/models.ts'
import * as orgs from '../store/orgs.ts'
import { datakitFiles } from './datakit-files.ts'
import type { ModelRunMessage } from './model-run.ts'
import { describeColumns, type BuiltinSpec, type ContainerSpec, type DataColumn, type RunSource } from './model-run-spec.ts'

/** A container run without `resources`: one core, 512 MB. */
const DEFAULT_RESOURCES = { cpu: 1, memory: 512 }

/** POST /api/models/:id/train. */
export const TrainRequest = T.Object(
  {
    datakitId: T.String({ format: 'uuid', error: 'datakitId must be a DataKit id' }),
    datakitVersion: T.Optional(T.Integer({ minimum: 1, description: 'Default: the DataKit\'s current version' })),
    target: T.Optional(T.String({ minLength: 1, maxLength: 250, description: 'Column to predict (required for built-in training)' })),
    features: T.Optional(T.Array(T.String({ minLength: 1, maxLength: 250 }), { minItems: 1, maxItems: 1000, uniqueItems: true, description: 'Input columns (default: every other usable column)' })),
    algorithm: T.Optional(AlgorithmSchema),
    params: T.Optional(T.Record(T.String({ maxLength: 250 }), T.Unknown(), { description: 'Built-in: epochs, batchSize, learningRate, optimizer, hiddenUnits, activation, seed, maxCategories. Container: anything, handed to the job in /input/spec.json' })),
    validationSplit: T.Optional(T.Number({ minimum: 0, maximum: 0.9 })),
    timeoutSeconds: T.Optional(T.Integer({ minimum: 1, description: 'Default TRAINING_TIMEOUT_SECONDS, at most TRAINING_MAX_TIMEOUT_SECONDS' })),
    image: T.Optional(T.String({ minLength: 1, maxLength: 255, description: 'Custom training: an image from TRAINING_IMAGES' })),
    command: T.Optional(T.Array(T.String({ maxLength: 65_536 }), { minItems: 1, maxItems: 64, description: 'Custom training: the command the container runs' })),
    resources: T.Optional(
      T.Object({ cpu: T.Number({ exclusiveMinimum: 0, maximum: 256 }), memory: T.Integer({ minimum: 16, maximum: 4 * 1024 * 1024, description: 'MB' }), gpu: T.Optional(T.Boolean()) }, { additionalProperties: false }),
    ),
    env: T.Optional(T.Record(T.String({ maxLength: 128 }), T.String({ maxLength: 4096 }), { description: 'Custom training: environment variables for the job' })),
    tags: T.Optional(T.Record(T.String({ minLength: 1, maxLength: 250 }), T.String({ maxLength: 5000 }), { description: 'MLflow-style run tags' })),
  },
  { additionalProperties: false },
)
export type TrainRequest = Static<typeof TrainRequest>

/** What planning reads: SQL, the engines, where DataKit files are, and the training settings. */
export interface PlanEnv {
  sql: Db
  datasets: DatasetEngine
  containers: ContainerEngine | undefined
  /** UPLOAD_DIR/datakits. */
  datakitDir: string
  config: Config['models']
}

/**
 * May `me`, training `model`, read `src`? A DataKit shared in the model's org, or in another
 * org the caller is in; a personal one of the model's owner when the caller is that owner or
 * the model is personal (runs of a personal model are its owner's).
 */
async function trainsOn(sql: Db, me: Principal, model: ModelRow, src: datakits.TrainingSource): Promise<boolean> {
  if (src.orgId) return src.orgId === model.orgId || (await orgs.roleOf(sql, src.orgId, me.userId)) !== null
  return src.ownerId === model.userId && (model.orgId === null || src.ownerId === me.userId)
}

/** Check a train request and build the run's spec, params and tags (400/404/409/422 with the field). */
export async function planRun(env: PlanEnv, me: Principal, model: ModelRow, body: TrainRequest) {
  const cfg = env.config
  const timeoutSeconds = body.timeoutSeconds ?? cfg.defaultTimeoutSeconds
  if (timeoutSeconds > cfg.maxTimeoutSeconds) throw new ValidationError('Validation failed', [{ field: 'timeoutSeconds', message: `must be at most ${cfg.maxTimeoutSeconds} (TRAINING_MAX_TIMEOUT_SECONDS)` }])

  const src = await datakits.findTrainingSource(env.sql, body.datakitId, body.datakitVersion)
  // Another user's DataKit is as missing as one that does not exist.
  if (!src || !(me.role === 'ADMIN' || (await trainsOn(env.sql, me, model, src)))) throw new NotFoundError(body.datakitVersion !== undefined ? 'DataKit version' : 'DataKit')
  if (src.status === 'PROCESSING') throw new ConflictError(`DataKit version ${src.version} is still being processed; train once it is READY`, [{ field: 'datakitId', message: 'not READY yet' }])
  if (src.status === 'FAILED') throw new UnprocessableError(`DataKit version ${src.version} failed to process and cannot be trained on; upload a corrected file`, [{ field: 'datakitId', message: 'version FAILED' }])
  const source: RunSource = { datakitId: src.datakitId, version: src.version, parquetPath: datakitFiles(env.datakitDir, src.fileId).parquet, rows: src.rowCount }
  let columns: DataColumn[]
  try {
    columns = await describeColumns(env.datasets, source.parquetPath, me.userId)
  } catch (err) {
    // The user learns what to do; the cause (DuckDB's error) stays on the error, and the edge
    // logs it with the request id (src/http/plugins/errors.ts).
    throw new UnprocessableError(`The data of DataKit version ${src.version} cannot be read; upload it again`, [{ field: 'datakitId', message: 'data unreadable' }], err)
  }
  const byName = new Map(columns.map((col) => [col.name, col]))
  const details: ErrorDetail[] = []
  if (body.target !== undefined && !byName.has(body.target)) details.push({ field: 'target', message: `no column "${body.target}" in the DataKit (columns: ${columns.map((x) => x.name).slice(0, 30).join(', ')})` })
  body.features?.forEach((f, i) => {
    const col = byName.get(f)
    if (!col) details.push({ field: `features[${i}]`, message: `no column "${f}" in the DataKit` })
    else if (col.kind === 'unsupported' && body.image === undefined) details.push({ field: `features[${i}]`, message: `column "${f}" has type ${col.type}, which built-in training cannot use` })
  })
  if (details.length) throw new UnprocessableError('The DataKit does not have what this run needs', details)
  const tags: Record<string, string> = { ...(body.tags ?? {}) }
  tags['quadrax.datakit'] = `${src.datakitId}@${src.version}`
  tags['quadrax.user'] = me.userId

  const isContainer = body.image !== undefined || body.command !== undefined
  if (!isContainer) {
    for (const f of ['resources', 'env'] as const) {
      if (body[f] !== undefined) throw new ValidationError('Validation failed', [{ field: f, message: 'applies only to container runs (with image and command)' }])
    }
    if (model.framework !== 'TENSORFLOW') {
      throw new UnprocessableError(`Built-in training trains TENSORFLOW models; this model is ${model.framework}: train it in a container (image and command)`, [{ field: 'image', message: 'required for this framework' }])
    }
    if (body.target === undefined) throw new ValidationError('Validation failed', [{ field: 'target', message: 'is required: the column to predict' }])
    const target = body.target
    const features = body.features ?? columns.filter((col) => col.name !== target && col.kind !== 'unsupported').map((col) => col.name)
    const skipped = body.features ? [] : columns.filter((col) => col.name !== target && col.kind === 'unsupported').map((col) => col.name)
    if (features.length === 0) throw new UnprocessableError('No usable feature columns: the DataKit has only the target column', [{ field: 'features', message: 'none usable' }])
    if (skipped.length) tags['quadrax.skipped_columns'] = skipped.join(',')
    const settings = resolveSettings({ task: model.type, target, features, algorithm: body.algorithm, params: body.params, validationSplit: body.validationSplit })
    const spec: BuiltinSpec = {
      kind: 'BUILTIN',
      task: model.type,
      target,
      features,
      algorithm: settings.algorithm,
      params: settings.params,
      validationSplit: settings.validationSplit,
      source,
    }
    const p = settings.params
    const params: Record<string, string> = {
      algorithm: settings.algorithm,
      target,
      features: JSON.stringify(features),
      epochs: String(p.epochs),
      batchSize: String(p.batchSize),
      learningRate: String(p.learningRate),
      optimizer: p.optimizer,
      seed: String(p.seed),
      maxCategories: String(p.maxCategories),
      validationSplit: String(settings.validationSplit),
      datakitId: src.datakitId,
      datakitVersion: String(src.version),
    }
    if (settings.algorithm === 'dense_network') {
      params.hiddenUnits = JSON.stringify(p.hiddenUnits)
      params.activation = p.activation
    }
    return { runKind: 'BUILTIN' as const, spec, params, tags, timeoutSeconds, source }
  }

  if (body.algorithm !== undefined || body.validationSplit !== undefined) {
    throw new ValidationError('Validation failed', [{ field: body.algorithm !== undefined ? 'algorithm' : 'validationSplit', message: 'applies only to built-in training (a container run reads params from /input/spec.json)' }])
  }
  if (body.image === undefined) throw new ValidationError('Validation failed', [{ field: 'image', message: `is required with command: one of ${cfg.trainingImages.join(', ')}` }])
  if (body.command === undefined) throw new ValidationError('Validation failed', [{ field: 'command', message: 'is required with image: the command the container runs' }])
  if (!cfg.trainingImages.includes(body.image)) {
    throw new UnprocessableError(`Image ${JSON.stringify(body.image)} is not allowed for training; choose one of: ${cfg.trainingImages.join(', ')}`, [{ field: 'image', message: 'not on the allow-list (TRAINING_IMAGES)' }])
  }
  if (!env.containers) throw engineUnavailable()
  const resources = checkResources(body.resources ?? DEFAULT_RESOURCES)
  // More cores, memory or GPU than the engine has is a 422 here, not a run that fails later.
  await env.containers.checkPlacement(null, resources)
  const jobEnv = body.env ?? {}
  checkEnv(jobEnv)
  const spec: ContainerSpec = {
    kind: 'CONTAINER',
    task: model.type,
    image: body.image,
    command: body.command,
    resources,
    env: jobEnv,
    target: body.target ?? null,
    features: body.features ?? null,
    params: body.params ?? {},
    source,
  }
  const params: Record<string, string> = { image: body.image, command: JSON.stringify(body.command), cpu: String(resources.cpu), memory: String(resources.memory), datakitId: src.datakitId, datakitVersion: String(src.version) }
  if (body.target !== undefined) params.target = body.target
  if (body.features !== undefined) params.features = JSON.stringify(body.features)
  for (const [k, v] of Object.entries(body.params ?? {})) params[k] ??= typeof v === 'string' ? v : JSON.stringify(v)
  return { runKind: 'CONTAINER' as const, spec, params, tags, timeoutSeconds, source }
}

/**
 * The `model-run` actor's `create` message for a planned run: what POST /api/models/:id/train
 * and a pipeline's `model.train` step both send (the run belongs to the model's owner).
 */
export function createRunMessage(model: ModelRow, plan: Awaited<ReturnType<typeof planRun>>): ModelRunMessage {
  return {
    type: 'create',
    run: {
      modelId: model.id,
      userId: model.userId,
      runKind: plan.runKind,
      spec: plan.spec as unknown as Record<string, unknown>,
      datakitId: plan.source.datakitId,
      datakitVersion: plan.source.version,
      timeoutSeconds: plan.timeoutSeconds,
      params: plan.params,
      tags: plan.tags,
    },
  }
}
