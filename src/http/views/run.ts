/** Training runs as the API shows them: schemas, and the run with its params, tags and latest metrics. */
import { t } from 'elysia'
import type { RunSpec } from '../../actors/model-run-spec.ts'
import type { Db } from '../../store/db.ts'
import * as store from '../../store/model-runs.ts'

/** Most metric points one history read returns. */
export const MAX_HISTORY = 25_000

const RUN_EXAMPLE = {
  id: 'c4d2e6f8-0a1b-4c3d-9e5f-7a8b9c0d1e2f',
  modelId: 'a1f3c5e7-2b4d-4f6a-8c0e-1d3f5b7d9e2a',
  status: 'SUCCEEDED',
  runKind: 'BUILTIN',
  error: null,
  version: 3,
  datakitId: '5e7a9c1b-3d5f-4a7b-8c9d-0e1f2a3b4c5d',
  datakitVersion: 2,
  timeoutSeconds: 3600,
  attempts: 1,
  spec: {
    kind: 'BUILTIN',
    task: 'CLASSIFICATION',
    target: 'purchased',
    features: ['age', 'income', 'location'],
    algorithm: 'dense_network',
    params: { epochs: 20, batchSize: 32, learningRate: 0.01, optimizer: 'adam', hiddenUnits: [32, 16], activation: 'relu', seed: 42, maxCategories: 100 },
    validationSplit: 0.2,
    source: { datakitId: '5e7a9c1b-3d5f-4a7b-8c9d-0e1f2a3b4c5d', version: 2, rows: 12000 },
  },
  params: { algorithm: 'dense_network', batchSize: '32', epochs: '20', learningRate: '0.01', target: 'purchased', validationSplit: '0.2' },
  tags: { experiment: 'baseline', 'quadrax.datakit': '5e7a9c1b-3d5f-4a7b-8c9d-0e1f2a3b4c5d@2' },
  metrics: { accuracy: 0.918, eval_accuracy: 0.912, loss: 0.231, val_accuracy: 0.905, val_loss: 0.254 },
  createdAt: '2026-12-04T10:11:02.000Z',
  startedAt: '2026-12-04T10:11:03.000Z',
  finishedAt: '2026-12-04T10:12:41.000Z',
  updatedAt: '2026-12-04T10:12:41.000Z',
}

