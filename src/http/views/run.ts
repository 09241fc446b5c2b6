/** Training runs as the API shows them: schemas, and the run with its params, tags and latest metrics. */
import { t } from 'elysia'
import type { RunSpec } from '../../actors/model-run-spec.ts'
import type { Db } from '../../store/db.ts'
import * as store from '../../store/model-runs.ts'

/** Most metric points one history read returns. */
export const MAX_HISTORY = 25_000

export namespace RunModel {
  export const status = t.Union([t.Literal('QUEUED'), t.Literal('RUNNING'), t.Literal('SUCCEEDED'), t.Literal('FAILED'), t.Literal('CANCELLED')])
  export const point = t.Object({ key: t.String(), value: t.Number(), step: t.Integer(), timestamp: t.Integer({ description: 'Milliseconds since the epoch' }) }, { title: 'MetricPoint' })
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
      attempts: t.Integer(),
      spec: t.Record(t.String(), t.Unknown()),
      params: t.Record(t.String(), t.String()),
      tags: t.Record(t.String(), t.String()),
      metrics: t.Record(t.String(), t.Number(), { description: 'Latest value of each metric' }),
      createdAt: t.String({ format: 'date-time' }),
      startedAt: t.Union([t.String({ format: 'date-time' }), t.Null()]),
      finishedAt: t.Union([t.String({ format: 'date-time' }), t.Null()]),
      updatedAt: t.String({ format: 'date-time' }),
    },
    { title: 'Run' },
  )
  export const listQuery = t.Object({
    limit: t.Optional(t.Integer({ minimum: 1, maximum: 100, default: 20, description: 'Page size (1–100)' })),
    cursor: t.Optional(t.String({ maxLength: 64, description: 'The `meta.nextCursor` of the previous page' })),
    filter: t.Optional(t.String({ maxLength: 2000, description: "MLflow search syntax: metrics.val_accuracy > 0.9 and params.algorithm = 'dense_network' and status = 'SUCCEEDED'" })),
    orderBy: t.Optional(t.String({ maxLength: 500, description: 'e.g. metrics.val_loss ASC (default: newest first)' })),
  })
  export const metricsQuery = t.Object({
    key: t.Optional(t.String({ minLength: 1, maxLength: 250, description: 'One metric (default: all)' })),
    limit: t.Optional(t.Integer({ minimum: 1, maximum: MAX_HISTORY, default: MAX_HISTORY })),
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
