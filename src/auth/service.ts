/**
 * Accounts and logins, with no HTTP in sight: register, login (throttled: ./login-throttle.ts), refresh-token
 * rotation with reuse detection, logout, password change, account changes and the first
 * admin. The one writer of the `users` and `sessions` tables (with ./sessions.ts, which
 * revokes).
 */
import type { Config } from '../config.ts'
import { ConflictError, PG, pgCode, UnauthorizedError, ValidationError } from '../core/errors.ts'
import { Jwt } from '../core/jwt.ts'
import type { AuditEvent } from '../store/audit-chain.ts'
import type { AuditLog } from '../store/audit.ts'
import type { Sql } from '../store/db.ts'
import { MemoryRateLimitStore, type RateLimitStore } from '../store/rate-limit.ts'
import * as sessions from '../store/sessions.ts'
import * as users from '../store/users.ts'
import { LoginThrottle, LoginThrottledError } from './login-throttle.ts'
import type { Logger } from '../core/logger.ts'
import { PasswordResets } from './password-reset.ts'
import type { Principal } from './principal.ts'
import type { SessionRegistry } from './sessions.ts'

interface PublicUser {
  id: string
  email: string
  firstName: string
  lastName: string
  role: users.Role
}

export interface TokenPair {
  token: string
  refreshToken: string
  expiresIn: number
  refreshExpiresIn: number
  tokenType: 'Bearer'
}

export interface LoginResult extends TokenPair {
  user: PublicUser
}

export interface RequestMeta {
  ip?: string | null
  userAgent?: string | null
}

function publicUser(u: users.UserRow): PublicUser {
  return { id: u.id, email: u.email, firstName: u.firstName, lastName: u.lastName, role: u.role }
}

/** Password rules, reported per rule so a client can show them. */
function passwordProblems(password: string): string[] {
  const problems: string[] = []
  if (password.length < 8) problems.push('at least 8 characters')
  if (password.length > 128) problems.push('at most 128 characters')
  if (!/[a-z]/.test(password)) problems.push('a lowercase letter')
  if (!/[A-Z]/.test(password)) problems.push('an uppercase letter')
  if (!/[0-9]/.test(password)) problems.push('a digit')
  if (!/[^A-Za-z0-9]/.test(password)) problems.push('a symbol')
  return problems
}

function assertStrongPassword(password: string, field = 'password') {
  const p = passwordProblems(password)
  if (p.length) throw new ValidationError('Validation failed', [{ field, message: `Password must contain ${p.join(', ')}` }])
}

const sha256 = (text: string) => new Bun.CryptoHasher('sha256').update(text).digest('hex')

export class AuthService {
  readonly jwt: Jwt
  /** A bcrypt hash of a random string: verified against when the email is unknown, so timing does not reveal which emails exist. */
  private dummyHash: Promise<string>
  private readonly throttle: LoginThrottle
  /** Password resets, and the "password changed" and "sign-ins paused" notices (./password-reset.ts). */
  readonly resets: PasswordResets

  /**
   * `opts.limits`: where failed-login counters live — the Redis rate-limit store in a cluster,
   * so every node sees the same counts; when not given, an in-process store of their own.
   * `opts.audit`: where security events go (logins, refused logins, refresh-token reuse,
   * logouts, role changes); a login's and a role change's in the transaction of the change.
   */
  constructor(
    private readonly sql: Sql,
    private readonly config: Pick<Config, 'jwt' | 'bcryptRounds' | 'login' | 'smtp' | 'passwordReset'> & { jwt: { secret: string } },
    readonly registry: SessionRegistry,
    private readonly opts: { refreshReuseGraceMs?: number; onUserChanged?: (userId: string) => Promise<void> | void; limits?: RateLimitStore; audit?: AuditLog; logger?: Logger } = {},
  ) {
    this.jwt = new Jwt(config.jwt.secret)
    this.dummyHash = Bun.password.hash(crypto.randomUUID(), { algorithm: 'bcrypt', cost: config.bcryptRounds })
    const limits = opts.limits ?? new MemoryRateLimitStore()
    this.throttle = new LoginThrottle(limits, config.login)
    this.resets = new PasswordResets(sql, config, registry, limits, opts.logger)
  }

