/**
 * Short-lived single-use tickets for browsers, which cannot set an Authorization header on a
 * WebSocket: POST /api/ws/ticket (authenticated) → `?ticket=…` on the upgrade URL. A ticket
 * stands for the session that asked for it, works once, and expires in `ttlMs`. In a cluster
 * the ticket lives in Redis, so the upgrade may land on any node (GETDEL makes "once" atomic).
 */
import type { Redis } from '../store/redis.ts'

export interface TicketStore {
  issue(sessionToken: string, ttlMs: number): Promise<string>
  /** The access token the ticket stands for, once; undefined when unknown, used or expired. */
  redeem(ticket: string): Promise<string | undefined>
}

const newTicket = () => Buffer.from(crypto.getRandomValues(new Uint8Array(24))).toString('base64url')

export class MemoryTicketStore implements TicketStore {
  private readonly tickets = new Map<string, { token: string; expiresAt: number }>()

  async issue(token: string, ttlMs: number) {
    const now = Date.now()
    if (this.tickets.size > 10_000) for (const [k, v] of this.tickets) if (v.expiresAt <= now) this.tickets.delete(k)
    const t = newTicket()
    this.tickets.set(t, { token, expiresAt: now + ttlMs })
    return t
  }

  async redeem(ticket: string) {
    const v = this.tickets.get(ticket)
    if (!v) return undefined
    this.tickets.delete(ticket)
    return v.expiresAt > Date.now() ? v.token : undefined
  }
}

export class RedisTicketStore implements TicketStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix = 'quadrax:wsticket:',
  ) {}

  async issue(token: string, ttlMs: number) {
    const t = newTicket()
    await this.redis.set(this.prefix + t, token, 'PX', ttlMs)
    return t
  }

  async redeem(ticket: string) {
    if (!/^[\w-]{20,64}$/.test(ticket)) return undefined
    return (await this.redis.getdel(this.prefix + ticket)) ?? undefined
  }
}
