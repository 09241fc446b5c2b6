/** Who may read, change, delete or move a datakit over HTTP, and the cache scopes its writes drop. */
import { ConflictError, ForbiddenError, NotFoundError } from '../core/errors.ts'
import type { Action } from '../auth/policy.ts'
import type { Principal } from '../auth/principal.ts'
import { DATAKIT_KIND } from '../actors/datakit.ts'
import * as store from '../store/datakits.ts'
import { authorize, requireOrgRole, type HttpDeps } from './context.ts'
import type { CachedRead } from './native.ts'

/**
 * GET /api/datakits: your datakits (admins: everyone's), cached per viewer and query (served
 * from Bun's router on a hit). An organisation's list (`?orgId=`) is never stored: it is asked
 * of the org's membership every time, and other members' writes do not reach these scopes.
 */
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
  const access = async (request: Request, id: string, action: Action): Promise<{ me: Principal; d: store.DatakitRow }> => {
    const { me, obj } = await authorize(deps, request, { resource: 'datakit', action, label: 'DataKit', load: () => store.findDatakit(sql, id) })
    return { me, d: obj }
  }

  /** The datakit if the caller may read it (owner, or admin), else 404. */
  const readable = (request: Request, id: string) => access(request, id, 'read')

  /** Like readable, for changes: a VIEWER is refused first (whatever the id). */
  const writable = (request: Request, id: string) => access(request, id, 'change')

  /** For a delete: an org's ADMINs delete any of its datakits, a MEMBER only their own (403 otherwise). */
  const deletable = (request: Request, id: string) => access(request, id, 'delete')

  /**
   * Move a datakit into org `orgId` (null: make it personal again): by its owner (or a platform
   * admin), who must be ADMIN or above in the org it goes to and in the org it leaves. Someone
   * who cannot see it gets 404; who can but may not move it, 403; an org that is not theirs, 404.
   */
  const move = async (request: Request, id: string, orgId: string | null): Promise<store.DatakitRow> => {
    const { me, d } = await access(request, id, 'change')
    if (d.orgId === orgId) return d
    if (d.ownerId !== me.userId && me.role !== 'ADMIN') throw new ForbiddenError('Only the owner of a datakit moves it between organisations')
    if (d.orgId) await requireOrgRole(deps, me, d.orgId, 'ADMIN')
    if (orgId) await requireOrgRole(deps, me, orgId, 'ADMIN')
    await deps.actors.ask(DATAKIT_KIND, d.id, { type: 'move', orgId })
    // Who may watch it changed: subscriptions are checked again, on every node.
    await deps.auth.registry.invalidateAccess()
    return { ...d, orgId }
  }

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

  return { readable, writable, deletable, move, invalidate, readyVersion }
}
