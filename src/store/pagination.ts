/**
 * Keyset (cursor) pagination on (created_at, id): stable under concurrent inserts and as
 * fast on page 1,000 as on page 1. The cursor is opaque to clients (base64url JSON).
 */
import { isUuid } from '../core/ids.ts'
import { ValidationError } from '../core/errors.ts'

export interface Cursor {
  /**
   * created_at as PostgreSQL prints it (microsecond precision; a JS Date would round to ms).
   * Compare with `${c.t}::text::timestamptz`: postgres.js turns a parameter it knows to be a
   * timestamptz into a JS Date first, losing the microseconds.
   */
  t: string
  id: string
}

export interface Page<T> {
  items: T[]
  nextCursor: string | null
}

function encodeCursor(c: Cursor): string {
  return Buffer.from(JSON.stringify(c)).toString('base64url')
}

export function decodeCursor(text: string | undefined): Cursor | undefined {
  if (text === undefined || text === '') return undefined
  try {
    const c = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as Cursor
    if (typeof c.t === 'string' && typeof c.id === 'string' && /^\d{4}-\d\d-\d\d[ T][\d:.]+([+-]\d\d(:?\d\d)?|Z)$/.test(c.t) && isUuid(c.id)) return c
  } catch {
    // fall through to the error below
  }
  throw new ValidationError('Validation failed', [{ field: 'cursor', message: 'Invalid cursor' }])
}

/**
 * Given `limit + 1` rows ordered by (created_at, id), each selected with
 * `created_at::text as "cursorAt"`, cut the page and make the next cursor.
 */
export function toPage<T extends { cursorAt: string; id: string }>(rows: T[], limit: number): Page<Omit<T, 'cursorAt'>> {
  const items = rows.slice(0, limit)
  const last = items[items.length - 1]
  return {
    items,
    nextCursor: rows.length > limit && last ? encodeCursor({ t: last.cursorAt, id: last.id }) : null,
  }
}
