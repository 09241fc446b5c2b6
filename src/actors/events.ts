/**
 * What the actors emit, as TypeBox schemas: for each topic kind (`<kind>:<id>`), every event
 * type and the shape of its `data`. The actors own these events, so the catalog lives with
 * them; the WebSocket edge turns it into the event messages of the AsyncAPI document
 * (src/ws/asyncapi.ts), and test/ws/asyncapi.test.ts drives real flows (workstations and VMs,
 * DataKits, training runs, chat) and checks every event a subscriber receives against it: an
 * emit site whose data drifts from its schema, or a type not listed here, fails that test.
 *
 * The objects are closed (no fields beyond those named), like the frames of src/ws/protocol.ts.
 * Emitters: src/actors/compute/ (workstation:, vm:, and user: for both), model-run.ts (run:,
 * user: `model-run.status`), chat-session.ts (chat:), datakit.ts (datakit:, user: `datakit.*`),
 * pipelines/ (pipeline-run:, user: `pipeline-run.status`, `pipeline.*`; see pipelines/events.ts),
 * notifier.ts (user: `notification`), codesheets/ (codesheet:; see codesheets/events.ts).
 */
import { Type as T, type TSchema } from '@sinclair/typebox'
import { CODESHEET_EVENTS, CODESHEET_EXAMPLE } from './codesheets/events.ts'
import { PIPELINE_RUN_EVENTS, PIPELINE_RUN_EXAMPLE, USER_PIPELINE_EVENTS } from './pipelines/events.ts'
import { NOTIFICATION_KINDS } from '../store/notifications-kinds.ts'

const closed = { additionalProperties: false } as const
const Uuid = T.String({ format: 'uuid' })
const Timestamp = T.String({ format: 'date-time', description: 'When it happened (ISO 8601, UTC)' })
const Nullable = <S extends TSchema>(s: S) => T.Union([s, T.Null()])
const Literals = <const L extends readonly string[]>(values: L) => T.Union(values.map((v: L[number]) => T.Literal(v)))

// Example ids, the same across examples so they read as one story.
const ID = {
  user: '0b7d3c4e-2f1a-4c8e-9d2b-5a6f7e8d9c01',
  workstation: '6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f',
  vm: '7a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d',
  run: '8b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e',
  model: '9c4d5e6f-7a8b-4c9d-8e1f-2a3b4c5d6e7f',
  chat: 'a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d',
  message: 'b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e',
  reply: 'c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e6f',
  datakit: 'd4e5f6a7-b8c9-4d0e-8f1a-2b3c4d5e6f7a',
} as const
const AT = '2026-01-15T09:30:00.000Z'

// ---- Workstations and VMs (src/actors/compute/) -------------------------------------------

const ComputeKind = Literals(['workstation', 'vm'])
const ComputeStatus = Literals(['CREATING', 'STOPPED', 'STARTING', 'RUNNING', 'STOPPING', 'ERROR'])

const ComputeStatusEvent = T.Object(
  {
    kind: ComputeKind,
    id: Uuid,
    name: T.String(),
    status: ComputeStatus,
    previous: Nullable(ComputeStatus),
    reason: T.Union([T.String(), T.Null()], { description: 'Why, in words a user can act on (ERROR, idle stop, changes made outside the platform); null for ordinary transitions' }),
    at: Timestamp,
  },
  {
    ...closed,
    description: 'A status transition: CREATING → STOPPED → STARTING → RUNNING → STOPPING → STOPPED, and ERROR with a reason.',
    examples: [{ kind: 'workstation', id: ID.workstation, name: 'gpu-box', status: 'RUNNING', previous: 'STARTING', reason: null, at: AT }],
  },
)

/** A workstation's `resources` as a PATCH gives them, or the resolved ones of a resize. */
const ChangedResources = T.Object({ cpu: T.Number(), memory: T.Integer(), storage: T.Optional(T.Integer()), gpu: T.Optional(T.Boolean()) }, closed)

