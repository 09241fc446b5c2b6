/**
 * What pipelines emit (part of the catalog in src/actors/events.ts): on `pipeline-run:<id>`
 * the run's `status`, each step's transitions (`step`) and its log lines (`logs`); on
 * `user:<ownerId>` the run's status (`pipeline-run.status`) and the pipeline's changes.
 * Emitters: src/actors/pipelines/run.ts (commit) and pipeline.ts (announce).
 */
import { Type as T, type TSchema } from '@sinclair/typebox'

const closed = { additionalProperties: false } as const
const Uuid = T.String({ format: 'uuid' })
const Timestamp = T.String({ format: 'date-time' })
const Nullable = <S extends TSchema>(s: S) => T.Union([s, T.Null()])
const Literals = <const L extends readonly string[]>(values: L) => T.Union(values.map((v: L[number]) => T.Literal(v)))

const RUN = '5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b'
const PIPELINE = '4d5e6f7a-8b9c-4d0e-8f1a-2b3c4d5e6f7a'
const AT = '2026-01-15T09:30:00.000Z'

const RunStatus = Literals(['QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMED_OUT'])
const StepStatus = Literals(['PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'SKIPPED', 'CANCELLED', 'UPSTREAM_FAILED'])

const PipelineRunStatusEvent = T.Object(
  {
    runId: Uuid,
    id: Uuid,
    pipelineId: Uuid,
    version: T.Integer({ description: 'The pipeline version the run runs' }),
    status: RunStatus,
    attempt: T.Integer({ description: '1, and N+1 with each retry of the run' }),
    error: Nullable(T.String()),
    startedAt: Nullable(Timestamp),
    endedAt: Nullable(Timestamp),
  },
  {
    ...closed,
    description: 'The run changed status: QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED | TIMED_OUT (QUEUED again after a retry).',
    examples: [{ runId: RUN, id: RUN, pipelineId: PIPELINE, version: 2, status: 'SUCCEEDED', attempt: 1, error: null, startedAt: AT, endedAt: AT }],
  },
)

const StepEvent = T.Object(
  {
    runId: Uuid,
    id: T.String({ description: 'The step id' }),
    kind: T.String(),
    status: StepStatus,
    attempts: T.Integer(),
    cached: T.Boolean({ description: 'Its outputs came from an earlier successful step with the same cache key' }),
    startedAt: Nullable(Timestamp),
    endedAt: Nullable(Timestamp),
    outputs: Nullable(T.Record(T.String(), T.Unknown())),
    error: Nullable(T.String()),
  },
  {
    ...closed,
    description: 'A step changed: PENDING → RUNNING → SUCCEEDED | FAILED | SKIPPED | CANCELLED | UPSTREAM_FAILED (PENDING again while it waits for a retry, with its last error).',
    examples: [{ runId: RUN, id: 'train', kind: 'model.train', status: 'SUCCEEDED', attempts: 1, cached: false, startedAt: AT, endedAt: AT, outputs: { version: 3 }, error: null }],
  },
)

const StepLogsEvent = T.Object(
  {
    runId: Uuid,
    stepId: T.String(),
    attempt: T.Integer(),
    lines: T.Array(T.Object({ stream: Literals(['stdout', 'stderr']), line: T.String(), at: T.Number({ description: 'ms since the epoch' }) }, closed)),
  },
  { ...closed, description: 'Log lines of a step (a container step’s output lines that are not outputs), in batches.', examples: [{ runId: RUN, stepId: 'prep', attempt: 1, lines: [{ stream: 'stdout', line: 'rows: 42', at: 1768469400000 }] }] },
)

export const PIPELINE_RUN_EVENTS = { status: PipelineRunStatusEvent, step: StepEvent, logs: StepLogsEvent }

const Schedule = T.Object(
  {
    pipelineId: Uuid,
    scheduleId: Uuid,
    enabled: T.Optional(T.Boolean()),
    deleted: T.Optional(T.Literal(true)),
    slot: T.Optional(Timestamp),
    runId: T.Optional(Nullable(Uuid)),
    skipped: T.Optional(Nullable(T.String({ description: 'Why the slot started no run' }))),
    nextRunAt: T.Optional(Nullable(Timestamp)),
  },
  { ...closed, description: 'A schedule was added, changed or deleted, or fired (slot, the run it started or why it skipped it).', examples: [{ pipelineId: PIPELINE, scheduleId: RUN, slot: AT, runId: RUN, skipped: null, nextRunAt: AT }] },
)

/** On `user:<ownerId>`. */
export const USER_PIPELINE_EVENTS = {
  'pipeline-run.status': PipelineRunStatusEvent,
  'pipeline.created': T.Object({ id: Uuid }, { ...closed, description: 'A pipeline was created.', examples: [{ id: PIPELINE }] }),
  'pipeline.updated': T.Object({ id: Uuid, version: T.Integer() }, { ...closed, description: 'A pipeline was changed (a new definition is a new version).', examples: [{ id: PIPELINE, version: 2 }] }),
  'pipeline.deleted': T.Object({ id: Uuid }, { ...closed, description: 'A pipeline was deleted.', examples: [{ id: PIPELINE }] }),
  'pipeline.schedule': Schedule,
}

export const PIPELINE_RUN_EXAMPLE = RUN
