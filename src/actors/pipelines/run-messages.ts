/**
 * What a `pipeline-run` actor (./run.ts) is told: by the HTTP edge and schedules (create,
 * cancel, retry), by its pipeline (start), by its steps' background work (results, logs), by
 * its reminders (retries, timeouts, ticks) and at boot (resume).
 */
import { Type as T, type Static } from '@sinclair/typebox'

const Id = T.String({ format: 'uuid' })
const StepId = T.String({ minLength: 1, maxLength: 64 })
const Attempt = T.Integer({ minimum: 1 })
const Json = T.Record(T.String(), T.Unknown())

export const PipelineRunMessage = T.Union([
  /** From the HTTP edge or a schedule: record the run (QUEUED) and ask the pipeline to admit it. */
  T.Object({
    type: T.Literal('create'),
    pipelineId: Id,
    ownerId: Id,
    version: T.Integer({ minimum: 1 }),
    params: Json,
    useCache: T.Boolean(),
    scheduleId: T.Union([Id, T.Null()]),
  }),
  /** From the pipeline actor: admitted (maxActiveRuns). */
  T.Object({ type: T.Literal('start') }),
  /** From a step's background work. */
  T.Object({
    type: T.Literal('stepResult'),
    stepId: StepId,
    attempt: Attempt,
    ok: T.Boolean(),
    outputs: T.Optional(Json),
    error: T.Optional(T.String()),
  }),
  /** `empty` steps started in one turn, ended together. */
  T.Object({ type: T.Literal('emptyDone'), steps: T.Array(T.Object({ stepId: StepId, attempt: Attempt }), { maxItems: 1000 }) }),
  T.Object({
    type: T.Literal('stepLogs'),
    stepId: StepId,
    attempt: Attempt,
    lines: T.Array(T.Object({ stream: T.Union([T.Literal('stdout'), T.Literal('stderr')]), line: T.String(), at: T.Number() }), { maxItems: 1000 }),
  }),
  /** Reminders. */
  T.Object({ type: T.Literal('retryStep'), stepId: StepId, attempt: T.Integer({ minimum: 0 }) }),
  T.Object({ type: T.Literal('stepTimeout'), stepId: StepId, attempt: Attempt }),
  T.Object({ type: T.Literal('runTimeout'), attempt: Attempt }),
  T.Object({ type: T.Literal('tick'), attempt: Attempt }),
  /** From the HTTP edge. */
  T.Object({ type: T.Literal('cancel') }),
  T.Object({ type: T.Literal('retry') }),
  /** At boot: re-attach to what a stopped node left running. */
  T.Object({ type: T.Literal('resume') }),
])
export type PipelineRunMessage = Static<typeof PipelineRunMessage>