  hashPassword(password: string): Promise<string> {
    return Bun.password.hash(password, { algorithm: 'bcrypt', cost: this.config.bcryptRounds })
  }

  async register(
    input: { email: string; password: string; firstName: string; lastName: string; organization?: string | null; role?: users.Role },
    meta: RequestMeta = {},
  ): Promise<LoginResult> {
    assertStrongPassword(input.password)
    const passwordHash = await this.hashPassword(input.password)
    let user: users.UserRow
    try {
      user = await users.insert(this.sql, { ...input, passwordHash })
    } catch (err) {
      if (pgCode(err) === PG.uniqueViolation) {
        throw new ConflictError('An account with this email already exists', [{ field: 'email', message: 'Email is already registered' }])
      }
      throw err
    }
    await this.opts.onUserChanged?.(user.id)
    this.opts.audit?.identify(user.id)
    return { user: publicUser(user), ...(await this.openSession(user, meta)) }
  }

  /**
   * Change a user's names, organization, role or active flag (the caller decided who may).
   * A deactivation revokes every session at once; a new role or reactivation drops the
   * cached principals so the next request sees it. Undefined when there is no such user.
   */
  async updateUser(id: string, patch: users.UserPatch): Promise<users.UserRow | undefined> {
    const audit = this.opts.audit
    const u =
      audit?.enabled && (patch.role !== undefined || patch.isActive !== undefined)
        ? await this.updateAudited(audit, id, patch)
        : audit
          ? await audit.change(this.sql, (tx) => users.update(tx, id, patch))
          : await users.update(this.sql, id, patch)
    if (!u) return undefined
    if (patch.isActive === false) await this.registry.revokeUser(u.id, 'deactivated')
    else if (patch.role !== undefined || patch.isActive !== undefined) await this.registry.invalidateUser(u.id)
    return u
  }

  /**
   * A change of role or active flag and its audit events (`user.role_changed` with `from` and
   * `to`, `user.deactivated`, `user.reactivated`), in one transaction. The audit chain's lock
   * comes first, so concurrent changes are serialised and each reads the role it replaces.
   */
  private updateAudited(audit: AuditLog, id: string, patch: users.UserPatch): Promise<users.UserRow | undefined> {
    return this.sql.begin(async (tx) => {
      const chain = await audit.lock(tx)
      const before = await users.findById(tx, id)
      const after = before && (await users.update(tx, id, patch))
      if (!before || !after) return undefined
      const event = { outcome: 'success', status: 200, targetType: 'user', targetId: id } as const
      const events: AuditEvent[] = []
      if (after.role !== before.role) events.push({ ...event, action: 'user.role_changed', detail: { from: before.role, to: after.role } })
      if (after.isActive !== before.isActive) events.push({ ...event, action: after.isActive ? 'user.reactivated' : 'user.deactivated' })
      await chain?.append(...events)
      return after
    })
  }

  /**
   * Create the first admin when there is none (`password` undefined: generate one, returned
   * once); an existing account with the admin's email is made an active admin. Several nodes
   * booting at once create one.
   */
  async ensureAdmin(admin: { email: string; password: string | undefined }): Promise<{ email: string; password?: string } | undefined> {
    if ((await users.countAdmins(this.sql)) > 0) return undefined
    const generated = admin.password ? undefined : `Qx-${Buffer.from(crypto.getRandomValues(new Uint8Array(15))).toString('base64url')}9!`
    const password = admin.password ?? generated!
    const existing = await users.findSecretByEmail(this.sql, admin.email)
    if (existing) {
      await users.update(this.sql, existing.id, { role: 'ADMIN', isActive: true })
      return { email: admin.email }
    }
    try {
      await users.insert(this.sql, { email: admin.email, firstName: 'Admin', lastName: 'User', role: 'ADMIN', passwordHash: await this.hashPassword(password) })
    } catch (err) {
      // Several nodes booting at once: another one created the admin first.
      if (pgCode(err) === PG.uniqueViolation) return undefined
      throw err
    }
    return { email: admin.email, password: generated }
  }

