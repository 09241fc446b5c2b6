/** /api/users: the admin's list, and self-or-admin reads and edits. */
import { Elysia, t } from 'elysia'
import { ForbiddenError, NotFoundError, ValidationError } from '../core/errors.ts'
import * as users from '../store/users.ts'
import { AuthModel } from './auth.ts'
import type { CachedRead } from './native.ts'
import { authorize, bearer, documented, Envelope, errors, ok, requireAction, type HttpDeps } from './context.ts'

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
      isActive: t.Optional(t.Boolean()),
    },
    // Unknown fields (id, email, passwordHash, …) are a 400, never silently applied.
    { additionalProperties: false, minProperties: 1, error: 'Provide at least one of firstName, lastName, organization, role, isActive' },
  )
  export const listQuery = t.Object({ ...Envelope.pageQuery, search: t.Optional(t.String({ maxLength: 100 })), role: t.Optional(role) })
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

const idParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid user id' }) })

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
        detail: { summary: 'List users (admin; search, cursor pagination; cached, ETag)', tags: ['Users'], security: bearer, responses: documented({ 200: Envelope.list(UserModel.user), ...errors(400, 401, 403) }) },
      },
    )
    .get(
      '/:id',
      async ({ request, params }) => {
        // A stranger learns nothing, not even that the id exists.
        const { obj: u } = await user(request, params.id, 'read')
        return ok(serializeUser(u))
      },
      { params: idParams, response: { 200: Envelope.data(UserModel.user), ...errors(400, 401, 404) }, detail: { summary: 'A user (self or admin)', tags: ['Users'], security: bearer } },
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
        detail: { summary: 'Update a user (self: names and organization; admin: also role and isActive)', tags: ['Users'], security: bearer },
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
      { params: idParams, response: { 200: Envelope.data(UserModel.user), ...errors(400, 401, 403, 404) }, detail: { summary: 'Deactivate a user and revoke their sessions (admin)', tags: ['Users'], security: bearer } },
    )
}
