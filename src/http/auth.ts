/** /api/auth: register, login, refresh, logout, me, change-password, forgot-password, reset-password. */
import { Elysia, t } from 'elysia'
import { documented, Envelope, errors, ok, requireUser, type HttpDeps } from './context.ts'
import { access } from '../auth/route-access.ts'
import { authRateLimit } from './plugins/rate-limit.ts'
import * as users from '../store/users.ts'
import { NotFoundError } from '../core/errors.ts'
import { LoginThrottledError } from '../auth/login-throttle.ts'
import type { CachedRead } from './native.ts'

/** Example values of the documented schemas (the OpenAPI document shows them). */
const EXAMPLE = {
  user: { id: '3f6c2a9e-8b1d-4c7a-9e52-1d7b4a0c6f21', email: 'user@example.com', firstName: 'John', lastName: 'Doe', role: 'USER' as const },
  token:
    'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIzZjZjMmE5ZS04YjFkLTRjN2EtOWU1Mi0xZDdiNGEwYzZmMjEiLCJzaWQiOiI5YjJlN2Q0MS0wYzVhLTQ4ZjMtYTZkMS03ZThmMmI0YzlkMDMiLCJ0eXAiOiJhY2Nlc3MiLCJpYXQiOjE3OTY0NjA5MDAsImV4cCI6MTc5NjQ2MTgwMH0.q1Xb8n3VfKz0Jm2RtY7cWd5LhG4sPa9eUo6iTj-NrCk',
  refreshToken:
    'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIzZjZjMmE5ZS04YjFkLTRjN2EtOWU1Mi0xZDdiNGEwYzZmMjEiLCJzaWQiOiI5YjJlN2Q0MS0wYzVhLTQ4ZjMtYTZkMS03ZThmMmI0YzlkMDMiLCJnZW4iOjAsInR5cCI6InJlZnJlc2giLCJqdGkiOiJjMWQ0ZTdmMC0yYjNhLTRjNWQtOGU5Zi0wYTFiMmMzZDRlNWYiLCJpYXQiOjE3OTY0NjA5MDAsImV4cCI6MTc5OTA1MjkwMH0.Zr4Wm8KcT2pQx6Vb0Ny3Hd9Ls5Gf1Ja7Eo2Ui8Ck-Mw',
}

