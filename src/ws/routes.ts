/** WS /ws (live events) and POST /api/ws/ticket. The protocol is in protocol.ts. */
import { Elysia, t } from 'elysia'
import type { ServerWebSocket } from 'bun'
import { bearer, bearerToken, Envelope, errors, ok, requireUser, type AppDeps } from '../http/context.ts'
import { authenticateUpgrade, TooManyConnectionsError, type UpgradeAuth } from './auth.ts'
import type { Hub } from './hub.ts'
import { clientMessage, CLOSE, explain } from './protocol.ts'
import type { TicketStore } from '../auth/tickets.ts'

interface Bucket {
  tokens: number
  at: number
  strikes: number
}

export function wsRoutes(deps: AppDeps, hub: Hub, tickets: TicketStore) {
  const { ws: limits } = deps.config
  const buckets = new WeakMap<object, Bucket>()

  /** Token bucket per connection: `messagesPerSecond`, bursts of twice that. */
  const allow = (raw: object): 'ok' | 'limited' | 'abusive' => {
    const now = performance.now()
    let b = buckets.get(raw)
    if (!b) buckets.set(raw, (b = { tokens: limits.messagesPerSecond * 2, at: now, strikes: 0 }))
    b.tokens = Math.min(limits.messagesPerSecond * 2, b.tokens + ((now - b.at) / 1000) * limits.messagesPerSecond)
    b.at = now
    if (b.tokens >= 1) {
      b.tokens -= 1
      return 'ok'
    }
    return ++b.strikes > limits.messagesPerSecond * 2 ? 'abusive' : 'limited'
  }

  return new Elysia()
    .post(
      '/api/ws/ticket',
      async ({ request }) => {
        await requireUser(deps, request)
        const ticket = await tickets.issue(bearerToken(request)!, limits.ticketTtlMs)
        return ok({ ticket, expiresIn: Math.round(limits.ticketTtlMs / 1000) })
      },
      {
        response: { 200: Envelope.data(t.Object({ ticket: t.String(), expiresIn: t.Integer() })), ...errors(401) },
        detail: { summary: 'A single-use ticket for a browser WebSocket upgrade (`/ws?ticket=…`)', tags: ['Live'], security: bearer },
      },
    )
    .ws('/ws', {
      async upgrade(ctx) {
        const auth = await authenticateUpgrade(deps, tickets, ctx.request)
        if (hub.countFor(auth.principal.userId) >= limits.maxConnectionsPerUser) throw new TooManyConnectionsError(limits.maxConnectionsPerUser)
        if (auth.protocol) (ctx.set.headers as Record<string, string>)['sec-websocket-protocol'] = auth.protocol
        ;(ctx as unknown as { wsAuth: UpgradeAuth }).wsAuth = auth
      },
      open(ws) {
        const { wsAuth } = ws.data as unknown as { wsAuth: UpgradeAuth }
        hub.open(ws.raw as ServerWebSocket<unknown>, wsAuth.principal)
      },
      async message(ws, message) {
        const raw = ws.raw as ServerWebSocket<unknown>
        const verdict = allow(raw)
        if (verdict === 'abusive') return raw.close(CLOSE.policy, 'message rate limit exceeded')
        if (verdict === 'limited') return raw.send(JSON.stringify({ op: 'error', code: 'rate_limited', message: `At most ${limits.messagesPerSecond} messages per second` }))
        let msg: unknown = message
        if (typeof msg === 'string') {
          try {
            msg = JSON.parse(msg)
          } catch {
            return raw.send(JSON.stringify({ op: 'error', code: 'bad_message', message: 'Frames must be JSON objects' }))
          }
        }
        if (!clientMessage.Check(msg)) {
          return raw.send(JSON.stringify({ op: 'error', code: 'bad_message', message: explain(msg) }))
        }
        try {
          switch (msg.op) {
            case 'subscribe':
              return await hub.subscribe(raw, msg.topic, msg.since, msg.id)
            case 'unsubscribe':
              hub.unsubscribe(raw, msg.topic)
              return raw.send(JSON.stringify({ op: 'ack', for: 'unsubscribe', id: msg.id, topic: msg.topic }))
            case 'ping':
              return raw.send(JSON.stringify({ op: 'pong', id: msg.id }))
            default: {
              const never: never = msg
              return never
            }
          }
        } catch (err) {
          deps.logger.error({ err }, 'websocket message failed')
          raw.send(JSON.stringify({ op: 'error', code: 'internal', message: 'Internal error' }))
        }
      },
      close(ws) {
        hub.close(ws.raw as ServerWebSocket<unknown>)
      },
    })
}
