/**
 * Pipelines, their versions, runs, steps, step logs and schedules as the API shows them:
 * schemas (with the examples the OpenAPI document shows) and serializers from store rows and
 * actor replies.
 *
 * A definition is shown as it was accepted (the JSON the validator passed); its schema is the
 * actor layer's `PipelineDefinition` (src/actors/pipelines/definition.ts), published here for
 * the OpenAPI document but not used to validate requests: definitions are checked by the
 * `pipeline` actor, which answers 422 with one detail per problem (see ../pipelines.ts).
 */
import { CloneType } from '@sinclair/typebox'
import { t } from 'elysia'
import { PipelineDefinition } from '../../actors/pipelines/definition.ts'
import { MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, ScheduleFields } from '../../actors/pipelines/pipeline.ts'
import { stepView } from '../../actors/pipelines/run-turn.ts'
import type { Replied } from '../../actors/runtime/index.ts'
import { iso } from '../../core/time.ts'
import type { LogLineRow, PipelineRunRow, StepRow } from '../../store/pipeline-runs.ts'
import type { PipelineRow, ScheduleRow, VersionRow } from '../../store/pipelines.ts'
import { Envelope } from '../context.ts'

const PIPELINE_ID = 'e2a4c6e8-1b3d-4f5a-9c7e-0d2f4b6d8f1a'
const RUN_ID = 'f3b5d7f9-2c4e-4a6b-8d0f-1e3a5c7e9b2d'
const SCHEDULE_ID = 'a4c6e8fa-3d5f-4b7c-9e1a-2f4b6d8fa3c5'
const DATAKIT_ID = '5e7a9c1b-3d5f-4a7b-8c9d-0e1f2a3b4c5d'
const MODEL_ID = 'a1f3c5e7-2b4d-4f6a-8c0e-1d3f5b7d9e2a'
const MODEL_RUN_ID = 'c4d2e6f8-0a1b-4c3d-9e5f-7a8b9c0d1e2f'
const OWNER_ID = '8e2d4c6a-1f3b-4a5c-9d7e-0b1c2d3e4f50'
const ORG_ID = '3c5e7a9b-2d4f-4b6a-8c1e-5f7a9b1d3e60'
const orgIdOption = (description: string) =>
  t.Optional(t.Union([t.String({ format: 'uuid' }), t.Null()], { error: 'orgId must be an organisation id or null', description }))

/** The example of `PipelineDefinition` (query → train → deploy when good enough), reused in the bodies' examples. */
const DEFINITION_EXAMPLE = (PipelineDefinition.examples as unknown[])[0] as PipelineDefinition

const AT = {
  created: '2026-12-04T10:00:00.000Z',
  updated: '2026-12-05T08:30:00.000Z',
  queued: '2026-12-06T03:00:00.000Z',
  started: '2026-12-06T03:00:00.050Z',
  step1: '2026-12-06T03:00:04.210Z',
  step2: '2026-12-06T03:01:52.480Z',
  ended: '2026-12-06T03:01:53.120Z',
}

const runStatuses = (description: string) =>
  t.Union([t.Literal('QUEUED'), t.Literal('RUNNING'), t.Literal('SUCCEEDED'), t.Literal('FAILED'), t.Literal('CANCELLED'), t.Literal('TIMED_OUT')], { description })
const stepStatuses = (description: string) =>
  t.Union([t.Literal('PENDING'), t.Literal('RUNNING'), t.Literal('SUCCEEDED'), t.Literal('FAILED'), t.Literal('SKIPPED'), t.Literal('CANCELLED'), t.Literal('UPSTREAM_FAILED')], { description })

const nullable = <S extends Parameters<typeof t.Union>[0][number]>(s: S, description?: string) => t.Union([s, t.Null()], description ? { description } : {})
const time = () => t.String({ format: 'date-time' })

export namespace PipelineApiModel {
  export const runStatus = runStatuses('QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED | TIMED_OUT; a retry makes an ended run QUEUED again (attempt N+1)')
  export const stepStatus = stepStatuses('PENDING → RUNNING → SUCCEEDED | FAILED | SKIPPED | CANCELLED | UPSTREAM_FAILED (PENDING with attempts > 0: waiting for a retry)')

