/**
 * /api/pipelines/:id/schedules: cron schedules that start a pipeline's runs. A schedule is
 * written by its pipeline's actor (`pipeline`), which checks the cron, the time zone and the
 * params (422) and arms a durable reminder for the next slot; reads are plain SQL. Access as
 * for the pipeline (./pipelines.ts).
 */
import { Elysia, t } from 'elysia'
import type { PipelineMessage } from '../actors/pipelines/pipeline.ts'
import type { Replied } from '../actors/runtime/index.ts'
import { access } from '../auth/route-access.ts'
import * as store from '../store/pipelines.ts'
import { Envelope, errors, ok, type HttpDeps } from './context.ts'
import { askPipeline, pipeline, pipelineIdParams, PIPELINES_TAG } from './pipelines.ts'
import { PipelineApiModel as M, serializeSchedule } from './views/pipeline.ts'

const scheduleParams = t.Object({
  id: t.String({ format: 'uuid', error: 'Invalid pipeline id' }),
  scheduleId: t.String({ format: 'uuid', error: 'Invalid schedule id' }),
})

type UpdateSchedule = Extract<PipelineMessage, { type: 'updateSchedule' }>

export function pipelineScheduleRoutes(deps: HttpDeps) {
  const ask = async (id: string, message: PipelineMessage) => (await askPipeline(deps, id, message)) as Replied<store.ScheduleRow>

  return new Elysia({ prefix: '/api/pipelines/:id/schedules' })
    .post(
      '/',
      async ({ request, params, body, set }) => {
        const { obj: p } = await pipeline(deps, request, params.id, 'change')
        const s = await ask(p.id, {
          type: 'addSchedule',
          scheduleId: crypto.randomUUID(),
          cron: body.cron,
          timezone: body.timezone ?? 'UTC',
          params: body.params ?? {},
          enabled: body.enabled ?? true,
          overlap: body.overlap ?? 'skip',
          catchup: body.catchup ?? 'none',
        })
        set.status = 201
        return ok(serializeSchedule(s))
      },
      {
        params: pipelineIdParams,
        body: M.addSchedule,
        response: { 201: Envelope.data(M.schedule), ...errors(400, 403, 404, 422) },
        detail: {
          summary: 'Schedule a pipeline',
          description:
            'Starts a run of the pipeline (its current version, with `params`) at every slot of `cron`, read in `timezone` (default UTC), and answers 201 with the schedule and its `nextRunAt`. ' +
            "`overlap: skip` (default) starts nothing while this schedule's previous run is still queued or running; `allow` starts it anyway. " +
            'After downtime, `catchup: latest` starts one run for the slots missed, `none` (default) none. A slot starts at most one run, across restarts and across the nodes of a cluster. ' +
            '`enabled: false` makes it paused.\n\n422 for a cron or time zone that does not parse, or params that do not fit the definition (`params.<name>`).',
          tags: [PIPELINES_TAG],
          ...access.object('pipeline', 'change'),
        },
      },
    )
    .get(
      '/',
      async ({ request, params }) => {
        const { obj: p } = await pipeline(deps, request, params.id, 'read')
        return ok((await store.listSchedules(deps.sql, p.id)).map(serializeSchedule))
      },
      {
        params: pipelineIdParams,
        response: { 200: Envelope.data(M.schedules), ...errors(400, 404) },
        detail: {
          summary: "List a pipeline's schedules",
          description: "The pipeline's schedules, oldest first, each with its next slot (`nextRunAt`, null while paused), when it last fired and the run it started then.",
          tags: [PIPELINES_TAG],
          ...access.object('pipeline', 'read'),
        },
      },
    )
    .patch(
      '/:scheduleId',
      async ({ request, params, body }) => {
        const { obj: p } = await pipeline(deps, request, params.id, 'change')
        const message: UpdateSchedule = { type: 'updateSchedule', scheduleId: params.scheduleId }
        for (const key of ['cron', 'timezone', 'params', 'enabled', 'overlap', 'catchup'] as const) if (body[key] !== undefined) Object.assign(message, { [key]: body[key] })
        return ok(serializeSchedule(await ask(p.id, message)))
      },
      {
        params: scheduleParams,
        body: M.patchSchedule,
        response: { 200: Envelope.data(M.schedule), ...errors(400, 403, 404, 422) },
        detail: {
          summary: 'Change, pause or resume a schedule',
          description:
            'Changes any of `cron`, `timezone`, `params`, `enabled`, `overlap` and `catchup`, and answers the schedule. `enabled: false` pauses it; `enabled: true` resumes it from now ' +
            '(the slots missed while paused are not caught up). 404 when the pipeline has no such schedule; 422 as on create.',
          tags: [PIPELINES_TAG],
          ...access.object('pipeline', 'change'),
        },
      },
    )
    .delete(
      '/:scheduleId',
      async ({ request, params }) => {
        const { obj: p } = await pipeline(deps, request, params.id, 'delete')
        await askPipeline(deps, p.id, { type: 'deleteSchedule', scheduleId: params.scheduleId })
        return ok({ id: params.scheduleId, deleted: true })
      },
      {
        params: scheduleParams,
        response: { 200: Envelope.data(M.scheduleDeleted), ...errors(400, 403, 404) },
        detail: {
          summary: 'Delete a schedule',
          description:
            'Deletes the schedule: it starts no more runs (runs it started go on). 404 when the pipeline has no such schedule. ' +
            "In an organisation, as for deleting the pipeline: its ADMINs, or a MEMBER who made the pipeline (403 otherwise).",
          tags: [PIPELINES_TAG],
          ...access.object('pipeline', 'delete'),
        },
      },
    )
}
