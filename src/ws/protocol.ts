/**
 * The /ws protocol, as TypeBox schemas: the source of the AsyncAPI document (./asyncapi.ts,
 * served at /asyncapi.json) and of the checks at both ends of the socket.
 *
 * Client → server: subscribe {topic, since?, id?}, unsubscribe {topic, id?}, ping {id?}.
 * Server → client: ack {for, id?, topic?, seq?}, event {topic, seq, type, data, at},
 * error {code, message, id?, topic?}, pong {id?}.
 * Every frame is a JSON object with an `op` discriminator. The events' `data` per topic kind
 * and type is in src/actors/events.ts.
 */
import { Type as T, type Static } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { EVENTS } from '../actors/events.ts'
import { access } from '../auth/route-access.ts'

const TOPIC_PATTERN = `^(${Object.keys(EVENTS).join('|')}):[0-9a-fA-F-]{36}$`
const Topic = T.String({ pattern: TOPIC_PATTERN, description: '`<kind>:<id>`: `user:<your id>`, `workstation:<id>`, `vm:<id>`, `run:<id>`, `chat:<id>`, `datakit:<id>`, `pipeline-run:<id>`' })
const RequestId = T.String({ maxLength: 64, description: 'Yours to choose: the answer carries it back' })
const EXAMPLE_TOPIC = 'workstation:6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f'

/** Client → server frames. */
export const ClientMessage = T.Union([
  T.Object(
    {
      op: T.Literal('subscribe'),
      topic: Topic,
      since: T.Optional(T.Integer({ minimum: 0, description: 'The last `seq` you processed: every later event is replayed first (at most WS_MAX_REPLAY), then live ones' })),
      id: T.Optional(RequestId),
    },
    {
      additionalProperties: false,
      title: 'subscribe',
      description: 'Watch a topic. Answered by an `ack` (or an `error`: `forbidden`, `replay_limit`).',
      examples: [{ op: 'subscribe', topic: EXAMPLE_TOPIC, since: 41, id: 's1' }],
    },
  ),
  T.Object(
    { op: T.Literal('unsubscribe'), topic: Topic, id: T.Optional(RequestId) },
    { additionalProperties: false, title: 'unsubscribe', description: 'Stop watching a topic. Answered by an `ack`.', examples: [{ op: 'unsubscribe', topic: EXAMPLE_TOPIC, id: 'u1' }] },
  ),
  T.Object(
    { op: T.Literal('ping'), id: T.Optional(RequestId) },
    { additionalProperties: false, title: 'ping', description: 'Is the server there? Answered by a `pong`.', examples: [{ op: 'ping', id: 'p1' }] },
  ),
])
type ClientMessage = Static<typeof ClientMessage>

