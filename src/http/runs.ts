/**
 * Training runs, read and cancelled: GET /api/runs/:id, GET /api/runs/:id/metrics?key=,
 * POST /api/runs/:id/cancel, and a model's runs with MLflow-style search
 * (GET /api/models/:id/runs?filter=metrics.val_accuracy > 0.9&orderBy=metrics.val_loss ASC).
 * Runs are created by POST /api/models/:id/train (./models.ts). A run goes with its model:
 * its owner's, or shared in the model's organisation (findRun reads the model's org), where
 * VIEWERs read runs, metrics and logs and MEMBERs cancel; a platform VIEWER reads but cannot cancel.
 */
import { Elysia, t } from 'elysia'
import { ValidationError } from '../core/errors.ts'
import type { ModelRunMessage } from '../actors/model-run.ts'
import { access } from '../auth/route-access.ts'
import * as models from '../store/models.ts'
import * as store from '../store/model-runs.ts'
import { parseRunFilter, parseRunOrder } from '../store/run-filter.ts'
import { authorize, Envelope, errors, ok, type HttpDeps } from './context.ts'
import { MAX_HISTORY, RunModel, serializeRun } from './views/run.ts'

/** Deepest page of a model's runs (offset paging). */
const MAX_OFFSET = 100_000

const idParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid run id' }) })
const modelParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid model id' }) })

/** The caller and the run, if the access policy lets the caller do `action` to it (401/403/404). */
function run(deps: HttpDeps, request: Request, id: string, action: 'read' | 'change') {
  return authorize(deps, request, { resource: 'run', action, label: 'Run', load: () => store.findRun(deps.sql, id) })
}

function decodeOffset(cursor: string | undefined): number {
  if (cursor === undefined || cursor === '') return 0
  const n = /^o(\d{1,6})$/.exec(cursor)
  if (!n || Number(n[1]) > MAX_OFFSET) throw new ValidationError('Validation failed', [{ field: 'cursor', message: 'Invalid cursor' }])
  return Number(n[1])
}

export function runRoutes(deps: HttpDeps) {
  return new Elysia()
    .get(
      '/api/runs/:id',
      async ({ request, params }) => ok(await serializeRun(deps, (await run(deps, request, params.id, 'read')).obj)),
      {
        params: idParams,
        response: { 200: Envelope.data(RunModel.run), ...errors(400, 404) },
        detail: {
          summary: 'Get a training run',
          description:
            'The run: its status (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED), `error` (why it failed, in words a user can act on), the `version` it registered, ' +
            'its spec, MLflow-style `params` and `tags` (`quadrax.dropped_output_bytes` when a container run printed past its limits), the latest value of each metric, ' +
            '`attempts` (2 or more when it was started again after its server stopped) and times. Follow it live on the topic `run:<id>` (WebSocket `/ws`).',
          tags: ['Runs'],
          ...access.object('run', 'read'),
        },
      },
    )
    .get(
      '/api/runs/:id/metrics',
      async ({ request, params, query }) => {
        const { obj: r } = await run(deps, request, params.id, 'read')
        return ok(await store.metricHistory(deps.sql, r.id, { key: query.key, limit: query.limit ?? MAX_HISTORY }))
      },
      {
        params: idParams,
        query: RunModel.metricsQuery,
        response: { 200: Envelope.data(RunModel.points), ...errors(400, 404) },
        detail: {
          summary: "Read a run's metric history",
          description: `Every logged point \`{key, value, step, timestamp}\` of the run's metrics (or of one, with \`key\`), by key then step; at most \`limit\` points (default and maximum ${MAX_HISTORY}).`,
          tags: ['Runs'],
          ...access.object('run', 'read'),
        },
      },
    )
    .post(
      '/api/runs/:id/cancel',
      async ({ request, params }) => {
        const { obj: r } = await run(deps, request, params.id, 'change')
        await deps.actors.ask('model-run', r.id, { type: 'cancel' } satisfies ModelRunMessage)
        return ok(await serializeRun(deps, (await store.findRun(deps.sql, r.id))!))
      },
      {
        params: idParams,
        response: { 200: Envelope.data(RunModel.run), ...errors(400, 403, 404, 409) },
        detail: {
          summary: 'Cancel a training run',
          description:
            'Ends a QUEUED or RUNNING run as CANCELLED at once: its training stops (the Worker is terminated, the container killed), nothing of it is registered, ' +
            'and its slot and compute quota are freed. A `status` event goes to `run:<id>` (and `model-run.status` to `user:<id>`). 409 once the run has ended.',
          tags: ['Runs'],
          ...access.object('run', 'change'),
        },
      },
    )
    .get(
      '/api/models/:id/runs',
      async ({ request, params, query }) => {
        const { obj: m } = await authorize(deps, request, { resource: 'model', action: 'read', label: 'Model', load: () => models.findModel(deps.sql, params.id) })
        const limit = query.limit ?? 20
        const offset = decodeOffset(query.cursor)
        const page = await store.listRuns(deps.sql, { modelId: m.id, filter: parseRunFilter(query.filter), order: parseRunOrder(query.orderBy), limit, offset })
        const items = await Promise.all(page.items.map((r) => serializeRun(deps, r)))
        return ok(items, { nextCursor: page.more && offset + limit <= MAX_OFFSET ? `o${offset + limit}` : null, limit })
      },
      {
        params: modelParams,
        query: RunModel.listQuery,
        response: { 200: Envelope.list(RunModel.run), ...errors(400, 404) },
        detail: {
          summary: "Search a model's training runs",
          description:
            "The model's runs, newest first, searchable like MLflow's `search_runs`: `filter` such as `metrics.val_accuracy > 0.9 and params.algorithm = 'dense_network'`, " +
            '`orderBy` such as `metrics.val_loss ASC` (runs without the metric last). A page at a time: `limit`, and `cursor` from the previous page\'s `meta.nextCursor` ' +
            `(at most ${MAX_OFFSET} runs deep). 400 for a filter or ordering that does not parse (the message gives the position) or a bad cursor.`,
          tags: ['Runs'],
          ...access.object('model', 'read'),
        },
      },
    )
}
