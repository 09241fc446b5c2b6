/**
 * Keyset (cursor) pagination on (created_at, id): stable under concurrent inserts and as
 * fast on page 1,000 as on page 1. The cursor is opaque to clients (base64url JSON).
 */
import { ValidationError } from '../core/errors.ts'

export interface Cursor {
  t: string // created_at, ISO
  id: string
}

export interface Page<T> {
  items: T[]
  nextCursor: string | null
}

export function encodeCursor(c: Cursor): string {
  return Buffer.from(JSON.stringify(c)).toString('base64url')
}

export function decodeCursor(text: string | undefined): Cursor | undefined {
  if (text === undefined || text === '') return undefined
  try {
    const c = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as Cursor
    if (typeof c.t === 'string' && typeof c.id === 'string' && !Number.isNaN(Date.parse(c.t))) return c
  } catch {
    // fall through to the error below
  }
  throw new ValidationError('Validation failed', [{ field: 'cursor', message: 'Invalid cursor' }])
}

/** Given `limit + 1` rows ordered by (created_at, id), cut the page and make the next cursor. */
export function toPage<T extends { createdAt: Date; id: string }>(rows: T[], limit: number): Page<T> {
  const items = rows.slice(0, limit)
  const last = items[items.length - 1]
  return {
    items,
    nextCursor: rows.length > limit && last ? encodeCursor({ t: last.createdAt.toISOString(), id: last.id }) : null,
  }
}
