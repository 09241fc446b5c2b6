/**
 * The AsyncAPI document of the live protocol, served at GET /asyncapi.json: built from the
 * same TypeBox schemas the sockets send and check (./protocol.ts, ./container-protocol.ts) and
 * the actors' event catalog (src/actors/events.ts), with the close codes and limits taken from
 * the code and this server's configuration — so the document cannot drift from the wire.
 *
 * AsyncAPI 3.1.0, the newest version @asyncapi/parser validates (test/ws/asyncapi.test.ts
 * parses the served document with it: no errors). The document describes the server: its
 * `receive` operations are frames clients send, its `send` operations frames it sends.
 */
import { Elysia } from 'elysia'
import type { TSchema } from '@sinclair/typebox'
import pkg from '../../package.json'
import { EVENTS, TOPICS, type TopicKind } from '../actors/events.ts'
import { access } from '../auth/route-access.ts'
import type { Config } from '../config.ts'
import {
  LOG_TAIL,
  LOGS_CLOSE,
  LOGS_CLOSE_MEANING,
  LogServerMessage,
  LogsQuery,
  logsRoute,
  TERMINAL_CLOSE,
  TERMINAL_CLOSE_MEANING,
  TERMINAL_DEFAULTS,
  TerminalQuery,
  TerminalResize,
  terminalRoute,
  TerminalServerMessage,
} from './container-protocol.ts'
import { ClientMessage, CLOSE, CLOSE_MEANING, LIVE_ROUTE, ServerMessage } from './protocol.ts'

type Json = Record<string, any>

/** What the document states of this server's configuration. */
type AsyncApiLimits = Pick<Config, 'ws' | 'terminal' | 'containerLogs'>

/** Where the container sockets are served, per kind (the features' `wsPrefix`). */
const CONTAINER_PREFIX = { workstation: '/ws/workstations', vm: '/ws/vms' } as const
const CONTAINER_LABEL = { workstation: 'workstation', vm: 'VM' } as const
type ContainerKind = keyof typeof CONTAINER_PREFIX

const AT = '2026-01-15T09:30:00.000Z'
const UUID_EXAMPLE = '6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f'

/** A TypeBox schema as plain JSON Schema (TypeBox's symbols dropped). */
const json = (s: TSchema): Json => JSON.parse(JSON.stringify(s)) as Json

const ref = (path: string) => ({ $ref: `#/${path}` })

/** A message of the components, from a TypeBox schema that carries `title`, `description` and `examples`. */
function message(name: string, schema: TSchema, extra: Json = {}): Json {
  const examples = (schema.examples as unknown[] | undefined) ?? []
  if (examples.length === 0) throw new Error(`the ${name} frame's schema has no example`)
  return {
    name,
    title: name,
    summary: schema.description,
    contentType: 'application/json',
    payload: json(schema),
    examples: examples.map((payload, i) => ({ name: `${name.replaceAll(/[^A-Za-z0-9]/g, '-')}-${i + 1}`, payload })),
    ...extra,
  }
}

/** The `event` frame of `type` on `<kind>:<id>`: the envelope of ./protocol.ts around the catalog's data. */
function eventMessage(kind: TopicKind, type: string, data: TSchema): Json {
  const example = (data.examples as unknown[] | undefined)?.[0]
  if (example === undefined) throw new Error(`the ${kind} ${type} event's schema has no example`)
  return {
    name: `${kind}.${type}`,
    title: `${type} on ${kind}:<id>`,
    summary: data.description,
    contentType: 'application/json',
    payload: {
      type: 'object',
      additionalProperties: false,
      required: ['op', 'topic', 'seq', 'type', 'data', 'at'],
      properties: {
        op: { const: 'event', type: 'string' },
        topic: { type: 'string', pattern: `^${kind}:[0-9a-fA-F-]{36}$` },
        seq: { type: 'integer', minimum: 1, description: "The event's number in its topic: 1, 2, 3… with no gaps; resume with `since`" },
        type: { const: type, type: 'string' },
        data: json(data),
        at: { type: 'string', format: 'date-time' },
      },
    },
    examples: [{ name: `${kind}-${type.replaceAll('.', '-')}`, payload: { op: 'event', topic: `${kind}:${TOPICS[kind].example}`, seq: 42, type, data: example, at: AT } }],
  }
}

const variants = (union: { anyOf: TSchema[] }) => union.anyOf.map((s) => ({ name: s.title as string, schema: s }))

/** Close codes as a Markdown list: each code with what it means. */
function closeCodes(codes: Record<string, number>, meaning: Record<string, string>): string {
  return Object.entries(codes)
    .map(([key, code]) => `- \`${code}\`: ${meaning[key]}`)
    .join('\n')
}

