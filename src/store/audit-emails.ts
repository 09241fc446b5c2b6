/**
 * The actors' e-mails an audit event records beside their ids (AuditLog, ./audit.ts): looked up
 * by id, one query for those not cached, each cached for a minute (at most 10,000, then the
 * cache starts over).
 */
import type { AuditEvent } from './audit-chain.ts'
import { emailsOf } from './audit-rows.ts'
import type { Db } from './db.ts'

const EMAIL_TTL_MS = 60_000
const MAX_CACHED = 10_000

export class ActorEmails {
  readonly #cache = new Map<string, { email: string | null; until: number }>()

  /** Fill in the e-mail of each event's actor that has none yet. */
  async fill(sql: Db, events: AuditEvent[]): Promise<void> {
    const now = Date.now()
    const missing = new Set<string>()
    for (const e of events) {
      if (e.actorEmail !== undefined || !e.actorId) continue
      const hit = this.#cache.get(e.actorId)
      if (hit && hit.until > now) e.actorEmail = hit.email
      else missing.add(e.actorId)
    }
    if (missing.size === 0) return
    if (this.#cache.size > MAX_CACHED) this.#cache.clear()
    const found = new Map((await emailsOf(sql, [...missing])).map((r) => [r.id, r.email]))
    for (const id of missing) this.#cache.set(id, { email: found.get(id) ?? null, until: now + EMAIL_TTL_MS })
    for (const e of events) if (e.actorEmail === undefined && e.actorId) e.actorEmail = found.get(e.actorId) ?? null
  }
}