const ComputeUpdatedEvent = T.Object(
  {
    kind: ComputeKind,
    id: Uuid,
    name: T.String({ description: 'The name after the change' }),
    changes: T.Object(
      {
        name: T.Optional(T.String()),
        description: T.Optional(T.String()),
        function: T.Optional(Literals(['DEVELOPMENT', 'TRAINING', 'PROCESSING'])),
        nature: T.Optional(T.Array(T.String())),
        image: T.Optional(T.String()),
        resources: T.Optional(ChangedResources),
      },
      { ...closed, description: "The fields that changed, as the update (PATCH) or resize gave them (a VM's disk is `resources.storage`)" },
    ),
    at: Timestamp,
  },
  { ...closed, description: 'Fields changed by an update or a resize.', examples: [{ kind: 'workstation', id: ID.workstation, name: 'gpu-box-2', changes: { name: 'gpu-box-2' }, at: AT }] },
)

const ComputeDeletedEvent = T.Object(
  { kind: ComputeKind, id: Uuid, name: T.String(), at: Timestamp },
  { ...closed, description: 'Deleted, with its container and home volume.', examples: [{ kind: 'vm', id: ID.vm, name: 'sandbox', at: AT }] },
)

const ComputeActivityEvent = T.Object(
  { source: T.Literal('cpu'), cpuPercent: T.Number({ description: 'CPU use, percent of one core' }), at: Timestamp },
  {
    ...closed,
    description: 'The idle check found the container busy (CPU at or above WORKSTATION_IDLE_CPU_PERCENT): it is not culled. Only on `workstation:<id>`.',
    examples: [{ source: 'cpu', cpuPercent: 87.5, at: AT }],
  },
)

const compute = { status: ComputeStatusEvent, updated: ComputeUpdatedEvent, deleted: ComputeDeletedEvent }

// ---- Training runs (model-run.ts) ---------------------------------------------------------

const RunStatusEvent = T.Object(
  {
    runId: Uuid,
    modelId: Uuid,
    status: Literals(['QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED']),
    error: T.Union([T.String(), T.Null()], { description: 'Why a run FAILED, in words the user can act on' }),
    version: T.Union([T.Integer({ minimum: 1 }), T.Null()], { description: 'The model version a SUCCEEDED run registered' }),
    attempt: T.Integer({ minimum: 1, description: 'Attempt number: a run whose server stopped mid-way is started again as the next attempt' }),
    note: T.Optional(T.String()),
  },
  {
    ...closed,
    description: 'A run changed status: QUEUED → RUNNING → SUCCEEDED | FAILED, or CANCELLED.',
    examples: [{ runId: ID.run, modelId: ID.model, status: 'SUCCEEDED', error: null, version: 3, attempt: 1 }],
  },
)

const RunMetricsEvent = T.Object(
  {
    runId: Uuid,
    points: T.Array(
      T.Object({ key: T.String({ minLength: 1 }), value: T.Number(), step: T.Integer({ minimum: 0 }), timestamp: T.Number({ description: 'Milliseconds since the epoch' }) }, closed),
    ),
  },
  {
    ...closed,
    description: 'Metrics logged by the run (per epoch, and `eval_*` at the end).',
    examples: [{ runId: ID.run, points: [{ key: 'val_loss', value: 0.231, step: 4, timestamp: 1768469400000 }] }],
  },
)

const RunLogsEvent = T.Object(
  {
    runId: Uuid,
    lines: T.Array(
      T.Object(
        {
          stream: Literals(['stdout', 'stderr']),
          line: T.String(),
          at: T.Number({ description: 'Milliseconds since the epoch' }),
          partial: T.Optional(T.Literal(true, { description: 'A piece of a line longer than CONTAINER_LOG_LINE_MAX_BYTES; the line goes on in the next entry of the stream' })),
          notice: T.Optional(T.Literal(true, { description: "The platform's own note (output dropped past the run's limit), not the container's" })),
        },
        closed,
      ),
    ),
    droppedBytes: T.Optional(T.Integer({ minimum: 0, description: 'With the last batch of a run whose output went past its limits: the bytes dropped' })),
  },
  {
    ...closed,
    description: "Output lines of a container run (lines that are not JSON metrics).",
    examples: [{ runId: ID.run, lines: [{ stream: 'stdout', line: 'reading 101 lines', at: 1768469400000 }] }],
  },
)

// ---- Chat sessions (chat-session.ts) ------------------------------------------------------

const ChatSession = T.Object(
  {
    id: Uuid,
    title: T.String(),
    generating: T.Boolean(),
    generatingMessageId: Nullable(Uuid),
    createdAt: Timestamp,
    updatedAt: Timestamp,
    lastMessageAt: T.Optional(Nullable(Timestamp)),
  },
  closed,
)

