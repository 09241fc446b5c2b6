/**
 * Pipeline runs: POST/GET /api/pipelines/:id/runs (start one, list them), and
 * /api/pipeline-runs/:id (read one with its steps, a step's logs, cancel, retry).
 *
 * A run belongs to its pipeline's owner: the same rules as ./pipelines.ts (404 for another
 * user, 403 for a VIEWER's changes, admins may act on any); a shared pipeline's runs are its
 * org's (VIEWERs read them and their logs, MEMBERs start, cancel and retry them; a run
 * started by a member is still the pipeline owner's, its compute counted against their quota).
 * Starting a run checks its params against the pipeline's current definition here (422,
 * `params.<name>`), then asks a new
 * `pipeline-run` actor to record it QUEUED; the pipeline's actor admits it (at most
 * `maxActiveRuns` at once) and the run's actor drives its steps. Reads are plain SQL.
 */
import { Elysia, t } from 'elysia'
import type { PipelineDefinition } from '../actors/pipelines/definition.ts'
import { MAX_STEP_LOG_LINES, PIPELINE_RUN_KIND, type PipelineRunMessage } from '../actors/pipelines/run.ts'
import type { runView } from '../actors/pipelines/run-turn.ts'
import { validateRunParams } from '../actors/pipelines/validate.ts'
import type { Replied } from '../actors/runtime/index.ts'
import { NotFoundError, UnprocessableError } from '../core/errors.ts'
import { access } from '../auth/route-access.ts'
import * as runs from '../store/pipeline-runs.ts'
import { authorize, Envelope, errors, ok, type HttpDeps } from './context.ts'
import { pipeline, pipelineIdParams, PIPELINES_TAG } from './pipelines.ts'
import { PipelineApiModel as M, serializeLogs, serializeRun, serializeRunSummary } from './views/pipeline.ts'

const runParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid pipeline run id' }) })
const logParams = t.Object({
  id: t.String({ format: 'uuid', error: 'Invalid pipeline run id' }),
  stepId: t.String({ minLength: 1, maxLength: 64, error: 'stepId must be 1–64 characters' }),
})

/** The caller and the run, if the access policy lets the caller do `action` to it (401/403/404). */
function run(deps: HttpDeps, request: Request, id: string, action: 'read' | 'change') {
  return authorize(deps, request, { resource: 'pipeline', action, label: 'Pipeline run', load: () => runs.findRun(deps.sql, id), owner: (r) => ({ ownerId: r.userId, orgId: r.orgId }) })
}

/** The run with its steps, as stored now. */
async function current(deps: HttpDeps, id: string) {
  const found = await runs.findRunWithSteps(deps.sql, id)
  if (!found) throw new NotFoundError('Pipeline run')
  return serializeRun(found.run, found.steps)
}

const RUN_LIFE =
  'A run goes QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED | TIMED_OUT; each step PENDING → RUNNING → SUCCEEDED | FAILED | SKIPPED | CANCELLED | UPSTREAM_FAILED, ' +
  'starting as soon as its `trigger` is satisfied, in parallel with its siblings (at most `PIPELINE_STEP_CONCURRENCY` of a run at once). ' +
  'Follow it live on the WebSocket topic `pipeline-run:<id>` (`status` and `step` events, `logs` lines; resume with `since`); `pipeline-run.status` events go to `user:<id>` too.'