  /**
   * Sign in. Throttled per account and source, per source and per account (the rules are in
   * ./login-throttle.ts); a known and an unknown email get the same answers and cost the same
   * work (a bcrypt verification, against a dummy hash for the unknown one).
   */
  async login(email: string, password: string, meta: RequestMeta = {}): Promise<LoginResult> {
    const audit = this.opts.audit
    // A login attempt's events: the e-mail typed, from where (a refused or failed one is recorded after the fact).
    const attempted = { actorEmail: email, ip: meta.ip ?? undefined, userAgent: meta.userAgent ?? undefined }
    let attempt: Awaited<ReturnType<LoginThrottle['admit']>>
    try {
      attempt = await this.throttle.admit(email, meta.ip)
    } catch (err) {
      if (err instanceof LoginThrottledError) await audit?.record({ ...attempted, action: 'auth.lockout', actorId: null, outcome: 'denied', status: err.status, detail: { rule: err.rule } })
      throw err
    }
    let user: Awaited<ReturnType<typeof users.findSecretByEmail>>
    try {
      user = await users.findSecretByEmail(this.sql, email)
    } catch (err) {
      await this.throttle.unevaluated(attempt).catch(() => {})
      throw err
    }
    const ok = await Bun.password.verify(password, user ? user.passwordHash : await this.dummyHash)
    if (!user || !ok) {
      const locked = await this.throttle.failed(attempt)
      // The owner hears of it (not awaited: this answer and its timing stay those of any failed login).
      if (user && locked) this.resets.locked(user.id, locked, this.config.login.pair.maxMs, meta)
      const err = new UnauthorizedError('Invalid email or password')
      await audit?.record({ ...attempted, action: 'auth.login_failed', actorId: user?.id ?? null, targetType: 'user', targetId: user?.id ?? null, outcome: 'denied', status: err.status, detail: { reason: user ? 'wrong_password' : 'unknown_email' } })
      throw err
    }
    await this.throttle.succeeded(attempt)
    if (!user.isActive) {
      const err = new UnauthorizedError('This account has been deactivated')
      await audit?.record({ ...attempted, action: 'auth.login_failed', actorId: user.id, targetType: 'user', targetId: user.id, outcome: 'denied', status: err.status, detail: { reason: 'deactivated' } })
      throw err
    }
    await users.recordSuccessfulLogin(this.sql, user.id)
    return { user: publicUser(user), ...(await this.openSession(user, meta, { ...attempted, action: 'auth.login', actorId: user.id, actorEmail: user.email, outcome: 'success', status: 200 })) }
  }

  /** A new session; with `audited`, its audit event (target: the session) in the same transaction. */
  private async openSession(user: users.UserRow, meta: RequestMeta, audited?: AuditEvent): Promise<TokenPair> {
    const sessionId = crypto.randomUUID()
    const expiresAt = new Date(Date.now() + this.config.jwt.refreshTtlSeconds * 1000)
    const refreshToken = this.refreshToken(user.id, sessionId, 0)
    const row = { id: sessionId, userId: user.id, refreshHash: sha256(refreshToken), expiresAt, userAgent: meta.userAgent, ip: meta.ip }
    const audit = this.opts.audit
    if (audited && audit?.enabled) {
      await this.sql.begin(async (tx) => {
        await sessions.insert(tx, row)
        await audit.recordIn(tx, { ...audited, targetType: 'session', targetId: sessionId })
      })
    } else await sessions.insert(this.sql, row)
    this.registry.admit({ userId: user.id, role: user.role, sessionId }, expiresAt)
    return this.pair(user.id, sessionId, refreshToken)
  }

  private refreshToken(userId: string, sessionId: string, generation: number): string {
    return this.jwt.sign({ sub: userId, sid: sessionId, gen: generation, typ: 'refresh', jti: crypto.randomUUID() }, this.config.jwt.refreshTtlSeconds)
  }

  private pair(userId: string, sessionId: string, refreshToken: string): TokenPair {
    return {
      token: this.jwt.sign({ sub: userId, sid: sessionId, typ: 'access' }, this.config.jwt.accessTtlSeconds),
      refreshToken,
      expiresIn: this.config.jwt.accessTtlSeconds,
      refreshExpiresIn: this.config.jwt.refreshTtlSeconds,
      tokenType: 'Bearer',
    }
  }

  /** Verify an access token and its session. Returns null when the token must be refused. */
  authenticate(token: string): Principal | null | Promise<Principal | null> {
    const v = this.jwt.verify(token, 'access')
    if (!v.ok) return null
    const sid = v.claims.sid
    if (typeof sid !== 'string') return null
    return this.registry.resolve(sid)
  }