const ChatMessage = T.Object(
  {
    id: Uuid,
    sessionId: Uuid,
    role: Literals(['user', 'assistant', 'system']),
    content: T.String(),
    status: Literals(['completed', 'streaming', 'cancelled', 'interrupted', 'failed']),
    model: Nullable(T.String()),
    finishReason: Nullable(T.String()),
    usage: Nullable(T.Object({ promptTokens: T.Integer(), completionTokens: T.Integer(), totalTokens: T.Integer(), estimated: T.Boolean() }, closed)),
    error: Nullable(T.Object({ code: T.String(), message: T.String() }, closed)),
    createdAt: Timestamp,
    completedAt: Nullable(Timestamp),
  },
  closed,
)

const chatMessageExample = {
  id: ID.reply,
  sessionId: ID.chat,
  role: 'assistant',
  content: 'Hello, world!',
  status: 'completed',
  model: 'gpt-4o-mini',
  finishReason: 'stop',
  usage: { promptTokens: 212, completionTokens: 4, totalTokens: 216, estimated: false },
  error: null,
  createdAt: AT,
  completedAt: '2026-01-15T09:30:01.250Z',
}

const chat = {
  message: T.Object(
    { message: ChatMessage },
    { ...closed, description: "The user's message, recorded.", examples: [{ message: { ...chatMessageExample, id: ID.message, role: 'user', content: 'Hi!', model: null, finishReason: null, usage: null, completedAt: AT } }] },
  ),
  started: T.Object(
    { messageId: Uuid, userMessageId: Uuid, model: T.String() },
    { ...closed, description: 'The assistant started answering (`messageId`: its message, streaming).', examples: [{ messageId: ID.reply, userMessageId: ID.message, model: 'gpt-4o-mini' }] },
  ),
  delta: T.Object(
    { messageId: Uuid, index: T.Integer({ minimum: 0, description: 'Chunks of one answer are numbered from 0, in order' }), text: T.String() },
    { ...closed, description: 'A chunk of the answer; the chunks concatenated are the final text.', examples: [{ messageId: ID.reply, index: 0, text: 'Hello, wor' }] },
  ),
  done: T.Object(
    { message: ChatMessage },
    { ...closed, description: "The assistant's message, final (completed, cancelled, interrupted or failed).", examples: [{ message: chatMessageExample }] },
  ),
  error: T.Object(
    { messageId: Uuid, code: T.String(), message: T.String() },
    { ...closed, description: 'The answer failed or was interrupted (after its `done`).', examples: [{ messageId: ID.reply, code: 'ai_provider_error', message: 'The AI provider refused the request' }] },
  ),
  session: T.Object(
    { session: ChatSession },
    {
      ...closed,
      description: 'The session changed (renamed).',
      examples: [{ session: { id: ID.chat, title: 'Churn model ideas', generating: false, generatingMessageId: null, createdAt: AT, updatedAt: AT } }],
    },
  ),
  deleted: T.Object({ id: Uuid }, { ...closed, description: 'The session was deleted.', examples: [{ id: ID.chat }] }),
}

// ---- DataKits (datakit.ts) ----------------------------------------------------------------

const DatakitVersion = T.Integer({ minimum: 1 })
const DatakitStatusEvent = T.Union(
  [
    T.Object({ id: Uuid, version: DatakitVersion, status: T.Literal('PROCESSING'), error: T.Null(), errorLine: T.Null() }, closed),
    T.Object({ id: Uuid, version: DatakitVersion, status: T.Literal('READY'), error: T.Null(), errorLine: T.Null(), rowCount: T.Integer({ minimum: 0 }), columnCount: T.Integer({ minimum: 0 }) }, closed),
    T.Object(
      { id: Uuid, version: DatakitVersion, status: T.Literal('FAILED'), error: T.String({ description: 'Why, in words the uploader can act on' }), errorLine: T.Union([T.Integer(), T.Null()], { description: 'The line of the file that broke, when known' }) },
      closed,
    ),
  ],
  {
    description: 'A version was uploaded (PROCESSING), profiled (READY) or refused (FAILED).',
    examples: [{ id: ID.datakit, version: 1, status: 'READY', error: null, errorLine: null, rowCount: 1000, columnCount: 4 }],
  },
)
const datakit = {
  status: DatakitStatusEvent,
  updated: T.Object(
    { id: Uuid, name: T.String(), description: Nullable(T.String()) },
    { ...closed, description: 'Renamed or described anew.', examples: [{ id: ID.datakit, name: 'customers', description: 'Customers with a purchase label' }] },
  ),
  deleted: T.Object({ id: Uuid }, { ...closed, description: 'Deleted, with its versions and files.', examples: [{ id: ID.datakit }] }),
}

