/**
 * The frames of the container sockets (./terminal.ts), as TypeBox schemas: the source of their
 * part of the AsyncAPI document (./asyncapi.ts) and the only frames those sockets send.
 *
 * Terminal (`<prefix>/:id/terminal`): text frames `session`, `exit`, `error` from the server,
 * binary frames of screen output; from the client, keyboard input (text or binary) and the
 * text frame `resize`. Logs (`<prefix>/:id/logs`): text frames `log`, `end`, `error`.
 */
import { Type as T, type Static } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { access } from '../auth/route-access.ts'

const closed = { additionalProperties: false } as const
const AT = '2026-01-15T09:30:00.000Z'

/** Columns and rows a terminal may have (`?cols=&rows=`, and `resize`). */
export const TERMINAL_SIZE = { min: 1, max: 1000 } as const
/** A terminal's defaults (TerminalSessions' options), as the AsyncAPI document states them. */
export const TERMINAL_DEFAULTS = {
  /** Recent output kept for a re-attach, replayed first. */
  backlogBytes: 64 * 1024,
  /** Live shell sessions per user on one node; one more is a 429 at the upgrade. */
  sessionsPerUser: 10,
  /** Unsent bytes after which the shell's output is paused until the socket drains. */
  outputPauseBytes: 1024 * 1024,
} as const
/** Lines a log follower gets first (`?tail=`). */
export const LOG_TAIL = { default: 100, max: 10_000 } as const

const Size = (what: string) => T.Integer({ minimum: TERMINAL_SIZE.min, maximum: TERMINAL_SIZE.max, description: `${what} of the terminal` })
const Ticket = T.String({ description: 'A single-use ticket from `POST /api/ws/ticket` (WS_TICKET_TTL_MS), for browsers, which cannot set headers on a WebSocket' })

/** The query of a terminal upgrade (values out of range are ignored). */
export const TerminalQuery = T.Object(
  {
    cols: T.Optional(Size('Columns')),
    rows: T.Optional(Size('Rows')),
    session: T.Optional(T.String({ format: 'uuid', description: 'Re-attach to this session (its `sessionId`) within TERMINAL_REATTACH_GRACE_MS of a dropped connection' })),
    ticket: T.Optional(Ticket),
  },
  closed,
)

/** The query of a log-follow upgrade. */
export const LogsQuery = T.Object(
  {
    tail: T.Optional(T.Integer({ minimum: 0, maximum: LOG_TAIL.max, default: LOG_TAIL.default, description: 'How many of the latest lines to send first' })),
    ticket: T.Optional(Ticket),
  },
  closed,
)

const ContainerError = T.Object(
  { op: T.Literal('error'), message: T.String() },
  { ...closed, title: 'error', description: 'The terminal could not be started, or the log stream failed; the socket then closes with 1011.', examples: [{ op: 'error', message: 'the terminal could not be started' }] },
)

/** Server → client text frames of a terminal. */
export const TerminalServerMessage = T.Union([
  T.Object(
    { op: T.Literal('session'), sessionId: T.String({ format: 'uuid', description: 'Reconnect with `?session=` to re-attach' }), reattached: T.Boolean() },
    { ...closed, title: 'session', description: 'The first frame: the shell session this socket is attached to.', examples: [{ op: 'session', sessionId: '1e2d3c4b-5a69-4788-8796-a5b4c3d2e1f0', reattached: false }] },
  ),
  T.Object(
    { op: T.Literal('exit'), code: T.Union([T.Integer(), T.Null()], { description: "The shell's exit code (null when unknown)" }) },
    { ...closed, title: 'exit', description: 'The shell exited; the socket closes with 1000.', examples: [{ op: 'exit', code: 0 }] },
  ),
  ContainerError,
])
type TerminalServerMessage = Static<typeof TerminalServerMessage>

/** The client's one control frame on a terminal (every other frame is keyboard input). */
export const TerminalResize = T.Object(
  { op: T.Literal('resize'), cols: Size('Columns'), rows: Size('Rows') },
  { ...closed, title: 'resize', description: 'Resize the terminal. A text frame that is not exactly this is keyboard input.', examples: [{ op: 'resize', cols: 120, rows: 40 }] },
)
const resize = TypeCompiler.Compile(TerminalResize)