export namespace AuthModel {
  const email = t.String({ format: 'email', maxLength: 254, error: 'Invalid email format' })
  const name = (label: string) => t.String({ minLength: 1, maxLength: 100, error: `${label} is required (1–100 characters)` })
  // The schema shows and checks the length; the rest of the rule is checked, and reported per
  // rule broken, by the auth service (src/auth/service.ts `passwordProblems`), which owns it.
  const PASSWORD_RULE = '8–128 characters with a lowercase and an uppercase letter, a digit and a symbol (e.g. `SecurePass123!`); a weak password is a 400 whose detail names every rule it breaks'
  const PASSWORD_ERROR = 'Password must be 8–128 characters with a lowercase and an uppercase letter, a digit and a symbol'
  export const register = t.Object(
    {
      email,
      password: t.String({ minLength: 8, maxLength: 128, description: PASSWORD_RULE, error: PASSWORD_ERROR }),
      firstName: name('First name'),
      lastName: name('Last name'),
      organization: t.Optional(t.String({ maxLength: 200, error: 'Organization must be at most 200 characters' })),
    },
    { additionalProperties: false, examples: [{ email: 'user@example.com', password: 'SecurePass123!', firstName: 'John', lastName: 'Doe', organization: 'Company Inc' }] },
  )
  export const login = t.Object(
    { email, password: t.String({ minLength: 1, maxLength: 128, error: 'Password is required' }) },
    { additionalProperties: false, examples: [{ email: 'user@example.com', password: 'SecurePass123!' }] },
  )
  export const refresh = t.Object(
    { refreshToken: t.String({ minLength: 1, maxLength: 4096, description: 'The `refreshToken` of the last login or refresh', error: 'Refresh token is required' }) },
    { additionalProperties: false, examples: [{ refreshToken: EXAMPLE.refreshToken }] },
  )
  export const changePassword = t.Object(
    {
      currentPassword: t.String({ minLength: 1, maxLength: 128, error: 'Current password is required' }),
      newPassword: t.String({ minLength: 8, maxLength: 128, description: `${PASSWORD_RULE}; it must differ from the current one`, error: PASSWORD_ERROR }),
    },
    { additionalProperties: false, examples: [{ currentPassword: 'SecurePass123!', newPassword: 'Sturdier-Pass456' }] },
  )
  export const forgotPassword = t.Object(
    { email },
    { additionalProperties: false, examples: [{ email: 'user@example.com' }] },
  )
  export const resetPassword = t.Object(
    {
      token: t.String({ minLength: 1, maxLength: 512, description: 'The `token` of the e-mailed link (`FRONTEND_URL/reset-password?token=…`)', error: 'Token is required' }),
      newPassword: t.String({ minLength: 8, maxLength: 128, description: PASSWORD_RULE, error: PASSWORD_ERROR }),
    },
    { additionalProperties: false, examples: [{ token: 'pWq0m1nQ8k3Zs5Tb2Vx7Yc4Rd9Ue6Af1Gh0Jk3Lm5No', newPassword: 'Sturdier-Pass456' }] },
  )
  export const user = t.Object(
    { id: t.String({ format: 'uuid' }), email: t.String(), firstName: t.String(), lastName: t.String(), role: t.Union([t.Literal('ADMIN'), t.Literal('USER'), t.Literal('VIEWER')]) },
    { examples: [EXAMPLE.user] },
  )
  export const me = t.Composite(
    [
      user,
      t.Object({
        organization: t.Union([t.String(), t.Null()]),
        isActive: t.Boolean({ description: 'false: deactivated (cannot sign in)' }),
        lastLoginAt: t.Union([t.String(), t.Null()], { description: 'ISO time of the last successful login' }),
        createdAt: t.String(),
        updatedAt: t.String(),
      }),
    ],
    { examples: [{ ...EXAMPLE.user, organization: 'Company Inc', isActive: true, lastLoginAt: '2026-12-04T10:15:00.000Z', createdAt: '2026-11-02T08:30:00.000Z', updatedAt: '2026-11-02T08:30:00.000Z' }] },
  )
  const tokenPair = { token: EXAMPLE.token, refreshToken: EXAMPLE.refreshToken, expiresIn: 900, refreshExpiresIn: 2592000, tokenType: 'Bearer' as const }
  export const tokens = t.Object(
    {
      token: t.String({ description: 'The access token: send it as `Authorization: Bearer <token>`' }),
      refreshToken: t.String({ description: 'Single use: exchange it at `POST /api/auth/refresh` for a new pair' }),
      expiresIn: t.Integer({ description: 'Seconds the access token is valid (`JWT_ACCESS_TTL_SECONDS`)' }),
      refreshExpiresIn: t.Integer({ description: 'Seconds the refresh token is valid (`JWT_REFRESH_TTL_SECONDS`)' }),
      tokenType: t.Literal('Bearer'),
    },
    { examples: [tokenPair] },
  )
  export const session = t.Composite([t.Object({ user }), tokens], { examples: [{ user: EXAMPLE.user, ...tokenPair }] })
}