  const summaryFields = {
    id: t.String({ format: 'uuid' }),
    ownerId: t.String({ format: 'uuid', description: 'Who made it (its runs and schedules are theirs)' }),
    orgId: nullable(t.String({ format: 'uuid' }), 'The organisation it is shared in; null: personal'),
    name: t.String(),
    description: nullable(t.String()),
    version: t.Integer({ minimum: 1, description: 'The current version: 1, and N+1 with each new definition' }),
    stepCount: t.Integer({ minimum: 1, description: 'Steps in the current definition' }),
    createdAt: time(),
    updatedAt: time(),
  }
  const SUMMARY_EXAMPLE = { id: PIPELINE_ID, ownerId: OWNER_ID, orgId: null, name: 'nightly-churn', description: 'Retrain the churn model on adult customers and deploy it when it is good enough', version: 3, stepCount: 3, createdAt: AT.created, updatedAt: AT.updated }

  /** A pipeline in a list: without its definition (GET /api/pipelines/:id has it). */
  export const summary = t.Object(summaryFields, { title: 'PipelineSummary', examples: [SUMMARY_EXAMPLE] })
  export const pipeline = t.Object(
    { ...summaryFields, definition: PipelineDefinition },
    { title: 'Pipeline', examples: [{ ...SUMMARY_EXAMPLE, definition: DEFINITION_EXAMPLE }] },
  )

  const name = t.String({ minLength: 1, maxLength: MAX_NAME_CHARS, error: `Name must be 1–${MAX_NAME_CHARS} characters` })
  const description = t.Union([t.String({ maxLength: MAX_DESCRIPTION_CHARS }), t.Null()], { error: `Description must be at most ${MAX_DESCRIPTION_CHARS} characters` })
  /**
   * What the routes check before the actor sees a body: the shape of the fields, and that
   * `definition` is an object. Its content is the actor's to validate (422 per problem).
   */
  const createOrg = t.Optional(t.String({ format: 'uuid', error: 'orgId must be an organisation id', description: 'Create it in this organisation (you must be a MEMBER or above there)' }))
  const moveOrg = orgIdOption('Move it into this organisation, or (null) make it personal again: its owner, ADMIN or above in both organisations')
  export const createCheck = t.Object(
    { name, description: t.Optional(description), definition: t.Record(t.String(), t.Unknown(), { error: 'definition must be an object' }), orgId: createOrg },
    { additionalProperties: false },
  )
  export const patchCheck = t.Object(
    { name: t.Optional(name), description: t.Optional(description), definition: t.Optional(t.Record(t.String(), t.Unknown(), { error: 'definition must be an object' })), orgId: moveOrg },
    { additionalProperties: false, minProperties: 1, error: 'Provide at least one of name, description, definition, orgId' },
  )
  /** What the OpenAPI document shows for those bodies: the definition in full. */
  export const create = t.Object(
    {
      name: t.String({ minLength: 1, maxLength: MAX_NAME_CHARS }),
      description: t.Optional(t.Union([t.String({ maxLength: MAX_DESCRIPTION_CHARS }), t.Null()])),
      definition: PipelineDefinition,
      orgId: createOrg,
    },
    { additionalProperties: false, examples: [{ name: 'nightly-churn', description: 'Retrain the churn model on adult customers and deploy it when it is good enough', definition: DEFINITION_EXAMPLE }] },
  )
  export const patch = t.Object(
    {
      name: t.Optional(t.String({ minLength: 1, maxLength: MAX_NAME_CHARS })),
      description: t.Optional(t.Union([t.String({ maxLength: MAX_DESCRIPTION_CHARS }), t.Null()])),
      definition: t.Optional(PipelineDefinition),
      orgId: moveOrg,
    },
    {
      additionalProperties: false,
      minProperties: 1,
      description: 'Any of name, description, definition (a new one is the next version) and orgId (a move)',
      examples: [{ definition: { ...DEFINITION_EXAMPLE, params: { minAccuracy: { type: 'number', default: 0.92 } }, maxActiveRuns: 2 } }, { orgId: ORG_ID }],
    },
  )
  export const listQuery = t.Object({
    ...Envelope.pageQuery,
    search: t.Optional(t.String({ maxLength: 100, description: 'Text in the name or description (case-insensitive)', examples: ['churn'] })),
    orgId: t.Optional(t.String({ format: 'uuid', error: 'Invalid organisation id', description: 'Every pipeline of this organisation (you must be a member)', examples: [ORG_ID] })),
  })
  export const deleted = t.Object({ id: t.String({ format: 'uuid' }), deleted: t.Boolean() }, { examples: [{ id: PIPELINE_ID, deleted: true }] })