/** Server → client frames of a log follower. */
export const LogServerMessage = T.Union([
  T.Object(
    {
      op: T.Literal('log'),
      stream: T.Union([T.Literal('stdout'), T.Literal('stderr')]),
      line: T.String(),
      at: T.Union([T.String({ format: 'date-time' }), T.Null()], { description: "The engine's timestamp of the line" }),
      partial: T.Optional(T.Literal(true, { description: 'A piece of a line longer than CONTAINER_LOG_LINE_MAX_BYTES; the line goes on in the next frame of the same stream' })),
      notice: T.Optional(T.Literal(true, { description: "The platform's own note (on stderr): output past CONTAINER_LOG_FOLLOW_MAX_BYTES is not streamed, and how much was dropped" })),
    },
    { ...closed, title: 'log', description: 'One line of output (or a piece of a long one).', examples: [{ op: 'log', stream: 'stdout', line: 'epoch 3: loss 0.231', at: AT }] },
  ),
  T.Object(
    { op: T.Literal('end'), droppedBytes: T.Optional(T.Integer({ minimum: 1, description: 'Output bytes not streamed (past CONTAINER_LOG_FOLLOW_MAX_BYTES)' })) },
    { ...closed, title: 'end', description: 'The container stopped (or has none): the socket closes with 1000.', examples: [{ op: 'end' }, { op: 'end', droppedBytes: 1048576 }] },
  ),
  ContainerError,
])
type LogServerMessage = Static<typeof LogServerMessage>

/** Send a terminal's text frame (returns nothing: see `reply` in ./protocol.ts). */
export function sendTerminal(ws: { send(data: string): unknown }, msg: TerminalServerMessage): void {
  ws.send(JSON.stringify(msg))
}

/** Send screen output (a binary frame). */
export function sendOutput(ws: { send(data: Uint8Array): unknown }, bytes: Uint8Array): void {
  ws.send(bytes)
}

/** Send a log follower's frame. */
export function sendLog(ws: { send(data: string): unknown }, msg: LogServerMessage): void {
  ws.send(JSON.stringify(msg))
}

/** The size a text frame asks for, when it is a `resize` frame; undefined for keyboard input. */
export function parseResize(text: string): { cols: number; rows: number } | undefined {
  if (!text.startsWith('{"op"')) return undefined
  try {
    const m: unknown = JSON.parse(text)
    if (resize.Check(m)) return { cols: m.cols, rows: m.rows }
  } catch {
    // Not JSON after all: it is keyboard input.
  }
  return undefined
}

/** Close codes of terminal sockets (4000–4999: the application's). */
export const TERMINAL_CLOSE = { exited: 1000, shutdown: 1012, failed: 1011, attachedElsewhere: 4003 } as const
export const TERMINAL_CLOSE_MEANING: Record<keyof typeof TERMINAL_CLOSE, string> = {
  exited: 'the shell exited (`shell exited`, after the `exit` frame)',
  shutdown: 'service restart: the server is stopping (`server shutting down`); the shell is ended (a shell lives on the node that opened it): reconnect for a new one',
  failed: 'the terminal could not be started (`terminal failed`, after an `error` frame)',
  attachedElsewhere: 'another socket re-attached to this session (`the session was attached elsewhere`)',
}

/** Close codes of log followers. */
export const LOGS_CLOSE = { ended: 1000, failed: 1011, slow: 1013 } as const
export const LOGS_CLOSE_MEANING: Record<keyof typeof LOGS_CLOSE, string> = {
  ended: 'the container stopped (`container stopped`) or has none (`no container`), after the `end` frame',
  failed: 'the log stream failed (`log stream failed`, after an `error` frame)',
  slow: 'slow consumer: more than WS_MAX_BUFFERED_BYTES were waiting unread (`slow consumer`)',
}

type ContainerKind = 'workstation' | 'vm'
const LABEL: Record<ContainerKind, string> = { workstation: 'workstation', vm: 'VM' }

/** The `detail` of a terminal route: what it is and who may open it (a shell is a change). */
export function terminalRoute(kind: ContainerKind) {
  return {
    summary: `Open a terminal in a ${LABEL[kind]}`,
    description: `A shell (\`docker exec\` with a TTY) in the running ${LABEL[kind]}'s container, re-attachable for TERMINAL_REATTACH_GRACE_MS after a dropped connection. Refused before the upgrade: 401 (no valid token), 403 (a VIEWER), 404 (not yours, or no such ${LABEL[kind]}), 409 (not running), 429 (too many sessions), 503 (no container engine). Frames: /asyncapi.json.`,
    ...access.object(kind, 'shell'),
  }
}

/** The `detail` of a log-follow route (a read). */
export function logsRoute(kind: ContainerKind) {
  return {
    summary: `Follow a ${LABEL[kind]}'s output`,
    description: `The container's latest lines (\`?tail=\`), then new ones as they are written, until it stops; at most CONTAINER_LOG_FOLLOW_MAX_BYTES per connection. Refused before the upgrade: 401, 404 (not yours, or no such ${LABEL[kind]}), 503 (no container engine). Frames: /asyncapi.json.`,
    ...access.object(kind, 'read'),
  }
}