// Closed objects: a frame with a field the schema does not name is not a protocol message
// (test/ws/live.test.ts checks every frame a session receives against ServerMessage).
const ServerEvent = T.Object(
  {
    op: T.Literal('event'),
    topic: T.String(),
    seq: T.Integer({ description: "The event's number in its topic: 1, 2, 3… with no gaps; resume with `since`" }),
    type: T.String(),
    data: T.Unknown(),
    at: T.String({ format: 'date-time' }),
  },
  {
    additionalProperties: false,
    title: 'event',
    description: 'An event of a subscribed topic (its `data` per topic kind and type: src/actors/events.ts).',
    examples: [
      {
        op: 'event',
        topic: EXAMPLE_TOPIC,
        seq: 42,
        type: 'deleted',
        data: { kind: 'workstation', id: '6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f', name: 'gpu-box', at: '2026-01-15T09:30:00.000Z' },
        at: '2026-01-15T09:30:00.000Z',
      },
    ],
  },
)
const ServerAck = T.Object(
  {
    op: T.Literal('ack'),
    id: T.Optional(T.String()),
    for: T.Union([T.Literal('subscribe'), T.Literal('unsubscribe')]),
    topic: T.Optional(T.String()),
    seq: T.Optional(T.Integer({ description: 'On a subscribe: where live delivery starts (the replay, if any, went up to it)' })),
  },
  { additionalProperties: false, title: 'ack', description: 'A subscribe or unsubscribe took effect.', examples: [{ op: 'ack', for: 'subscribe', id: 's1', topic: EXAMPLE_TOPIC, seq: 57 }] },
)
const ServerError = T.Object(
  {
    op: T.Literal('error'),
    code: T.String({ description: '`forbidden` (not your topic, or no such object), `replay_limit` (more than WS_MAX_REPLAY behind), `bad_message`, `rate_limited`, `internal`' }),
    message: T.String(),
    id: T.Optional(T.String()),
    topic: T.Optional(T.String()),
  },
  {
    additionalProperties: false,
    title: 'error',
    description: 'A frame was refused, or failed.',
    examples: [{ op: 'error', code: 'forbidden', message: 'You cannot subscribe to this topic', id: 's1', topic: EXAMPLE_TOPIC }],
  },
)
const ServerPong = T.Object(
  { op: T.Literal('pong'), id: T.Optional(T.String()) },
  { additionalProperties: false, title: 'pong', description: 'The answer to a ping.', examples: [{ op: 'pong', id: 'p1' }] },
)
/** Server → client frames: nothing else goes on the wire. */
export const ServerMessage = T.Union([ServerEvent, ServerAck, ServerError, ServerPong])
export type ServerMessage = Static<typeof ServerMessage>

/**
 * Send one protocol message. Returns nothing on purpose: a WebSocket handler that returned
 * `ws.send(…)`'s byte count had Elysia send that number as a frame of its own.
 */
export function reply(ws: { send(data: string): unknown }, msg: ServerMessage): void {
  ws.send(JSON.stringify(msg))
}

export const clientMessage = TypeCompiler.Compile(ClientMessage)
const byOp = new Map(ClientMessage.anyOf.map((schema) => [schema.properties.op.const as string, TypeCompiler.Compile(schema)]))

/** Why `msg` is not a valid client message, naming the field (a union's own error would not). */
export function explain(msg: unknown): string {
  const op = typeof msg === 'object' && msg !== null ? (msg as { op?: unknown }).op : undefined
  const check = typeof op === 'string' ? byOp.get(op) : undefined
  if (!check) return `op must be one of ${[...byOp.keys()].join(', ')}`
  const e = check.Errors(msg).First()
  return e ? `${e.path.replace(/^\//, '') || 'message'}: ${e.message}` : 'Invalid message'
}

/** Close codes of /ws (RFC 6455 §7.4.1, and 4000–4999 for the application). */
export const CLOSE = {
  shutdown: 1012, // service restart: the server is stopping; reconnect (to another node) and resume with `since`
  policy: 1008, // message rate abuse
  tooBig: 1009, // frame over the size limit
  tryAgain: 1013, // slow consumer: too much unread
  revoked: 4001,
} as const

/** What each close code means, for the AsyncAPI document (a code without one fails to compile). */
export const CLOSE_MEANING: Record<keyof typeof CLOSE, string> = {
  shutdown: 'service restart: the server is stopping (`server shutting down`), as in a rolling restart; reconnect (the balancer sends you to another node) and resume each topic with `since` set to the last `seq` you got: nothing is missed',
  policy: 'sustained abuse of the message rate (`message rate limit exceeded`): more than twice WS_MESSAGES_PER_SECOND of its frames were refused as `rate_limited`',
  tooBig: 'a frame over WS_MAX_PAYLOAD_BYTES',
  tryAgain: 'slow consumer: more than WS_MAX_BUFFERED_BYTES were waiting unread (`slow consumer: …`); reconnect and resume with `since`',
  revoked: 'the session was revoked (`session revoked`): logout, password change, deactivation — on every node',
}

/** The `detail` of the /ws route: its OpenAPI-style description and who may open it. */
export const LIVE_ROUTE = {
  summary: 'Live events',
  description: 'Subscribe to topics and receive their events as they happen, resuming after a reconnect with `since`. The protocol is in the AsyncAPI document at /asyncapi.json.',
  ...access.signedIn,
}
