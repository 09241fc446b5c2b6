/** /api/auth: register, login, refresh, logout, me, change-password. */
import { Elysia, t } from 'elysia'
import { bearer, documented, Envelope, errors, ok, requireUser, type HttpDeps } from './context.ts'
import { authRateLimit } from './plugins/rate-limit.ts'
import * as users from '../store/users.ts'
import { NotFoundError } from '../core/errors.ts'
import { LoginThrottledError } from '../auth/login-throttle.ts'
import type { CachedRead } from './native.ts'

export namespace AuthModel {
  const email = t.String({ format: 'email', maxLength: 254, error: 'Invalid email format' })
  const name = (label: string) => t.String({ minLength: 1, maxLength: 100, error: `${label} is required (1–100 characters)` })
  export const register = t.Object(
    {
      email,
      password: t.String({ minLength: 1, maxLength: 128, error: 'Password is required' }),
      firstName: name('First name'),
      lastName: name('Last name'),
      organization: t.Optional(t.String({ maxLength: 200, error: 'Organization must be at most 200 characters' })),
    },
    { additionalProperties: false },
  )
  export const login = t.Object({ email, password: t.String({ minLength: 1, maxLength: 128, error: 'Password is required' }) }, { additionalProperties: false })
  export const refresh = t.Object({ refreshToken: t.String({ minLength: 1, maxLength: 4096, error: 'Refresh token is required' }) }, { additionalProperties: false })
  export const changePassword = t.Object(
    {
      currentPassword: t.String({ minLength: 1, maxLength: 128, error: 'Current password is required' }),
      newPassword: t.String({ minLength: 1, maxLength: 128, error: 'New password is required' }),
    },
    { additionalProperties: false },
  )
  export const user = t.Object({ id: t.String({ format: 'uuid' }), email: t.String(), firstName: t.String(), lastName: t.String(), role: t.Union([t.Literal('ADMIN'), t.Literal('USER'), t.Literal('VIEWER')]) })
  export const me = t.Composite([
    user,
    t.Object({ organization: t.Union([t.String(), t.Null()]), isActive: t.Boolean(), lastLoginAt: t.Union([t.String(), t.Null()]), createdAt: t.String(), updatedAt: t.String() }),
  ])
  export const tokens = t.Object({ token: t.String(), refreshToken: t.String(), expiresIn: t.Integer(), refreshExpiresIn: t.Integer(), tokenType: t.Literal('Bearer') })
  export const session = t.Composite([t.Object({ user }), tokens])
}

/** GET /api/auth/me: the caller's own record, cached per user (served from Bun's router on a hit). */
export const meRead: CachedRead = { path: '/api/auth/me', scope: (p) => `user:${p.userId}` }

export function authRoutes(deps: HttpDeps) {
  const meta = (request: Request) => ({ ip: deps.frame.clientIp(request), userAgent: request.headers.get('user-agent') })
  return new Elysia({ prefix: '/api/auth', tags: ['Auth'] } as ConstructorParameters<typeof Elysia>[0])
    .post(
      '/register',
      async ({ body, request, set }) => {
        await authRateLimit(deps, 'register', request, set)
        const { email, password, firstName, lastName, organization } = body
        const r = await deps.auth.register({ email, password, firstName, lastName, organization }, meta(request))
        await deps.cache.invalidate('users')
        set.status = 201
        return ok(r)
      },
      { body: AuthModel.register, response: { 201: Envelope.data(AuthModel.session), ...errors(400, 409, 429) }, detail: { summary: 'Create an account', tags: ['Auth'] } },
    )
    .post(
      '/login',
      async ({ body, request, set }) => {
        await authRateLimit(deps, 'login', request, set)
        try {
          return ok(await deps.auth.login(body.email, body.password, meta(request)))
        } catch (err) {
          if (err instanceof LoginThrottledError) deps.metrics.rateLimited.inc({ limit: `login_${err.rule}` })
          throw err
        }
      },
      { body: AuthModel.login, response: { 200: Envelope.data(AuthModel.session), ...errors(400, 401, 429) }, detail: { summary: 'Log in with email and password', tags: ['Auth'] } },
    )
    .post(
      '/refresh',
      async ({ body, request, set }) => {
        await authRateLimit(deps, 'refresh', request, set)
        return ok(await deps.auth.refresh(body.refreshToken))
      },
      {
        body: AuthModel.refresh,
        response: { 200: Envelope.data(AuthModel.tokens), ...errors(400, 401, 429) },
        detail: { summary: 'Exchange a refresh token for a new token pair (single use; reuse revokes the session)', tags: ['Auth'] },
      },
    )
    .post(
      '/logout',
      async ({ request }) => {
        const me = await requireUser(deps, request)
        await deps.auth.logout(me)
        return ok({ loggedOut: true })
      },
      { response: { 200: Envelope.data(t.Object({ loggedOut: t.Boolean() })), ...errors(401) }, detail: { summary: 'Revoke this session', tags: ['Auth'], security: bearer } },
    )
    .get(
      '/me',
      async ({ request, set }) => {
        const me = await requireUser(deps, request)
        return deps.cache.serve(request, set.headers as Record<string, string>, { scope: meRead.scope(me, {})!, viewer: me.userId, route: meRead.path }, async () => {
          const u = await users.findById(deps.sql, me.userId)
          if (!u) throw new NotFoundError('User')
          return ok(u)
        })
      },
      { detail: { summary: 'The current user (cached per user; ETag)', tags: ['Auth'], security: bearer, responses: documented({ 200: Envelope.data(AuthModel.me), ...errors(401) }) } },
    )
    .post(
      '/change-password',
      async ({ body, request }) => {
        const me = await requireUser(deps, request)
        const r = await deps.auth.changePassword(me, body.currentPassword, body.newPassword, meta(request))
        await deps.cache.invalidate(`user:${me.userId}`)
        return ok(r)
      },
      {
        body: AuthModel.changePassword,
        response: { 200: Envelope.data(AuthModel.session), ...errors(400, 401) },
        detail: { summary: 'Change the password; every session of the user is revoked and a new one opened', tags: ['Auth'], security: bearer },
      },
    )
}