export namespace RunModel {
  export const status = t.Union([t.Literal('QUEUED'), t.Literal('RUNNING'), t.Literal('SUCCEEDED'), t.Literal('FAILED'), t.Literal('CANCELLED')])
  export const point = t.Object(
    { key: t.String(), value: t.Number(), step: t.Integer(), timestamp: t.Integer({ description: 'Milliseconds since the epoch' }) },
    { title: 'MetricPoint', examples: [{ key: 'val_loss', value: 0.254, step: 19, timestamp: 1796379160000 }] },
  )
  /** A metric's history, by key then step. */
  export const points = t.Array(point, {
    examples: [
      [
        { key: 'val_loss', value: 0.412, step: 0, timestamp: 1796379065000 },
        { key: 'val_loss', value: 0.318, step: 1, timestamp: 1796379070000 },
        { key: 'val_loss', value: 0.254, step: 2, timestamp: 1796379075000 },
      ],
    ],
  })
  export const run = t.Object(
    {
      id: t.String({ format: 'uuid' }),
      modelId: t.String({ format: 'uuid' }),
      status,
      runKind: t.Union([t.Literal('BUILTIN'), t.Literal('CONTAINER')]),
      error: t.Union([t.String(), t.Null()], { description: 'Why the run FAILED (or was CANCELLED), in words a user can act on' }),
      version: t.Union([t.Integer(), t.Null()], { description: 'The model version this run registered' }),
      datakitId: t.Union([t.String({ format: 'uuid' }), t.Null()]),
      datakitVersion: t.Union([t.Integer(), t.Null()]),
      timeoutSeconds: t.Integer(),
      attempts: t.Integer({ description: 'Started again after its server stopped: 2, 3…' }),
      spec: t.Record(t.String(), t.Unknown(), { description: 'What the run does (environment variables of a container run: names only)' }),
      params: t.Record(t.String(), t.String()),
      tags: t.Record(t.String(), t.String()),
      metrics: t.Record(t.String(), t.Number(), { description: 'Latest value of each metric' }),
      createdAt: t.String({ format: 'date-time' }),
      startedAt: t.Union([t.String({ format: 'date-time' }), t.Null()]),
      finishedAt: t.Union([t.String({ format: 'date-time' }), t.Null()]),
      updatedAt: t.String({ format: 'date-time' }),
    },
    { title: 'Run', examples: [RUN_EXAMPLE] },
  )
  export const listQuery = t.Object({
    limit: t.Optional(t.Integer({ minimum: 1, maximum: 100, default: 20, description: 'Page size (1–100)' })),
    cursor: t.Optional(t.String({ maxLength: 64, description: 'The `meta.nextCursor` of the previous page' })),
    filter: t.Optional(
      t.String({
        maxLength: 2000,
        description:
          "MLflow search syntax: clauses `field op value` joined by AND (at most 20). Fields: `metrics.<key>` (numbers: = != < <= > >=), `params.<key>` and `tags.<key>` (quoted text: = !=), and `status`, `run_kind`, `version`, `created_at`, `start_time`, `end_time` (times as quoted ISO dates)",
        examples: ["metrics.val_accuracy > 0.9 and params.algorithm = 'dense_network' and status = 'SUCCEEDED'"],
      }),
    ),
    orderBy: t.Optional(
      t.String({ maxLength: 500, description: 'Up to 3 fields, each with ASC or DESC, comma-separated (default: newest first)', examples: ['metrics.val_loss ASC, created_at DESC'] }),
    ),
  })
  export const metricsQuery = t.Object({
    key: t.Optional(t.String({ minLength: 1, maxLength: 250, description: 'One metric (default: all)', examples: ['val_loss'] })),
    limit: t.Optional(t.Integer({ minimum: 1, maximum: MAX_HISTORY, default: MAX_HISTORY, description: `Most points returned (1–${MAX_HISTORY})` })),
  })
}

/** The spec as users see it: never the server's file paths. */
function publicSpec(spec: RunSpec): Record<string, unknown> {
  const source = { datakitId: spec.source.datakitId, version: spec.source.version, rows: spec.source.rows }
  if (spec.kind === 'BUILTIN') {
    const { task, target, features, algorithm, params, validationSplit } = spec
    return { kind: spec.kind, task, target, features, algorithm, params, validationSplit, source }
  }
  const { task, image, command, resources, target, features, params } = spec
  // Environment values may be credentials the job needs: only their names are shown.
  return { kind: spec.kind, task, image, command, resources, env: Object.keys(spec.env), target, features, params, source }
}

export async function serializeRun(deps: { sql: Db }, r: store.RunRow) {
  const [params, tags, latest] = await Promise.all([store.runParams(deps.sql, r.id), store.runTags(deps.sql, r.id), store.latestMetrics(deps.sql, r.id)])
  return {
    id: r.id,
    modelId: r.modelId,
    status: r.status,
    runKind: r.runKind,
    error: r.error,
    version: r.version,
    datakitId: r.datakitId,
    datakitVersion: r.datakitVersion,
    timeoutSeconds: r.timeoutSeconds,
    attempts: r.attempts,
    spec: publicSpec(r.spec as unknown as RunSpec),
    params,
    tags,
    metrics: Object.fromEntries(latest.map((p) => [p.key, p.value])),
    createdAt: r.createdAt.toISOString(),
    startedAt: r.startedAt ? r.startedAt.toISOString() : null,
    finishedAt: r.finishedAt ? r.finishedAt.toISOString() : null,
    updatedAt: r.updatedAt.toISOString(),
  }
}