/** A cached read's 304, for the OpenAPI document. */
export const NOT_MODIFIED = { description: 'Not modified: the `If-None-Match` ETag is still current (no body)' }

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
      {
        body: AuthModel.register,
        response: { 201: Envelope.data(AuthModel.session), ...errors(400, 409, 429) },
        detail: {
          summary: 'Create an account',
          description:
            'Creates a `USER` account and signs it in: answers 201 with the user and a token pair, as a login does. ' +
            'Passwords need 8–128 characters with a lowercase and an uppercase letter, a digit and a symbol; a weak one is a 400 whose detail names every rule it breaks, ' +
            'and unknown fields (such as `role`) are a 400 too. 409 when an account has the email already (compared without regard to case). ' +
            'Each client source has a budget of register requests of its own (`AUTH_REGISTER_RATE_LIMIT_WINDOW_MS` / `AUTH_REGISTER_RATE_LIMIT_MAX_REQUESTS`, default 5 per 15 minutes); past it, 429.',
          tags: ['Auth'],
          ...access.public,
        },
      },
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
      {
        body: AuthModel.login,
        response: { 200: Envelope.data(AuthModel.session), ...errors(400, 401, 429) },
        detail: {
          summary: 'Log in with email and password',
          description:
            'Opens a session: answers the user, an access `token` (valid `JWT_ACCESS_TTL_SECONDS`, default 15 minutes) and a single-use `refreshToken` (`JWT_REFRESH_TTL_SECONDS`, default 30 days). ' +
            'A wrong email or password is a 401 with the same answer whether the account exists or not; a deactivated account is a 401 too. ' +
            'Failed logins are throttled, never locked out: per source (`LOGIN_SOURCE_MAX_FAILURES`), per account (`LOGIN_ACCOUNT_MAX_FAILURES`) and per account and source (`LOGIN_LOCKOUT_THRESHOLD`, then waits from `LOGIN_BACKOFF_BASE_MS` up to `LOGIN_LOCKOUT_MS`); ' +
            'a refused attempt is a 429 with `Retry-After` and the rule in `details`, and its password is not checked. ' +
            'Each source also has a budget of login requests (`AUTH_LOGIN_RATE_LIMIT_WINDOW_MS` / `AUTH_LOGIN_RATE_LIMIT_MAX_REQUESTS`, default 5 per 15 minutes; 429).',
          tags: ['Auth'],
          ...access.public,
        },
      },
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
        detail: {
          summary: 'Exchange a refresh token for a new token pair',
          description:
            'Answers a new access token and a new refresh token for the same session; the refresh token sent is spent. ' +
            'Sending a spent refresh token again revokes the whole session (someone else holds a copy) — except within 2 s of its own exchange, which is two tabs refreshing at once: the later one just gets a 401. ' +
            '401 for a token that is invalid, expired, spent or of a revoked session. ' +
            'Each client source has a budget of refresh requests apart from login\'s (`AUTH_REFRESH_RATE_LIMIT_WINDOW_MS` / `AUTH_REFRESH_RATE_LIMIT_MAX_REQUESTS`, default 100 per 15 minutes; 429).',
          tags: ['Auth'],
          ...access.public,
        },
      },
    )
    .post(
      '/logout',
      async ({ request }) => {
        const me = await requireUser(deps, request)
        await deps.auth.logout(me)
        return ok({ loggedOut: true })
      },
      {
        response: { 200: Envelope.data(t.Object({ loggedOut: t.Boolean() }, { examples: [{ loggedOut: true }] })), ...errors(401) },
        detail: {
          summary: 'Log out: revoke this session',
          description:
            'Revokes the session the token belongs to, at once and on every node: its access and refresh tokens stop working and its WebSocket connections close (code 4001, `session revoked`). ' +
            'The user\'s other sessions are not touched.',
          tags: ['Auth'],
          ...access.signedIn,
        },
      },
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
      {
        detail: {
          summary: 'The current user',
          description:
            'The caller\'s own record: names, role, organization, whether the account is active, the last login and when it was created and changed. ' +
            'Served from a per-user response cache with an `ETag` (send it back in `If-None-Match` for a 304) and `X-Cache: HIT|MISS`; any change to the user drops the entry before it answers.',
          tags: ['Auth'],
          ...access.signedIn,
          responses: { ...documented({ 200: Envelope.data(AuthModel.me), ...errors(401) }), 304: NOT_MODIFIED },
        },
      },
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
        detail: {
          summary: 'Change your password',
          description:
            'Checks `currentPassword`, sets `newPassword`, revokes every session of the user — on every node, closing their WebSocket connections (code 4001) — and opens a new one: ' +
            'answers the user and a fresh token pair, as a login does; "your password was changed" is e-mailed (and notified in-app), and open reset links stop working. ' +
            '400 when the current password is wrong, when the new one is weak (8–128 characters with a lowercase and an uppercase letter, a digit and a symbol; the detail names every rule it breaks), or when it equals the current one.',
          tags: ['Auth'],
          ...access.signedIn,
        },
      },
    )
    .post(
      '/forgot-password',
      async ({ body, request, set }) => {
        await authRateLimit(deps, 'password_reset', request, set)
        deps.auth.forgotPassword(body.email, meta(request))
        set.status = 202
        const minutes = deps.config.passwordReset.ttlMinutes
        return ok({ accepted: true as const, message: `If an account has this e-mail, a link to reset its password is on its way. It works once, for ${minutes} minutes.` })
      },
      {
        body: AuthModel.forgotPassword,
        response: {
          202: Envelope.data(
            t.Object(
              { accepted: t.Literal(true), message: t.String() },
              { examples: [{ accepted: true, message: 'If an account has this e-mail, a link to reset its password is on its way. It works once, for 30 minutes.' }] },
            ),
          ),
          ...errors(400, 429, 503),
        },
        detail: {
          summary: 'Forgot your password? Get a reset link by e-mail',
          description:
            'Answers 202 at once, with the same body and headers, whether or not an account has the e-mail: nothing tells whether it exists, not even the time taken (the account is looked up after the answer). ' +
            'If an active account has it, an e-mail with a single-use link (`FRONTEND_URL/reset-password?token=…`) goes out; the link works for `PASSWORD_RESET_TTL_MINUTES` (default 30), and only the SHA-256 of its token is stored. ' +
            'One account gets at most 3 such e-mails an hour (more requests answer the same and send nothing). ' +
            'The same per-source budget as reset-password (`AUTH_PASSWORD_RESET_RATE_LIMIT_WINDOW_MS` / `AUTH_PASSWORD_RESET_RATE_LIMIT_MAX_REQUESTS`, default those of `AUTH_RATE_LIMIT_*`: 5 per 15 minutes; 429). ' +
            '503 when this server sends no e-mail (`SMTP_HOST` unset) — for every e-mail alike.',
          tags: ['Auth'],
          ...access.public,
        },
      },
    )
    .post(
      '/reset-password',
      async ({ body, request, set }) => {
        await authRateLimit(deps, 'password_reset', request, set)
        await deps.auth.resetPassword(body.token, body.newPassword, meta(request))
        return ok({ passwordReset: true as const })
      },
      {
        body: AuthModel.resetPassword,
        response: { 200: Envelope.data(t.Object({ passwordReset: t.Literal(true) }, { examples: [{ passwordReset: true }] })), ...errors(400, 429) },
        detail: {
          summary: 'Set a new password with an e-mailed reset link',
          description:
            'Spends the link\'s `token` and sets `newPassword` (the rules of register: 8–128 characters with a lowercase and an uppercase letter, a digit and a symbol), ' +
            'revokes every session of the account — on every node, closing their WebSocket connections (code 4001) — and e-mails "your password was changed". Sign in with the new password afterwards. ' +
            'A token works once, until it expires; using it (or changing the password) also spends every other open link of the account. ' +
            '400 for a weak password (the detail names every rule it breaks) or a token that is invalid, expired or already used (one answer for the three). ' +
            'Rate-limited per source with forgot-password (429).',
          tags: ['Auth'],
          ...access.public,
        },
      },
    )
}