  export const versionSummary = t.Object(
    { version: t.Integer({ minimum: 1 }), stepCount: t.Integer({ minimum: 1 }), createdAt: time() },
    { title: 'PipelineVersionSummary', examples: [{ version: 3, stepCount: 3, createdAt: AT.updated }] },
  )
  export const versions = t.Array(versionSummary, {
    examples: [
      [
        { version: 3, stepCount: 3, createdAt: AT.updated },
        { version: 2, stepCount: 3, createdAt: '2026-12-04T16:20:00.000Z' },
        { version: 1, stepCount: 2, createdAt: AT.created },
      ],
    ],
  })
  export const version = t.Object(
    { pipelineId: t.String({ format: 'uuid' }), version: t.Integer({ minimum: 1 }), definition: PipelineDefinition, createdAt: time() },
    { title: 'PipelineVersion', examples: [{ pipelineId: PIPELINE_ID, version: 3, definition: DEFINITION_EXAMPLE, createdAt: AT.updated }] },
  )

  // ---- Runs ----------------------------------------------------------------------------------

  export const step = t.Object(
    {
      id: t.String({ description: "The step's id in the definition" }),
      kind: t.String(),
      status: stepStatus,
      attempts: t.Integer({ minimum: 0, description: 'Attempts started so far (retries count; 0 before the first)' }),
      cached: t.Boolean({ description: 'Its outputs were reused from an earlier successful step of the same kind, inputs and `with` (it did not run)' }),
      startedAt: nullable(time()),
      endedAt: nullable(time()),
      outputs: t.Union([t.Record(t.String(), t.Unknown()), t.Null()], { description: 'What the step produced (null until it succeeds)' }),
      error: nullable(t.String(), 'Why the step (or its last attempt) failed, was stopped or could not start'),
    },
    { title: 'PipelineStep' },
  )

  const runFields = {
    id: t.String({ format: 'uuid' }),
    pipelineId: t.String({ format: 'uuid' }),
    version: t.Integer({ minimum: 1, description: 'The version of the pipeline the run runs' }),
    status: runStatus,
    params: t.Record(t.String(), t.Unknown(), { description: "The run's parameters, defaults filled in" }),
    cache: t.Boolean({ description: 'Step caching on for this run (`cache` when it was started)' }),
    scheduleId: nullable(t.String({ format: 'uuid' }), 'The schedule that started it (null: started by a request)'),
    attempt: t.Integer({ minimum: 1, description: '1, and N+1 after each retry' }),
    error: nullable(t.String(), 'Why the run failed or timed out'),
    createdAt: time(),
    startedAt: nullable(time()),
    endedAt: nullable(time()),
  }
  const RUN_EXAMPLE = {
    id: RUN_ID,
    pipelineId: PIPELINE_ID,
    version: 3,
    status: 'SUCCEEDED',
    params: { minAccuracy: 0.9 },
    cache: true,
    scheduleId: SCHEDULE_ID,
    attempt: 1,
    error: null,
    createdAt: AT.queued,
    startedAt: AT.started,
    endedAt: AT.ended,
  }
  const STEPS_EXAMPLE = [
    { id: 'adults', kind: 'datakit.query', status: 'SUCCEEDED', attempts: 1, cached: true, startedAt: AT.started, endedAt: AT.started, outputs: { datakitId: DATAKIT_ID, version: 4, rows: 10412 }, error: null },
    {
      id: 'train',
      kind: 'model.train',
      status: 'SUCCEEDED',
      attempts: 1,
      cached: false,
      startedAt: AT.started,
      endedAt: AT.step2,
      outputs: { runId: MODEL_RUN_ID, version: 7, metrics: { eval_accuracy: 0.93 } },
      error: null,
    },
    { id: 'deploy', kind: 'model.deploy', status: 'SUCCEEDED', attempts: 1, cached: false, startedAt: AT.step2, endedAt: AT.ended, outputs: { modelId: MODEL_ID, version: 7 }, error: null },
  ]
  /** A run in a list: without its steps (GET /api/pipeline-runs/:id has them). */
  export const runSummary = t.Object(runFields, { title: 'PipelineRunSummary', examples: [RUN_EXAMPLE] })
  export const run = t.Object(
    { ...runFields, steps: t.Array(step, { description: 'Every step of the definition, in its order' }) },
    { title: 'PipelineRun', examples: [{ ...RUN_EXAMPLE, steps: STEPS_EXAMPLE }] },
  )
  export const runQueued = t.Object(run.properties, {
    title: 'PipelineRun',
    examples: [
      {
        ...RUN_EXAMPLE,
        status: 'QUEUED',
        scheduleId: null,
        startedAt: null,
        endedAt: null,
        steps: STEPS_EXAMPLE.map((s) => ({ ...s, status: 'PENDING', attempts: 0, cached: false, startedAt: null, endedAt: null, outputs: null })),
      },
    ],
  })
  export const startRun = t.Object(
    {
      params: t.Optional(t.Record(t.String(), t.Unknown(), { description: "Values for the definition's `params` (the others take their defaults)", error: 'params must be an object' })),
      cache: t.Optional(t.Boolean({ default: true, description: 'Reuse the outputs of earlier identical steps (default true; false runs every step)' })),
    },
    { additionalProperties: false, examples: [{ params: { minAccuracy: 0.92 }, cache: true }] },
  )
  export const runListQuery = t.Object({
    ...Envelope.pageQuery,
    status: t.Optional(runStatuses('Only runs in this status')),
  })