function table(rows: Array<[string, number | string, string]>): string {
  return ['| Variable | This server | Meaning |', '|---|---|---|', ...rows.map(([v, n, m]) => `| \`${v}\` | ${n} | ${m} |`)].join('\n')
}

const BINDING_HEADERS = {
  type: 'object',
  properties: {
    Authorization: { type: 'string', description: '`Bearer <access token>` (servers, CLIs)' },
    'Sec-WebSocket-Protocol': { type: 'string', description: '`quadrax.v1, bearer.<access token>` (browsers); the server answers `quadrax.v1`' },
    Origin: { type: 'string', description: 'Sent by browsers: must be one of CORS_ORIGIN, else 403' },
  },
}

/** The document, without `servers` (they name the host the client asked). */
function documentBody(limits: AsyncApiLimits): Json {
  const { ws, terminal, containerLogs } = limits
  const messages: Json = {}
  const live: Json = {}
  const operations: Json = {}

  // /ws: the client's frames, the answers, and each topic kind's events.
  for (const { name, schema } of variants(ClientMessage)) (messages[name] = message(name, schema)), (live[name] = ref(`components/messages/${name}`))
  for (const { name, schema } of variants(ServerMessage)) {
    if (name === 'event') continue // one message per topic kind and type, below
    messages[name] = message(name, schema)
    live[name] = ref(`components/messages/${name}`)
  }
  const liveMsg = (name: string) => ref(`channels/live/messages/${name}`)
  operations.subscribe = {
    action: 'receive',
    channel: ref('channels/live'),
    title: 'Subscribe to a topic',
    summary: 'Watch `<kind>:<id>`; with `since`, first replay what was missed.',
    description:
      'Each subscription is authorised: your own topics (`user:<your id>`, your workstations, VMs, runs, chats, DataKits); admins may watch everything. A refused one answers `forbidden` whether or not the object exists. ' +
      `More than WS_MAX_REPLAY (${ws.maxReplay}) events behind \`since\` answers \`replay_limit\`: reload the state, then subscribe without \`since\`.`,
    messages: [liveMsg('subscribe')],
    reply: { channel: ref('channels/live'), messages: [liveMsg('ack'), liveMsg('error')] },
  }
  operations.unsubscribe = {
    action: 'receive',
    channel: ref('channels/live'),
    title: 'Unsubscribe from a topic',
    messages: [liveMsg('unsubscribe')],
    reply: { channel: ref('channels/live'), messages: [liveMsg('ack'), liveMsg('error')] },
  }
  operations.ping = { action: 'receive', channel: ref('channels/live'), title: 'Ping', messages: [liveMsg('ping')], reply: { channel: ref('channels/live'), messages: [liveMsg('pong'), liveMsg('error')] } }
  operations.errors = {
    action: 'send',
    channel: ref('channels/live'),
    title: 'Errors',
    summary: 'A frame that is not JSON or not a protocol message (`bad_message`), too many frames (`rate_limited`), or a failure (`internal`).',
    messages: [liveMsg('error')],
  }
  for (const kind of Object.keys(EVENTS) as TopicKind[]) {
    const names: string[] = []
    for (const [type, data] of Object.entries(EVENTS[kind]) as Array<[string, TSchema]>) {
      const name = `${kind}.${type}`
      messages[name] = eventMessage(kind, type, data)
      live[name] = ref(`components/messages/${name}`)
      names.push(name)
    }
    operations[`${kind}Events`] = {
      action: 'send',
      channel: ref('channels/live'),
      title: `Events of ${kind}:<id>`,
      summary: `Subscribe to \`${kind}:<id>\` to receive events about ${TOPICS[kind].about}.`,
      description: `Event types: ${names.map((n) => `\`${n.slice(kind.length + 1)}\``).join(', ')}. Every event carries a per-topic \`seq\` (1, 2, 3…), delivered in order with no gap and no duplicate.`,
      messages: names.map(liveMsg),
    }
  }

  // The container sockets: the same frames for workstations and VMs.
  for (const { name, schema } of variants(TerminalServerMessage)) messages[`terminal.${name}`] = message(`terminal.${name}`, schema)
  messages['terminal.resize'] = message('terminal.resize', TerminalResize)
  messages['terminal.output'] = {
    name: 'terminal.output',
    title: 'terminal.output',
    summary: 'Screen output of the shell, as it comes (binary frames; on a re-attach, the recent output first).',
    contentType: 'application/octet-stream',
    payload: { type: 'string', format: 'binary' },
    examples: [{ name: 'prompt', payload: '~ $ ' }],
  }
  messages['terminal.input'] = {
    name: 'terminal.input',
    title: 'terminal.input',
    summary: 'Keyboard input, byte for byte: any text or binary frame that is not a `resize` frame.',
    contentType: 'application/octet-stream',
    payload: { type: 'string', format: 'binary' },
    examples: [{ name: 'command', payload: 'ls -la\n' }],
  }
  for (const { name, schema } of variants(LogServerMessage)) messages[`logs.${name}`] = message(`logs.${name}`, schema)

  const channels: Json = {
    live: {
      address: '/ws',
      title: LIVE_ROUTE.summary,
      description: [
        LIVE_ROUTE.description,
        '',
        `**Access:** any signed-in user (\`x-access\`: \`${LIVE_ROUTE['x-access']}\`); each topic is authorised at subscribe. Refused before the upgrade: 401 (missing, bad, expired or revoked token), 403 (a foreign \`Origin\`), 429 (more than WS_MAX_CONNECTIONS_PER_USER sockets).`,
        '',
        '**Close codes:**',
        closeCodes(CLOSE, CLOSE_MEANING),
        `- \`1006\` (no close frame): a peer that answered no ping for WS_IDLE_TIMEOUT_SECONDS (${ws.idleTimeoutSeconds} s) is dropped`,
      ].join('\n'),
      messages: live,
      bindings: { ws: { method: 'GET', headers: BINDING_HEADERS, query: { type: 'object', properties: { ticket: json(TerminalQuery.properties.ticket) } }, bindingVersion: '0.1.0' } },
      'x-access': LIVE_ROUTE['x-access'],
    },
  }
  for (const kind of Object.keys(CONTAINER_PREFIX) as ContainerKind[]) {
    const label = CONTAINER_LABEL[kind]
    const id = { description: `The ${label}'s id (a UUID)`, examples: [UUID_EXAMPLE] }
    const t = terminalRoute(kind)
    const l = logsRoute(kind)
    const term = `${kind}Terminal`
    const logs = `${kind}Logs`
    channels[term] = {
      address: `${CONTAINER_PREFIX[kind]}/{id}/terminal`,
      title: t.summary,
      description: [
        t.description,
        '',
        `The shell's output is paused while more than ${TERMINAL_DEFAULTS.outputPauseBytes / 1024} KiB wait unsent to a slow client; a dropped connection keeps the shell for TERMINAL_REATTACH_GRACE_MS (${terminal.reattachGraceMs} ms), and a re-attach replays the last ${TERMINAL_DEFAULTS.backlogBytes / 1024} KiB of output first; at most ${TERMINAL_DEFAULTS.sessionsPerUser} sessions per user per node. Sessions live on the node that started them (route a session's reconnects to the same node).`,
        '',
        '**Close codes:**',
        closeCodes(TERMINAL_CLOSE, TERMINAL_CLOSE_MEANING),
      ].join('\n'),
      parameters: { id },
      messages: Object.fromEntries(['session', 'exit', 'error', 'output', 'input', 'resize'].map((n) => [n, ref(`components/messages/terminal.${n}`)])),
      bindings: { ws: { method: 'GET', headers: BINDING_HEADERS, query: json(TerminalQuery), bindingVersion: '0.1.0' } },
      'x-access': t['x-access'],
    }
    channels[logs] = {
      address: `${CONTAINER_PREFIX[kind]}/{id}/logs`,
      title: l.summary,
      description: [
        l.description,
        '',
        `Lines longer than CONTAINER_LOG_LINE_MAX_BYTES (${containerLogs.lineMaxBytes}) come in pieces (\`partial\`); past CONTAINER_LOG_FOLLOW_MAX_BYTES (${containerLogs.followMaxBytes}) a \`notice\` says so, and the end frame counts what was dropped (\`droppedBytes\`). \`?tail=\` defaults to ${LOG_TAIL.default} lines (at most ${LOG_TAIL.max}).`,
        '',
        '**Close codes:**',
        closeCodes(LOGS_CLOSE, LOGS_CLOSE_MEANING),
      ].join('\n'),
      parameters: { id },
      messages: Object.fromEntries(['log', 'end', 'error'].map((n) => [n, ref(`components/messages/logs.${n}`)])),
      bindings: { ws: { method: 'GET', headers: BINDING_HEADERS, query: json(LogsQuery), bindingVersion: '0.1.0' } },
      'x-access': l['x-access'],
    }
    const msg = (channel: string, n: string) => ref(`channels/${channel}/messages/${n}`)
    operations[`${term}Input`] = {
      action: 'receive',
      channel: ref(`channels/${term}`),
      title: `Type into a ${label}'s terminal`,
      messages: [msg(term, 'input'), msg(term, 'resize')],
    }
    operations[`${term}Output`] = {
      action: 'send',
      channel: ref(`channels/${term}`),
      title: `A ${label}'s terminal: session, screen output, exit`,
      messages: [msg(term, 'session'), msg(term, 'output'), msg(term, 'exit'), msg(term, 'error')],
    }
    operations[`${logs}Follow`] = {
      action: 'send',
      channel: ref(`channels/${logs}`),
      title: `A ${label}'s output lines`,
      messages: [msg(logs, 'log'), msg(logs, 'end'), msg(logs, 'error')],
    }
  }

  return {
    asyncapi: '3.1.0',
    info: {
      title: 'QUADRAX ML live sessions',
      version: pkg.version,
      description: [
        'The WebSocket protocol of the QUADRAX ML API: live events on `/ws` (subscribe to topics, resume after a reconnect with `since`), terminals and log followers of workstations and VMs. The REST API is described at `/swagger/json`.',
        '',
        'This document describes the server: its `receive` operations are the frames clients send, its `send` operations the frames it sends. Every JSON frame is one object with an `op`; objects are closed (no fields beyond those named).',
        '',
        `**Authentication** at the upgrade, one of: \`Authorization: Bearer <access token>\`; \`Sec-WebSocket-Protocol: quadrax.v1, bearer.<access token>\` (the server answers \`quadrax.v1\`); \`?ticket=<ticket>\` from \`POST /api/ws/ticket\` (single use, WS_TICKET_TTL_MS = ${ws.ticketTtlMs} ms). Logging out, changing the password or being deactivated closes the session's sockets (4001).`,
        '',
        '**Limits** (environment variables; this server\'s values):',
        '',
        table([
          ['WS_MAX_PAYLOAD_BYTES', ws.maxPayloadBytes, 'largest client frame; a larger one closes the socket with 1009'],
          ['WS_MAX_CONNECTIONS_PER_USER', ws.maxConnectionsPerUser, '/ws sockets per user per node; one more is a 429 at the upgrade'],
          ['WS_MESSAGES_PER_SECOND', ws.messagesPerSecond, 'client frames per second on /ws (bursts of twice that); more answer `rate_limited`, sustained abuse closes with 1008'],
          ['WS_IDLE_TIMEOUT_SECONDS', ws.idleTimeoutSeconds, 'the server pings; a peer silent this long is dropped'],
          ['WS_MAX_BUFFERED_BYTES', ws.maxBufferedBytes, 'unread bytes before a slow consumer is closed (1013)'],
          ['WS_MAX_REPLAY', ws.maxReplay, 'most events replayed on a subscribe with `since` (else `replay_limit`)'],
          ['WS_TICKET_TTL_MS', ws.ticketTtlMs, 'lifetime of a `?ticket=`'],
          ['TERMINAL_REATTACH_GRACE_MS', terminal.reattachGraceMs, 'how long a detached shell waits for a re-attach'],
          ['CONTAINER_LOG_LINE_MAX_BYTES', containerLogs.lineMaxBytes, 'longer output lines are split (`partial`)'],
          ['CONTAINER_LOG_FOLLOW_MAX_BYTES', containerLogs.followMaxBytes, 'output streamed per log-follow connection'],
        ]),
      ].join('\n'),
    },
    defaultContentType: 'application/json',
    channels,
    operations,
    components: {
      messages,
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'The `token` from `POST /api/auth/login`, in the `Authorization` header (servers, CLIs).' },
        subprotocol: {
          type: 'httpApiKey',
          in: 'header',
          name: 'Sec-WebSocket-Protocol',
          description: 'Browsers, which cannot set headers on a WebSocket: offer the subprotocols `quadrax.v1, bearer.<access token>`; the server answers `quadrax.v1`.',
        },
        ticket: { type: 'httpApiKey', in: 'query', name: 'ticket', description: `A single-use ticket from \`POST /api/ws/ticket\`, valid ${ws.ticketTtlMs} ms (WS_TICKET_TTL_MS).` },
      },
    },
  }
}

/** The document with its servers: `host` is the host the client reached. */
function withServers(body: Json, host: string): Json {
  const security = [ref('components/securitySchemes/bearer'), ref('components/securitySchemes/subprotocol'), ref('components/securitySchemes/ticket')]
  const { asyncapi, info, ...rest } = body
  return {
    asyncapi,
    info,
    servers: {
      ws: { host, protocol: 'ws', title: 'This server', description: 'As reached by this request.', security },
      wss: { host, protocol: 'wss', title: 'This server behind TLS', description: 'The same, behind a TLS-terminating proxy (nginx, HAProxy).', security },
    },
    ...rest,
  }
}

/** GET /asyncapi.json: public, and not part of the OpenAPI paths (it is its own document). */
export function asyncApiRoutes(limits: AsyncApiLimits) {
  const body = documentBody(limits)
  return new Elysia().get('/asyncapi.json', ({ request }) => withServers(body, new URL(request.url).host), {
    detail: { hide: true, summary: 'The AsyncAPI document of the live protocol', ...access.public },
  })
}