// ---- Notifications (notifier.ts) ----------------------------------------------------------

const NotificationEvent = T.Object(
  {
    id: Uuid,
    kind: Literals(NOTIFICATION_KINDS),
    title: T.String({ description: "The e-mail's subject, in words" }),
    body: T.String({ description: 'One sentence: what happened' }),
    link: T.Union([T.String(), T.Null()], { description: 'Where to act on it in the web app (starts at FRONTEND_URL)' }),
    data: T.Record(T.String(), T.Unknown(), { description: 'What the notification is about, by kind (ids, names, status, error)' }),
    createdAt: Timestamp,
  },
  {
    ...closed,
    description: 'You were notified (the same as GET /api/notifications lists): a run or pipeline run ended, a workstation was stopped for idleness, your storage is 90 % full, your password was changed, sign-ins were paused.',
    examples: [
      {
        id: 'e5f6a7b8-c9d0-4e1f-8a2b-3c4d5e6f7a8b',
        kind: 'training-run.failed',
        title: 'Training run failed: churn',
        body: 'Training run 8b3c4d5e of model “churn” failed.',
        link: 'https://app.example.com/models/9c4d5e6f-7a8b-4c9d-8e1f-2a3b4c5d6e7f/runs/8b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e',
        data: { runId: ID.run, modelId: ID.model, modelName: 'churn', status: 'FAILED', error: 'The target column "label" is not in the DataKit', version: null, attempt: 1 },
        createdAt: AT,
      },
    ],
  },
)

/**
 * Every event, by topic kind and type: `EVENTS.workstation.status` is the schema of the `data`
 * of a `status` event on `workstation:<id>`. The user topic carries its owner's compute events
 * as they are, and the run and DataKit events under a prefix (`model-run.status`, `datakit.*`).
 */
export const EVENTS = {
  user: {
    ...compute,
    'model-run.status': RunStatusEvent,
    'datakit.status': DatakitStatusEvent,
    'datakit.updated': datakit.updated,
    'datakit.deleted': datakit.deleted,
    ...USER_PIPELINE_EVENTS,
    notification: NotificationEvent,
  },
  workstation: { ...compute, activity: ComputeActivityEvent },
  vm: compute,
  run: { status: RunStatusEvent, metrics: RunMetricsEvent, logs: RunLogsEvent },
  chat,
  datakit,
  'pipeline-run': PIPELINE_RUN_EVENTS,
  codesheet: CODESHEET_EVENTS,
} satisfies Record<string, Record<string, TSchema>>

export type TopicKind = keyof typeof EVENTS

/** What each topic kind is about, and who may subscribe to it. */
export const TOPICS: Record<TopicKind, { about: string; example: string }> = {
  user: { about: "a user's own things: status, changes and deletion of their workstations and VMs, their runs' status, their DataKits' status and changes, their pipelines' changes and pipeline runs' status, and their notifications", example: ID.user },
  workstation: { about: 'one workstation: status, changes, deletion, and CPU activity seen by the idle check', example: ID.workstation },
  vm: { about: 'one VM: status, changes (resizes too) and deletion', example: ID.vm },
  run: { about: 'one training run: status, metrics as they are logged, and a container run’s output lines', example: ID.run },
  chat: { about: 'one AI assistant session: messages, the answer streamed in chunks, renames and deletion', example: ID.chat },
  datakit: { about: 'one DataKit: each version’s profiling status, renames and deletion', example: ID.datakit },
  'pipeline-run': { about: 'one pipeline run: its status, each step’s transitions (with outputs and errors) and the steps’ log lines', example: PIPELINE_RUN_EXAMPLE },
  codesheet: { about: 'one CodeSheet: its executions’ status, each output as it is stored, its cells’ changes and its kernel’s state', example: CODESHEET_EXAMPLE },
}
