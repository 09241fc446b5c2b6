/**
 * Reading the audit log: filtered pages (newest first, keyset on seq), the export's pages
 * (oldest first), and the chain's verification. Written only by ./audit.ts.
 */
import { ValidationError } from '../core/errors.ts'
import { chainHash, GENESIS, type AuditOutcome, type AuditRow, type ChainHead } from './audit-chain.ts'
import { timed, type Db, type Sql } from './db.ts'

/** What GET /api/admin/audit filters on (each given one must hold). */
export interface AuditFilter {
  actorId?: string
  /** A prefix of the action: `auth.` (every auth event), `model.deploy`. */
  action?: string
  targetType?: string
  targetId?: string
  outcome?: AuditOutcome
  orgId?: string
  /** At or after. */
  from?: Date
  /** Before. */
  to?: Date
}

const COLUMNS = (sql: Db) => sql`
  seq, id, at, actor_id as "actorId", actor_email as "actorEmail", org_id as "orgId", action, target_type as "targetType",
  target_id as "targetId", outcome, status, ip, user_agent as "userAgent", request_id as "requestId", detail,
  prev_hash as "prevHash", hash`

function where(sql: Db, f: AuditFilter) {
  const like = f.action === undefined ? undefined : f.action.replace(/[\\%_]/g, (m) => '\\' + m) + '%'
  return sql`
    ${f.actorId !== undefined ? sql`and actor_id = ${f.actorId}` : sql``}
    ${like !== undefined ? sql`and action like ${like}` : sql``}
    ${f.targetType !== undefined ? sql`and target_type = ${f.targetType}` : sql``}
    ${f.targetId !== undefined ? sql`and target_id = ${f.targetId}` : sql``}
    ${f.outcome !== undefined ? sql`and outcome = ${f.outcome}` : sql``}
    ${f.orgId !== undefined ? sql`and org_id = ${f.orgId}` : sql``}
    ${f.from !== undefined ? sql`and at >= ${f.from}` : sql``}
    ${f.to !== undefined ? sql`and at < ${f.to}` : sql``}`
}

/** The opaque cursor of the next page: the last seq shown. */
function encodeCursor(seq: number): string {
  return Buffer.from(JSON.stringify({ s: seq })).toString('base64url')
}

function decodeCursor(text: string | undefined): number | undefined {
  if (text === undefined || text === '') return undefined
  try {
    const c = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as { s?: unknown }
    if (Number.isSafeInteger(c.s) && (c.s as number) > 0) return c.s as number
  } catch {
    // the error below
  }
  throw new ValidationError('Validation failed', [{ field: 'cursor', message: 'Invalid cursor' }])
}

/** One page of events matching `f`, newest first. */
export const listEvents = timed('audit.list', async function listEvents(sql: Db, f: AuditFilter, page: { limit: number; cursor?: string }): Promise<{ items: AuditRow[]; nextCursor: string | null }> {
  const before = decodeCursor(page.cursor)
  const rows = await sql<AuditRow[]>`
    select ${COLUMNS(sql)} from audit_events
    where true ${before !== undefined ? sql`and seq < ${before}` : sql``} ${where(sql, f)}
    order by seq desc
    limit ${page.limit + 1}`
  const items = rows.slice(0, page.limit)
  return { items, nextCursor: rows.length > page.limit ? encodeCursor(items[items.length - 1]!.seq) : null }
})

/** Up to `limit` events matching `f` after seq `after`, oldest first (the export's pages). */
export const eventsAfter = timed('audit.after', async function eventsAfter(sql: Db, f: AuditFilter, after: number, limit: number): Promise<AuditRow[]> {
  return sql<AuditRow[]>`
    select ${COLUMNS(sql)} from audit_events
    where seq > ${after} ${where(sql, f)}
    order by seq
    limit ${limit}`
})

/** The first broken link of the chain. */
interface BrokenLink {
  /** The event at fault (for a missing one: the seq that should be there). */
  seq: number
  id: string | null
  reason: 'altered' | 'unlinked' | 'missing' | 'head'
  message: string
}

export interface Verification {
  valid: boolean
  /** Events whose hash was recomputed and matched, in chain order, before any break. */
  checked: number
  /** Where the walk started: the latest retention checkpoint, or the chain's beginning. */
  from: { seq: number; hash: string; checkpointAt: Date | null }
  /** The chain's head when the walk started (events appended meanwhile are not walked). */
  head: ChainHead
  broken: BrokenLink | null
}

/**
 * Walk the chain from the latest checkpoint to the head, a page at a time, recomputing each
 * hash: memory stays one page whatever the length. One read-only snapshot (REPEATABLE READ),
 * so appends and retention running meanwhile change nothing the walk sees.
 */
export async function verifyChain(sql: Sql, pageSize = 1000): Promise<Verification> {
  return sql.begin('isolation level repeatable read read only', async (tx) => {
    const [head] = await tx<ChainHead[]>`select seq, hash from audit_chain`
    const [cp] = await tx<{ seq: number; hash: string; at: Date }[]>`select seq, hash, at from audit_checkpoints order by seq desc limit 1`
    const from = cp ? { seq: cp.seq, hash: cp.hash, checkpointAt: cp.at } : { seq: 0, hash: GENESIS, checkpointAt: null }
    let prev = { seq: from.seq, hash: from.hash }
    let checked = 0
    const result = (broken: BrokenLink | null): Verification => ({ valid: broken === null, checked, from, head: head!, broken })
    for (;;) {
      const rows = await tx<AuditRow[]>`select ${COLUMNS(tx)} from audit_events where seq > ${prev.seq} and seq <= ${head!.seq} order by seq limit ${pageSize}`
      for (const row of rows) {
        const expected = prev.seq + 1
        if (row.seq !== expected) {
          return result({ seq: expected, id: null, reason: 'missing', message: `Event ${expected} is missing: the chain goes from event ${prev.seq} to event ${row.seq}` })
        }
        if (row.prevHash !== prev.hash) {
          return result({
            seq: row.seq,
            id: row.id,
            reason: 'unlinked',
            message: `Event ${row.seq} does not follow ${prev.seq === from.seq && cp ? `the retention checkpoint (event ${prev.seq})` : `event ${prev.seq}`}: its prev_hash is not that event's hash (an event before it was changed and re-hashed, or replaced)`,
          })
        }
        if (chainHash(prev.hash, row) !== row.hash) {
          return result({ seq: row.seq, id: row.id, reason: 'altered', message: `Event ${row.seq} was altered: its content does not match its hash` })
        }
        prev = { seq: row.seq, hash: row.hash }
        checked++
      }
      if (rows.length < pageSize) break
    }
    if (prev.seq !== head!.seq) {
      return result({ seq: prev.seq + 1, id: null, reason: 'missing', message: `Events ${prev.seq + 1} to ${head!.seq} are missing: the chain's head is event ${head!.seq}` })
    }
    if (prev.hash !== head!.hash) {
      return result({ seq: head!.seq, id: null, reason: 'head', message: `The chain's head does not match event ${head!.seq}: the head or the last event was changed` })
    }
    const [beyond] = await tx<{ seq: number; id: string }[]>`select seq, id from audit_events where seq > ${head!.seq} order by seq limit 1`
    if (beyond) {
      return result({ seq: beyond.seq, id: beyond.id, reason: 'head', message: `Event ${beyond.seq} lies beyond the chain's head (event ${head!.seq}): it was inserted outside the audit log` })
    }
    return result(null)
  })
}
