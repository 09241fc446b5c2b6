/**
 * The audit log's hash chain: what an event is, its canonical form, and its hash.
 *
 * hash(n) = SHA-256( hash(n-1) ‖ canonical(n) ), hex; hash(0) is 64 zeros. canonical(n) is
 * the JSON text of one array, in this order:
 *
 *   [1, seq, at, actorId, actorEmail, orgId, action, targetType, targetId, outcome, status,
 *    ip, userAgent, requestId, detail]
 *
 * `1` is the format's version; `at` is ISO 8601 in UTC with milliseconds; absent values are
 * null; `detail` is an object whose keys are sorted. Anyone holding an export (ndjson) can
 * recompute every hash with these few lines, without the server.
 *
 * Values are made storable before they are hashed (`clean`): PostgreSQL text holds no NUL and
 * no unpaired surrogate, and long values are cut, so what is stored is exactly what was hashed.
 */

export type AuditOutcome = 'success' | 'denied' | 'failed'

/** A few typed facts about an event (a role change's from/to, a throttle rule). Never a request body. */
type AuditDetail = Record<string, string | number | boolean | null>

/** An event as a writer gives it (the recorder fills the request's context and the time). */
export interface AuditEvent {
  /** Its id (default: a random one); a request's pending events give it theirs (./audit.ts). */
  id?: string
  action: string
  outcome: AuditOutcome
  /** When it happened (default: now). */
  at?: Date
  actorId?: string | null
  /** The actor's e-mail at the time (default: looked up from actorId). */
  actorEmail?: string | null
  orgId?: string | null
  targetType?: string | null
  targetId?: string | null
  /** The HTTP status the request is answered with. */
  status?: number | null
  ip?: string | null
  userAgent?: string | null
  requestId?: string | null
  detail?: AuditDetail | null
}

/** An event's hashed content: every field of the row except its id and hashes (an id given is carried along). */
export interface AuditContent {
  id?: string
  seq: number
  at: Date
  actorId: string | null
  actorEmail: string | null
  orgId: string | null
  action: string
  targetType: string | null
  targetId: string | null
  outcome: AuditOutcome
  status: number | null
  ip: string | null
  userAgent: string | null
  requestId: string | null
  detail: AuditDetail | null
}

/** A stored event. */
export interface AuditRow extends AuditContent {
  id: string
  prevHash: string
  hash: string
}

/** Where the chain stands: the last event's seq and hash (0 and GENESIS before the first). */
export interface ChainHead {
  seq: number
  hash: string
}

export const GENESIS = '0'.repeat(64)

/** Longest stored length of each text field (characters). */
const LIMITS = { actorEmail: 254, action: 64, targetType: 32, targetId: 128, ip: 64, userAgent: 512, requestId: 128, detailValue: 256 } as const

const ACTION = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/

/** Is `name` an action name: dotted lower-case words, e.g. `model.deploy`, `auth.login_failed`. */
export function isAction(name: string): boolean {
  return name.length <= LIMITS.action && ACTION.test(name)
}

/** A string as PostgreSQL stores it: well-formed UTF-16 without NUL, at most `max` characters. */
function text(value: string | null | undefined, max: number): string | null {
  if (value === undefined || value === null) return null
  let s = value.toWellFormed()
  if (s.includes('\0')) s = s.replaceAll('\0', '')
  return s.length > max ? s.slice(0, max).toWellFormed() : s
}

/** The event's content as it will be stored and hashed (its seq is given by `link`). */
export function clean(e: AuditEvent): AuditContent {
  if (!isAction(e.action)) throw new Error(`audit: ${JSON.stringify(e.action)} is not an action name (e.g. model.deploy)`)
  let detail: AuditDetail | null = null
  if (e.detail) {
    detail = {}
    for (const key of Object.keys(e.detail).sort()) {
      const v = e.detail[key]
      if (v === undefined) continue
      detail[text(key, 64)!] = typeof v === 'string' ? text(v, LIMITS.detailValue) : typeof v === 'number' && !Number.isFinite(v) ? null : v
    }
  }
  return {
    ...(e.id ? { id: e.id } : {}),
    seq: 0, // given by `link`
    // Milliseconds: what a JS Date holds and what comes back from timestamptz, so the stored
    // time hashes as it was hashed.
    at: new Date(Math.floor((e.at ?? new Date()).getTime())),
    actorId: e.actorId ?? null,
    actorEmail: text(e.actorEmail?.toLowerCase(), LIMITS.actorEmail),
    orgId: e.orgId ?? null,
    action: e.action,
    targetType: text(e.targetType, LIMITS.targetType),
    targetId: text(e.targetId, LIMITS.targetId),
    outcome: e.outcome,
    status: e.status ?? null,
    ip: text(e.ip, LIMITS.ip),
    userAgent: text(e.userAgent, LIMITS.userAgent),
    requestId: text(e.requestId, LIMITS.requestId),
    detail,
  }
}

/** The canonical text of an event's content (see the top of this file). */
export function canonical(c: AuditContent): string {
  let detail: AuditDetail | null = null
  if (c.detail) {
    // jsonb gives keys back in its own order: sort them again.
    detail = {}
    for (const key of Object.keys(c.detail).sort()) detail[key] = c.detail[key]!
  }
  return JSON.stringify([
    1,
    c.seq,
    c.at.toISOString(),
    c.actorId,
    c.actorEmail,
    c.orgId,
    c.action,
    c.targetType,
    c.targetId,
    c.outcome,
    c.status,
    c.ip,
    c.userAgent,
    c.requestId,
    detail,
  ])
}

/** SHA-256 (hex) of the previous hash and the event's canonical content. */
export function chainHash(prevHash: string, c: AuditContent): string {
  return new Bun.CryptoHasher('sha256').update(prevHash).update(canonical(c)).digest('hex')
}

/** Chain `events` (from `clean`, made into rows in place) after `head`: their rows and the head after them. */
export function link(head: ChainHead, events: readonly AuditContent[]): { rows: AuditRow[]; head: ChainHead } {
  const rows: AuditRow[] = []
  let prev = head.hash
  let seq = head.seq
  for (const e of events) {
    // Made into its row in place: `clean` gave each event its own content object.
    const row = e as AuditRow
    row.seq = ++seq
    row.hash = chainHash(prev, row)
    row.id ??= crypto.randomUUID()
    row.prevHash = prev
    rows.push(row)
    prev = row.hash
  }
  return { rows, head: { seq, hash: prev } }
}
