/** WS /ws: live events (the protocol is in protocol.ts; documented at /asyncapi.json). Tickets are issued over HTTP (src/http/live.ts). */
import { Elysia } from 'elysia'
import type { ServerWebSocket } from 'bun'
import type { Config } from '../config.ts'
import { ServiceUnavailableError } from '../core/errors.ts'
import type { Logger } from '../core/logger.ts'
import { authenticateUpgrade, TooManyConnectionsError, type UpgradeAuth, type UpgradeGate } from './auth.ts'
import type { Hub } from './hub.ts'
import { clientMessage, CLOSE, explain, LIVE_ROUTE, reply } from './protocol.ts'

interface Bucket {
  tokens: number
  at: number
  strikes: number
}

export interface LiveRoutesOptions {
  hub: Hub
  gate: UpgradeGate
  limits: Config['ws']
  logger: Logger
}

export function liveRoutes({ hub, gate, limits, logger }: LiveRoutesOptions) {
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

  async function handle(raw: ServerWebSocket<unknown>, message: unknown): Promise<void> {
    const verdict = allow(raw)
    if (verdict === 'abusive') {
      raw.close(CLOSE.policy, 'message rate limit exceeded')
      return
    }
    if (verdict === 'limited') {
      reply(raw, { op: 'error', code: 'rate_limited', message: `At most ${limits.messagesPerSecond} messages per second` })
      return
    }
    let msg: unknown = message
    if (typeof msg === 'string') {
      try {
        msg = JSON.parse(msg)
      } catch {
        reply(raw, { op: 'error', code: 'bad_message', message: 'Frames must be JSON objects' })
        return
      }
    }
    if (!clientMessage.Check(msg)) {
      reply(raw, { op: 'error', code: 'bad_message', message: explain(msg) })
      return
    }
    switch (msg.op) {
      case 'subscribe':
        await hub.subscribe(raw, msg.topic, msg.since, msg.id)
        return
      case 'unsubscribe':
        hub.unsubscribe(raw, msg.topic)
        reply(raw, { op: 'ack', for: 'unsubscribe', id: msg.id, topic: msg.topic })
        return
      case 'ping':
        reply(raw, { op: 'pong', id: msg.id })
        return
      default: {
        const never: never = msg
        return never
      }
    }
  }

  return new Elysia()
    .ws('/ws', {
      detail: LIVE_ROUTE,
      async upgrade(ctx) {
        // A stopping node takes no new sockets: 503 sends the client (or the balancer's retry)
        // to another node before anything is authenticated.
        if (!hub.accepting) throw new ServiceUnavailableError('This server is stopping; connect again (to another node)')
        const auth = await authenticateUpgrade(gate, ctx.request)
        if (hub.countFor(auth.principal.userId) >= limits.maxConnectionsPerUser) throw new TooManyConnectionsError(limits.maxConnectionsPerUser)
        if (auth.protocol) (ctx.set.headers as Record<string, string>)['sec-websocket-protocol'] = auth.protocol
        ;(ctx as unknown as { wsAuth: UpgradeAuth }).wsAuth = auth
      },
      open(ws): void {
        const { wsAuth } = ws.data as unknown as { wsAuth: UpgradeAuth }
        hub.open(ws.raw as ServerWebSocket<unknown>, wsAuth.principal)
      },
      // No handler here returns a value: Elysia sends whatever a handler returns as a frame
      // (createHandleWSResponse in elysia/dist/ws), and `ServerWebSocket.send` returns a
      // number (bytes sent, or -1/0), so `return raw.send(…)` put stray frames like `23` on
      // the wire. Replies go through `reply`, typed as protocol messages.
      async message(ws, message): Promise<void> {
        const raw = ws.raw as ServerWebSocket<unknown>
        try {
          await handle(raw, message)
        } catch (err) {
          logger.error({ err }, 'websocket message failed')
          reply(raw, { op: 'error', code: 'internal', message: 'Internal error' })
        }
      },
      close(ws): void {
        hub.close(ws.raw as ServerWebSocket<unknown>)
      },
    })
}
