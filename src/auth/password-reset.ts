/**
 * Passwords and the mail about them, for the auth service (./service.ts): a reset by e-mailed
 * link, the "password changed" notice of a change or a reset, and the "sign-ins paused" notice
 * of a lockout. Each notice is a notification (with its e-mail) recorded in the transaction of
 * what it tells (src/store/notifications.ts); a reset's link is a mail of its own.
 *
 * Forgot-password answers the same, at once, whether or not the e-mail has an account: the
 * lookup and the mail happen after the answer, so neither the body, the headers nor the timing
 * tell anything. The token is 32 random bytes; only its SHA-256 is stored, its copy in the
 * outbox row is sealed until sent. A reset spends it (and every other open token of the user),
 * sets the password, revokes every session, and tells the user — in one transaction.
 */
import { randomBytes } from 'node:crypto'
import type { Config } from '../config.ts'
import { ServiceUnavailableError, ValidationError } from '../core/errors.ts'
import type { Logger } from '../core/logger.ts'
import type { Pend } from '../store/audit-pending.ts'
import type { Db, Sql } from '../store/db.ts'
import { record as recordNotification } from '../store/notifications.ts'
import { queueUserMail, seal, sealKey } from '../store/notifications-mail.ts'
import { insertReset, spendAllResets, spendReset } from '../store/password-resets.ts'
import type { RateLimitStore } from '../store/rate-limit.ts'
import * as sessions from '../store/sessions.ts'
import * as users from '../store/users.ts'
import type { ThrottleRule } from './login-throttle.ts'
import type { SessionRegistry } from './sessions.ts'

const sha256 = (text: string) => new Bun.CryptoHasher('sha256').update(text).digest('hex')

/** Reset mails one account gets per hour at most (more requests answer the same, and send nothing): no mail-bombing through the form. */
const MAILS_PER_ACCOUNT_PER_HOUR = 3

/** What the service tells the user an e-mail is off for (503, whatever the e-mail). */
const MAIL_OFF = 'E-mail is off on this server (SMTP_HOST is not set), so a password cannot be reset by e-mail; ask an administrator to reset it'

interface Meta {
  ip?: string | null
}

export class PasswordResets {
  readonly #key: Buffer
  readonly #mail: boolean
  readonly #pending = new Set<Promise<void>>()

  constructor(
    private readonly sql: Sql,
    private readonly config: Pick<Config, 'smtp' | 'passwordReset'> & { jwt: { secret: string } },
    private readonly registry: SessionRegistry,
    private readonly limits: RateLimitStore,
    private readonly logger?: Logger,
  ) {
    this.#key = sealKey(config.jwt.secret)
    this.#mail = config.smtp.host !== undefined
  }

  /**
   * Forgot-password: refuse at once when e-mail is off (503, the same for every e-mail);
   * otherwise return at once and, after, e-mail a link if the address has an active account.
   */
  request(email: string, meta: Meta): void {
    if (!this.#mail) throw new ServiceUnavailableError(MAIL_OFF)
    const p = this.#request(email, meta).catch((err) => this.logger?.error({ err }, 'password reset request failed'))
    this.#pending.add(p)
    void p.finally(() => this.#pending.delete(p))
  }

  /** Resolves when the requests answered so far are done (tests, shutdown). */
  async idle(): Promise<void> {
    await Promise.allSettled([...this.#pending])
  }

  async #request(email: string, meta: Meta): Promise<void> {
    // The same work whatever the e-mail, up to the lookup.
    const token = randomBytes(32).toString('base64url')
    const tokenHash = sha256(token)
    const cap = await this.limits.hit(`pwreset:acct:${sha256(email.toLowerCase())}`, 3_600_000, MAILS_PER_ACCOUNT_PER_HOUR)
    const user = await users.findSecretByEmail(this.sql, email)
    if (!user || !user.isActive) return
    if (!cap.allowed) {
      this.logger?.warn({ userId: user.id }, 'password reset mail not sent: too many asked for this account this hour')
      return
    }
    const expiresAt = new Date(Date.now() + this.config.passwordReset.ttlMinutes * 60_000)
    await this.sql.begin(async (tx) => {
      await insertReset(tx, { userId: user.id, tokenHash, expiresAt, ip: meta.ip ?? null })
      await queueUserMail(tx, user.id, { kind: 'security.password-reset', data: { expiresAt: expiresAt.toISOString(), ip: meta.ip ?? null, sealed: seal(this.#key, token) } })
    })
  }

  /**
   * Reset-password: a strong new password and an open token → the password is set, every open
   * token and every session of the user revoked, "password changed" sent. 400 for a token that
   * is unknown, used or expired (the same answer for the three).
   */
  async reset(token: string, passwordHash: string, meta: Meta, pend?: (tx: Db, userId: string) => Promise<void>): Promise<string> {
    const at = new Date()
    const userId = await this.sql.begin(async (tx) => {
      const id = await spendReset(tx, sha256(token))
      if (!id) return undefined
      await users.setPassword(tx, id, passwordHash)
      await sessions.revokeAllForUser(tx, id, 'password_reset')
      await recordNotification(tx, { userId: id, kind: 'security.password-changed', data: { via: 'reset', at: at.toISOString(), ip: meta.ip ?? null } }, { mailAvailable: this.#mail })
      // The request's audit event, with the change (src/store/audit.ts `pend`).
      await pend?.(tx, id)
      return id
    })
    if (!userId) throw new ValidationError('Validation failed', [{ field: 'token', message: 'This reset link is invalid, expired or already used; ask for a new one' }])
    // Committed: now every node drops the sessions it holds and closes their sockets.
    await this.registry.revokeUser(userId, 'password_reset')
    return userId
  }

  /** A password change: the new hash, open reset tokens spent, "password changed" sent — one transaction. */
  async changed(userId: string, passwordHash: string, meta: Meta, pend?: Pend): Promise<void> {
    await this.sql.begin(async (tx) => {
      await users.setPassword(tx, userId, passwordHash)
      await spendAllResets(tx, userId)
      await recordNotification(tx, { userId, kind: 'security.password-changed', data: { via: 'change', at: new Date().toISOString(), ip: meta.ip ?? null } }, { mailAvailable: this.#mail })
      await pend?.(tx)
    })
  }

  /**
   * The login throttle started refusing attempts on `userId`'s account (`rule`: from one source,
   * or from new sources for the whole account): "sign-ins paused", at most once per `windowMs`.
   * Not awaited by the login, whose answer and timing stay those of any failed login.
   */
  locked(userId: string, rule: ThrottleRule, windowMs: number, meta: Meta): void {
    const at = new Date()
    const note = { userId, kind: 'security.account-locked', data: { rule, at: at.toISOString(), ip: meta.ip ?? null }, dedupeKey: `locked:${Math.floor(at.getTime() / windowMs)}` } as const
    const p = this.sql.begin((tx) => recordNotification(tx, note, { mailAvailable: this.#mail })).then(
      () => {},
      (err) => this.logger?.error({ err, userId }, 'lockout notice failed'),
    )
    this.#pending.add(p)
    void p.finally(() => this.#pending.delete(p))
  }
}
