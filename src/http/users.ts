/** /api/users: the admin's list, and self-or-admin reads and edits. */
import { Elysia, t } from 'elysia'
import { ForbiddenError, NotFoundError, ValidationError } from '../core/errors.ts'
import * as users from '../store/users.ts'
import { AuthModel, NOT_MODIFIED } from './auth.ts'
import type { CachedRead } from './native.ts'
import { authorize, documented, Envelope, errors, ok, requireAction, type HttpDeps } from './context.ts'
import { access } from '../auth/route-access.ts'

namespace UserModel {
  export const role = t.Union([t.Literal('ADMIN'), t.Literal('USER'), t.Literal('VIEWER')])
  export const user = AuthModel.me
  /** Everything a PATCH may carry. Which fields a caller may change is checked in the handler. */
  export const patch = t.Object(
    {
      firstName: t.Optional(t.String({ minLength: 1, maxLength: 100, error: 'First name must be 1–100 characters' })),
      lastName: t.Optional(t.String({ minLength: 1, maxLength: 100, error: 'Last name must be 1–100 characters' })),
      organization: t.Optional(t.Union([t.String({ maxLength: 200 }), t.Null()], { error: 'Organization must be at most 200 characters' })),
      role: t.Optional(role),
      isActive: t.Optional(t.Boolean({ description: 'Admins only: false deactivates the account and revokes its sessions' })),
    },
    // Unknown fields (id, email, passwordHash, …) are a 400, never silently applied.
    {
      additionalProperties: false,
      minProperties: 1,
      error: 'Provide at least one of firstName, lastName, organization, role, isActive',
      examples: [{ firstName: 'Jane', lastName: 'Doe', organization: 'Acme Analytics' }],
    },
  )
  export const listQuery = t.Object({
    ...Envelope.pageQuery,
    search: t.Optional(t.String({ maxLength: 100, description: 'Part of the email, first or last name or organization (any case)', examples: ['doe'] })),
    role: t.Optional(role),
  })
}

function serializeUser(u: users.UserRow) {
  return {
    id: u.id,
    email: u.email,
    firstName: u.firstName,
    lastName: u.lastName,
    role: u.role,
    organization: u.organization,
    isActive: u.isActive,
    lastLoginAt: u.lastLoginAt ? u.lastLoginAt.toISOString() : null,
    createdAt: u.createdAt.toISOString(),
    updatedAt: u.updatedAt.toISOString(),
  }
}

const idParams = t.Object({ id: t.String({ format: 'uuid', description: 'The user id', error: 'Invalid user id' }) })

/** GET /api/users: the admin's list, cached per admin and query (served from Bun's router on a hit). */
export const usersRead: CachedRead = { path: '/api/users', scope: (p) => (p.role === 'ADMIN' ? 'users' : null) }