export function pipelineRunRoutes(deps: HttpDeps) {
  const ask = async (id: string, message: PipelineRunMessage) => (await deps.actors.ask(PIPELINE_RUN_KIND, id, message)) as Replied<ReturnType<typeof runView>>

  return new Elysia()
    .post(
      '/api/pipelines/:id/runs',
      async ({ request, params, body, set }) => {
        const { obj: p } = await pipeline(deps, request, params.id, 'change')
        const definition = p.definition as PipelineDefinition
        const checked = validateRunParams(definition, body?.params ?? {})
        if (!checked.ok) throw new UnprocessableError('The run parameters are not valid', checked.details.map((d) => ({ field: d.path, message: d.message })))
        const id = crypto.randomUUID()
        const useCache = body?.cache ?? true
        const recorded = await ask(id, { type: 'create', pipelineId: p.id, ownerId: p.userId, version: p.version, params: checked.params, useCache, scheduleId: null })
        const row = await runs.findRun(deps.sql, id)
        if (!row) throw new NotFoundError('Pipeline run')
        // The run as its create turn recorded it (it may have started since): QUEUED, every step PENDING.
        const queued = { ...row, status: recorded.status, attempt: recorded.attempt, error: recorded.error, startedAt: null, endedAt: null }
        const pending = definition.steps.map((s, position) => ({
          stepId: s.id,
          position,
          kind: s.kind,
          status: 'PENDING' as const,
          attempts: 0,
          cached: false,
          cacheKey: null,
          outputs: null,
          error: null,
          externalId: null,
          cpu: null,
          memoryMb: null,
          startedAt: null,
          endedAt: null,
        }))
        set.status = 202
        return ok(serializeRun(queued, pending))
      },
      {
        params: pipelineIdParams,
        body: t.Optional(M.startRun),
        response: { 202: Envelope.data(M.runQueued), ...errors(400, 403, 404, 422) },
        detail: {
          summary: 'Run a pipeline',
          description:
            "Starts a run of the pipeline's current version with `params` (checked against the definition's `params`: the others take their defaults) and answers 202 with it, QUEUED, " +
            'its steps PENDING. At most `maxActiveRuns` (default 1) runs of a pipeline run at once: the others wait QUEUED, oldest first. ' +
            'A step whose kind, resolved `with` and inputs equal those of an earlier successful step of yours reuses its outputs (`cached: true`) unless `cache` is false ' +
            '(or the step says `cache: false`).\n\n' +
            `${RUN_LIFE}\n\n422 when a param is unknown, of the wrong type, or required and missing (one detail per param: \`params.<name>\`).`,
          tags: [PIPELINES_TAG],
          ...access.object('pipeline', 'change'),
        },
      },
    )
    .get(
      '/api/pipelines/:id/runs',
      async ({ request, params, query }) => {
        const { obj: p } = await pipeline(deps, request, params.id, 'read')
        const limit = query.limit ?? 20
        const page = await runs.listRuns(deps.sql, { pipelineId: p.id, limit, cursor: query.cursor, status: query.status })
        return ok(page.items.map(serializeRunSummary), { nextCursor: page.nextCursor, limit })
      },
      {
        params: pipelineIdParams,
        query: M.runListQuery,
        response: { 200: Envelope.list(M.runSummary), ...errors(400, 404) },
        detail: {
          summary: "List a pipeline's runs",
          description:
            "The pipeline's runs, oldest first, a page at a time (`limit`, and `cursor` from the previous page's `meta.nextCursor`), optionally only those in one `status`. " +
            'Each without its steps: `GET /api/pipeline-runs/:id` has them.',
          tags: [PIPELINES_TAG],
          ...access.object('pipeline', 'read'),
        },
      },
    )
    .get('/api/pipeline-runs/:id', async ({ request, params }) => ok(await current(deps, (await run(deps, request, params.id, 'read')).obj.id)), {
      params: runParams,
      response: { 200: Envelope.data(M.run), ...errors(400, 404) },
      detail: {
        summary: 'Get a pipeline run with its steps',
        description:
          'The run — the pipeline version it runs, its status, params, `attempt` (2, 3… after retries), times and `error` — and every step of the definition in its order: ' +
          'status, `attempts`, whether it was `cached`, times, `outputs` and `error`.\n\n' +
          RUN_LIFE,
        tags: [PIPELINES_TAG],
        ...access.object('pipeline', 'read'),
      },
    })
    .get(
      '/api/pipeline-runs/:id/steps/:stepId/logs',
      async ({ request, params, query }) => {
        const { obj: r } = await run(deps, request, params.id, 'read')
        const step = (await runs.listSteps(deps.sql, r.id)).find((s) => s.stepId === params.stepId)
        if (!step) throw new NotFoundError('Step')
        const after = query.after ?? 0
        return ok(serializeLogs(step.stepId, step.status, after, await runs.readLogs(deps.sql, r.id, step.stepId, after, query.limit ?? 1000)))
      },
      {
        params: logParams,
        query: M.logsQuery,
        response: { 200: Envelope.data(M.logs), ...errors(400, 404) },
        detail: {
          summary: "Read a step's logs",
          description:
            "The lines a step wrote (a container step's output other than its JSON output lines, a training step's logs), oldest first, each with its number `seq`: " +
            'read on with `after` set to the answer\'s `nextAfter`. The step\'s `status` says whether more may come. ' +
            `At most ${MAX_STEP_LOG_LINES} lines are kept per attempt of a step (a last line says how many were left out). ` +
            'Lines also arrive live as `logs` events on `pipeline-run:<id>`. 404 when the run has no such step.',
          tags: [PIPELINES_TAG],
          ...access.object('pipeline', 'read'),
        },
      },
    )
    .post(
      '/api/pipeline-runs/:id/cancel',
      async ({ request, params }) => {
        const { obj: r } = await run(deps, request, params.id, 'change')
        await ask(r.id, { type: 'cancel' })
        return ok(await current(deps, r.id))
      },
      {
        params: runParams,
        response: { 200: Envelope.data(M.run), ...errors(400, 403, 404, 409) },
        detail: {
          summary: 'Cancel a pipeline run',
          description:
            'Ends a QUEUED or RUNNING run as CANCELLED at once: every running step is stopped (its container killed, its model run cancelled) and every step not yet ended is CANCELLED; ' +
            "the pipeline's next queued run may start. Answers the run. 409 once the run has ended.",
          tags: [PIPELINES_TAG],
          ...access.object('pipeline', 'change'),
        },
      },
    )
    .post(
      '/api/pipeline-runs/:id/retry',
      async ({ request, params, set }) => {
        const { obj: r } = await run(deps, request, params.id, 'change')
        await ask(r.id, { type: 'retry' })
        set.status = 202
        return ok(await current(deps, r.id))
      },
      {
        params: runParams,
        response: { 202: Envelope.data(M.run), ...errors(400, 403, 404, 409) },
        detail: {
          summary: 'Retry a pipeline run',
          description:
            'Runs an ended run again as its next `attempt`, QUEUED like a new run: steps that FAILED, were CANCELLED, SKIPPED or UPSTREAM_FAILED run again; ' +
            'those that SUCCEEDED keep their outputs and do not run. Answers 202 with the run. 409 while it is queued or running, or when it SUCCEEDED.',
          tags: [PIPELINES_TAG],
          ...access.object('pipeline', 'change'),
        },
      },
    )
}