  /**
   * Single-use refresh tokens. A token of the current generation is exchanged for a new
   * pair, atomically. A token that was already used revokes the whole session (someone
   * else holds a copy) — except within a short grace period after its own rotation, which
   * is two tabs refreshing at once rather than theft: that loser just gets a 401.
   */
  async refresh(refreshToken: string): Promise<TokenPair> {
    const v = this.jwt.verify(refreshToken, 'refresh')
    if (!v.ok) throw new UnauthorizedError('Invalid or expired refresh token')
    const { sub, sid, gen } = v.claims as unknown as { sub: string; sid: unknown; gen: unknown }
    if (typeof sid !== 'string' || typeof gen !== 'number') throw new UnauthorizedError('Invalid or expired refresh token')
    // A token we signed: the request is about its user, whatever comes of it.
    this.opts.audit?.identify(sub)
    const next = this.refreshToken(sub, sid, gen + 1)
    if (await sessions.rotate(this.sql, sid, gen, sha256(refreshToken), sha256(next))) {
      return this.pair(sub, sid, next)
    }
    const [row] = await this.sql<{ revoked: boolean; generation: number; lastRefreshedAt: Date | null }[]>`
      select revoked_at is not null as revoked, refresh_generation as generation, last_refreshed_at as "lastRefreshedAt"
      from sessions where id = ${sid}`
    if (row && !row.revoked && row.generation > gen) {
      const grace = this.opts.refreshReuseGraceMs ?? 2_000
      const justRotated = row.generation === gen + 1 && row.lastRefreshedAt !== null && Date.now() - row.lastRefreshedAt.getTime() < grace
      const err = new UnauthorizedError('Refresh token already used')
      if (!justRotated) {
        await this.registry.revoke(sid, 'refresh_token_reuse')
        // After the revocation (src/auth/sessions.ts writes it): the session is closed, then said so.
        await this.opts.audit?.record({ action: 'auth.refresh_reuse', actorId: sub, targetType: 'session', targetId: sid, outcome: 'denied', status: err.status })
      }
      throw err
    }
    throw new UnauthorizedError('Invalid or expired refresh token')
  }

  async logout(principal: Principal): Promise<void> {
    await this.registry.revoke(principal.sessionId, 'logout')
    await this.opts.audit?.record({ action: 'auth.logout', actorId: principal.userId, targetType: 'session', targetId: principal.sessionId, outcome: 'success', status: 200 })
  }

  /** Change the password, revoke every session of the user, and open a fresh one. */
  async changePassword(principal: Principal, current: string, next: string, meta: RequestMeta = {}): Promise<LoginResult> {
    const user = await users.findSecretById(this.sql, principal.userId)
    if (!user) throw new UnauthorizedError()
    if (!(await Bun.password.verify(current, user.passwordHash))) {
      throw new ValidationError('Validation failed', [{ field: 'currentPassword', message: 'Current password is incorrect' }])
    }
    assertStrongPassword(next, 'newPassword')
    if (current === next) throw new ValidationError('Validation failed', [{ field: 'newPassword', message: 'New password must differ from the current one' }])
    await this.resets.changed(user.id, await this.hashPassword(next), meta, this.opts.audit?.pend)
    await this.registry.revokeUser(user.id, 'password_changed')
    return { user: publicUser(user), ...(await this.openSession(user, meta)) }
  }

  /**
   * Forgot-password: answers at once, the same for every e-mail (./password-reset.ts); 503 when
   * e-mail is off.
   */
  forgotPassword(email: string, meta: RequestMeta = {}): void {
    this.resets.request(email, meta)
  }

  /** Reset-password with an e-mailed token: the new password (the rules of register), every session revoked. */
  async resetPassword(token: string, newPassword: string, meta: RequestMeta = {}): Promise<void> {
    assertStrongPassword(newPassword, 'newPassword')
    const audit = this.opts.audit
    // The request is anonymous: the account is the one the token names, known in its transaction.
    await this.resets.reset(token, await this.hashPassword(newPassword), meta, audit && ((tx, userId) => (audit.identify(userId), audit.pend(tx))))
  }
}