  export const logsQuery = t.Object({
    after: t.Optional(t.Integer({ minimum: 0, default: 0, description: 'The `nextAfter` of the previous read: lines after this sequence number' })),
    limit: t.Optional(t.Integer({ minimum: 1, maximum: 5000, default: 1000, description: 'Most lines to return (1–5000)' })),
  })
  export const logs = t.Object(
    {
      stepId: t.String(),
      status: stepStatus,
      lines: t.Array(
        t.Object({
          seq: t.Integer({ minimum: 1, description: "The line's number in the step's logs" }),
          stream: t.Union([t.Literal('stdout'), t.Literal('stderr')]),
          line: t.String(),
          at: time(),
        }),
      ),
      nextAfter: t.Integer({ minimum: 0, description: 'Pass as `after` to read on (the last line returned, or `after` when none)' }),
    },
    {
      title: 'PipelineStepLogs',
      examples: [
        {
          stepId: 'score',
          status: 'RUNNING',
          lines: [
            { seq: 1, stream: 'stdout', line: 'loading 10412 rows', at: AT.started },
            { seq: 2, stream: 'stderr', line: 'warning: 3 rows without income', at: AT.step1 },
          ],
          nextAfter: 2,
        },
      ],
    },
  )

  // ---- Schedules -----------------------------------------------------------------------------

  const overlap = t.Union([t.Literal('skip'), t.Literal('allow')], { description: "skip (default): no new run while this schedule's previous run is active; allow: start it anyway" })
  const catchup = t.Union([t.Literal('none'), t.Literal('latest')], { description: 'After downtime: none (default) starts no run for the missed slots; latest starts one' })
  const cron = CloneType(ScheduleFields.cron, {
    description: 'A cron pattern: 5 fields (minute hour day-of-month month day-of-week), or a nickname such as @daily',
    error: `cron must be 1–${ScheduleFields.cron.maxLength} characters`,
  })
  const timezone = CloneType(ScheduleFields.timezone, {
    description: 'An IANA time zone the cron is read in (default UTC)',
    error: `timezone must be 1–${ScheduleFields.timezone.maxLength} characters`,
  })
  const scheduleParams = t.Record(t.String(), t.Unknown(), { description: 'Parameters of the runs it starts (checked against the current definition)', error: 'params must be an object' })
  const SCHEDULE_EXAMPLE = {
    id: SCHEDULE_ID,
    pipelineId: PIPELINE_ID,
    cron: '0 3 * * *',
    timezone: 'Europe/Paris',
    params: { minAccuracy: 0.9 },
    enabled: true,
    overlap: 'skip',
    catchup: 'none',
    nextRunAt: '2026-12-07T02:00:00.000Z',
    lastFiredAt: AT.queued,
    lastRunId: RUN_ID,
    createdAt: AT.created,
    updatedAt: AT.queued,
  }
  export const schedule = t.Object(
    {
      id: t.String({ format: 'uuid' }),
      pipelineId: t.String({ format: 'uuid' }),
      cron: t.String(),
      timezone: t.String(),
      params: t.Record(t.String(), t.Unknown()),
      enabled: t.Boolean(),
      overlap: t.Union([t.Literal('skip'), t.Literal('allow')]),
      catchup: t.Union([t.Literal('none'), t.Literal('latest')]),
      nextRunAt: nullable(time(), 'The next slot it fires for (null while disabled)'),
      lastFiredAt: nullable(time()),
      lastRunId: nullable(t.String({ format: 'uuid' }), 'The run its last fire started'),
      createdAt: time(),
      updatedAt: time(),
    },
    { title: 'PipelineSchedule', examples: [SCHEDULE_EXAMPLE] },
  )
  export const schedules = t.Array(schedule, { examples: [[SCHEDULE_EXAMPLE]] })
  export const addSchedule = t.Object(
    {
      cron,
      timezone: t.Optional(timezone),
      params: t.Optional(scheduleParams),
      enabled: t.Optional(t.Boolean({ default: true })),
      overlap: t.Optional(overlap),
      catchup: t.Optional(catchup),
    },
    { additionalProperties: false, examples: [{ cron: '0 3 * * *', timezone: 'Europe/Paris', params: { minAccuracy: 0.9 } }] },
  )
  export const patchSchedule = t.Object(
    {
      cron: t.Optional(cron),
      timezone: t.Optional(timezone),
      params: t.Optional(scheduleParams),
      enabled: t.Optional(t.Boolean({ description: 'false pauses it; true resumes it from now (missed slots are not caught up)' })),
      overlap: t.Optional(overlap),
      catchup: t.Optional(catchup),
    },
    { additionalProperties: false, minProperties: 1, error: 'Provide at least one of cron, timezone, params, enabled, overlap, catchup', examples: [{ enabled: false }] },
  )
  export const scheduleDeleted = t.Object({ id: t.String({ format: 'uuid' }), deleted: t.Boolean() }, { examples: [{ id: SCHEDULE_ID, deleted: true }] })
}

