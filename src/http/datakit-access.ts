/** Who may read or change a datakit over HTTP, and the cache scopes its writes drop. */
import { ConflictError, NotFoundError } from '../core/errors.ts'
import type { Principal } from '../auth/principal.ts'
import * as store from '../store/datakits.ts'
import { authorize, type HttpDeps } from './context.ts'
import type { CachedRead } from './native.ts'

/** GET /api/datakits: your datakits (admins: everyone's), cached per viewer and query (served from Bun's router on a hit). */
export const datakitsRead: CachedRead = { path: '/api/datakits', scope: (p) => (p.role === 'ADMIN' ? 'datakits' : `datakits:${p.userId}`) }

/** A version that cannot be read yet (or ever): 409 with what to do about it. */
export class VersionNotReadyError extends ConflictError {
  constructor(v: store.VersionRow) {
    super(
      v.status === 'PROCESSING'
        ? `Version ${v.version} is still being processed; try again when its status is READY`
        : `Version ${v.version} could not be processed: ${v.error ?? 'unknown error'}`,
      [{ field: 'status', message: v.status }],
    )
  }
}

export function datakitAccess(deps: HttpDeps) {
  const { sql } = deps

  /** The caller and the datakit, as the access policy allows `action` (401/403/404). */
  const access = async (request: Request, id: string, action: 'read' | 'change'): Promise<{ me: Principal; d: store.DatakitRow }> => {
    const { me, obj } = await authorize(deps, request, { resource: 'datakit', action, label: 'DataKit', load: () => store.findDatakit(sql, id) })
    return { me, d: obj }
  }

  /** The datakit if the caller may read it (owner, or admin), else 404. */
  const readable = (request: Request, id: string) => access(request, id, 'read')

  /** Like readable, for changes: a VIEWER is refused first (whatever the id). */
  const writable = (request: Request, id: string) => access(request, id, 'change')

  /** Drop the cached reads a change of `d` makes stale (before answering the write). */
  const invalidate = (d: { id: string; ownerId: string }) => deps.cache.invalidate(`datakit:${d.id}`, `datakits:${d.ownerId}`, 'datakits')

  /** The version to read data from: the one asked for, or the newest READY one. */
  const readyVersion = async (d: store.DatakitRow, requested: number | undefined): Promise<store.VersionWithProfile> => {
    if (requested !== undefined) {
      const v = await store.findVersion(sql, d.id, requested)
      if (!v) throw new NotFoundError('DataKit version')
      if (v.status !== 'READY') throw new VersionNotReadyError(v)
      return v
    }
    const ready = await store.latestReadyVersion(sql, d.id)
    if (ready) return ready
    throw new VersionNotReadyError((await store.findVersion(sql, d.id, d.currentVersion))!)
  }

  return { readable, writable, invalidate, readyVersion }
}