export function userRoutes(deps: HttpDeps) {
  /** The caller and the user record, as the access policy allows (self or admin; 404 otherwise). */
  const user = (request: Request, id: string, action: 'read' | 'change') =>
    authorize(deps, request, { resource: 'user', action, label: 'User', load: () => users.findById(deps.sql, id), owner: (u) => u.id })
  return new Elysia({ prefix: '/api/users' })
    .get(
      '/',
      async ({ request, query, set }) => {
        const me = await requireAction(deps, request, 'platform', 'read')
        return deps.cache.serve(request, set.headers as Record<string, string>, { scope: usersRead.scope(me, {})!, viewer: me.userId, route: usersRead.path }, async () => {
          const limit = query.limit ?? 20
          const page = await users.list(deps.sql, { limit, cursor: query.cursor, search: query.search, role: query.role })
          return ok(page.items.map(serializeUser), { nextCursor: page.nextCursor, limit })
        })
      },
      {
        query: UserModel.listQuery,
        detail: {
          summary: 'List users',
          description:
            'Every account, oldest first, a page at a time (`limit`, `cursor`), deactivated ones included. ' +
            '`search` keeps the users whose email, first or last name or organization contains it (any case); `role` keeps one role. ' +
            'Served from a response cache per admin and query with an `ETag` (`If-None-Match` → 304) and `X-Cache: HIT|MISS`; any change to an account drops it before it answers. ' +
            '400 for a bad `limit`, `cursor`, `search` or `role`.',
          tags: ['Users'],
          ...access.admin('read'),
          responses: { ...documented({ 200: Envelope.list(UserModel.user), ...errors(400, 401, 403) }), 304: NOT_MODIFIED },
        },
      },
    )
    .get(
      '/:id',
      async ({ request, params }) => {
        // A stranger learns nothing, not even that the id exists.
        const { obj: u } = await user(request, params.id, 'read')
        return ok(serializeUser(u))
      },
      {
        params: idParams,
        response: { 200: Envelope.data(UserModel.user), ...errors(400, 401, 404) },
        detail: {
          summary: 'Get a user',
          description: 'The account\'s record: names, role, organization, whether it is active, the last login and when it was created and changed. 400 when the id is not a UUID, 404 when there is no such user.',
          tags: ['Users'],
          ...access.object('user', 'read'),
        },
      },
    )
    .patch(
      '/:id',
      async ({ request, params, body }) => {
        const { me } = await user(request, params.id, 'change')
        const isAdmin = me.role === 'ADMIN'
        if (!isAdmin && (body.role !== undefined || body.isActive !== undefined)) {
          throw new ForbiddenError('Only an admin can change roles or deactivate accounts')
        }
        if (isAdmin && me.userId === params.id && (body.role !== undefined && body.role !== 'ADMIN' || body.isActive === false)) {
          throw new ValidationError('Validation failed', [{ field: body.role !== undefined ? 'role' : 'isActive', message: 'Admins cannot demote or deactivate themselves' }])
        }
        const u = await deps.auth.updateUser(params.id, body)
        if (!u) throw new NotFoundError('User')
        await deps.cache.invalidate(`user:${u.id}`, 'users')
        return ok(serializeUser(u))
      },
      {
        params: idParams,
        body: UserModel.patch,
        response: { 200: Envelope.data(UserModel.user), ...errors(400, 401, 403, 404) },
        detail: {
          summary: 'Update a user',
          description:
            'Changes the fields given (at least one) and answers the updated record. ' +
            'Everyone may change their own `firstName`, `lastName` and `organization` (null clears it), VIEWERs included; only an admin may change `role` and `isActive` (403 otherwise). ' +
            'Deactivating an account (`isActive: false`) revokes all its sessions at once, on every node, closing their WebSocket connections; a new role applies from the user\'s next request. ' +
            '400 when an admin would demote or deactivate themselves, and for unknown fields (`email`, `id`, …: never applied); 404 when there is no such user.',
          tags: ['Users'],
          ...access.object('user', 'change'),
        },
      },
    )
    .delete(
      '/:id',
      async ({ request, params }) => {
        const me = await requireAction(deps, request, 'platform', 'change')
        if (me.userId === params.id) throw new ValidationError('Validation failed', [{ field: 'id', message: 'Admins cannot deactivate themselves' }])
        const u = await deps.auth.updateUser(params.id, { isActive: false })
        if (!u) throw new NotFoundError('User')
        await deps.cache.invalidate(`user:${u.id}`, 'users')
        return ok(serializeUser(u))
      },
      {
        params: idParams,
        response: { 200: Envelope.data(UserModel.user), ...errors(400, 401, 403, 404) },
        detail: {
          summary: 'Deactivate a user',
          description:
            'Deactivates the account — it is kept, with `isActive: false`, and `PATCH` with `isActive: true` restores it — and revokes all its sessions at once, on every node, closing their WebSocket connections. ' +
            'Answers the updated record. 400 for the admin\'s own account (or an id that is not a UUID), 404 when there is no such user.',
          tags: ['Users'],
          ...access.admin('change'),
        },
      },
    )
}