const stepCount = (definition: unknown): number => ((definition as { steps?: unknown[] } | null)?.steps ?? []).length

export function serializePipelineSummary(p: Replied<PipelineRow>) {
  return {
    id: p.id,
    ownerId: p.userId,
    orgId: p.orgId ?? null,
    name: p.name,
    description: p.description,
    version: p.version,
    stepCount: stepCount(p.definition),
    createdAt: iso(p.createdAt),
    updatedAt: iso(p.updatedAt),
  }
}

export function serializePipeline(p: Replied<PipelineRow>) {
  return { ...serializePipelineSummary(p), definition: p.definition as PipelineDefinition }
}

export function serializeVersionSummary(v: VersionRow) {
  return { version: v.version, stepCount: stepCount(v.definition), createdAt: iso(v.createdAt) }
}

export function serializeVersion(pipelineId: string, v: VersionRow) {
  return { pipelineId, version: v.version, definition: v.definition as PipelineDefinition, createdAt: iso(v.createdAt) }
}

export function serializeRunSummary(r: PipelineRunRow) {
  return {
    id: r.id,
    pipelineId: r.pipelineId,
    version: r.version,
    status: r.status,
    params: r.params,
    cache: r.useCache,
    scheduleId: r.scheduleId,
    attempt: r.attempt,
    error: r.error,
    createdAt: iso(r.createdAt),
    startedAt: iso(r.startedAt),
    endedAt: iso(r.endedAt),
  }
}

/** A step as its `step` events show it (the run actor's view), times as ISO text. */
function serializeStep(s: StepRow) {
  const v = stepView(s)
  return { ...v, startedAt: iso(v.startedAt), endedAt: iso(v.endedAt) }
}

export function serializeRun(r: PipelineRunRow, steps: StepRow[]) {
  return { ...serializeRunSummary(r), steps: steps.map(serializeStep) }
}

export function serializeLogs(stepId: string, status: StepRow['status'], after: number, lines: LogLineRow[]) {
  return {
    stepId,
    status,
    lines: lines.map((l) => ({ seq: l.seq, stream: l.stream, line: l.line, at: iso(l.at) })),
    nextAfter: lines.length ? lines[lines.length - 1]!.seq : after,
  }
}

export function serializeSchedule(s: Replied<ScheduleRow>) {
  return {
    id: s.id,
    pipelineId: s.pipelineId,
    cron: s.cron,
    timezone: s.timezone,
    params: s.params,
    enabled: s.enabled,
    overlap: s.overlap,
    catchup: s.catchup,
    nextRunAt: iso(s.nextRunAt),
    lastFiredAt: iso(s.lastFiredAt),
    lastRunId: s.lastRunId,
    createdAt: iso(s.createdAt),
    updatedAt: iso(s.updatedAt),
  }
}
