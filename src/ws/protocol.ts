/**
 * The /ws protocol, as TypeBox schemas (the README documents the same).
 *
 * Client → server: subscribe {topic, since?, id?}, unsubscribe {topic, id?}, ping {id?}.
 * Server → client: ack {id?, op, topic?, seq?}, event {topic, seq, type, data, at},
 * error {code, message, id?, topic?}, pong {id?}.
 * Every frame is a JSON object with an `op` discriminator.
 */
import { Type as T, type Static } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'

const TOPIC_PATTERN = '^(user|workstation|vm|run|chat|datakit):[0-9a-fA-F-]{36}$'

const ClientMessage = T.Union([
  T.Object({ op: T.Literal('subscribe'), topic: T.String({ pattern: TOPIC_PATTERN }), since: T.Optional(T.Integer({ minimum: 0 })), id: T.Optional(T.String({ maxLength: 64 })) }, { additionalProperties: false }),
  T.Object({ op: T.Literal('unsubscribe'), topic: T.String({ pattern: TOPIC_PATTERN }), id: T.Optional(T.String({ maxLength: 64 })) }, { additionalProperties: false }),
  T.Object({ op: T.Literal('ping'), id: T.Optional(T.String({ maxLength: 64 })) }, { additionalProperties: false }),
])
type ClientMessage = Static<typeof ClientMessage>

// Closed objects: a frame with a field the schema does not name is not a protocol message
// (test/ws/live.test.ts checks every frame a session receives against ServerMessage).
const ServerEvent = T.Object({ op: T.Literal('event'), topic: T.String(), seq: T.Integer(), type: T.String(), data: T.Unknown(), at: T.String() }, { additionalProperties: false })
const ServerAck = T.Object(
  { op: T.Literal('ack'), id: T.Optional(T.String()), for: T.Union([T.Literal('subscribe'), T.Literal('unsubscribe')]), topic: T.Optional(T.String()), seq: T.Optional(T.Integer()) },
  { additionalProperties: false },
)
const ServerError = T.Object({ op: T.Literal('error'), code: T.String(), message: T.String(), id: T.Optional(T.String()), topic: T.Optional(T.String()) }, { additionalProperties: false })
const ServerPong = T.Object({ op: T.Literal('pong'), id: T.Optional(T.String()) }, { additionalProperties: false })
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

/** Close codes we use (RFC 6455 §7.4.1, and 4000–4999 for the application). */
export const CLOSE = {
  policy: 1008, // rate limit abuse, session revoked
  tooBig: 1009, // frame over the size limit
  tryAgain: 1013, // slow consumer: too much unread
  revoked: 4001,
  idle: 4002,
} as const
