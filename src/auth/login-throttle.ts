/**
 * Failed-login throttling, after OWASP ASVS 5.0 V6.3 (anti-automation without letting anyone
 * lock an account) and NIST SP 800-63B §5.2.2 (rate limiting; a success from a source makes
 * its earlier failures count no more; accept from addresses the subscriber used before).
 *
 * Rules, checked in this order before a password is verified (the first that refuses answers
 * 429 with Retry-After; nothing below it is counted):
 *
 * 1. Source. After `source.maxFailures` failed logins from one source (client IP; an IPv6
 *    address counts by its /64) within `source.windowMs`, across all accounts, every login
 *    from it is refused until that window ends — a right password too, so credential
 *    stuffing learns nothing.
 * 2. Account. After `account.maxFailures` failed logins on one account within
 *    `account.windowMs`, from all sources, the account is under a wide attack. Sources that
 *    signed in to it successfully within `account.trustedSourceTtlMs` go on as before; any
 *    other source shares one attempt per `account.slowIntervalMs` for that account. This
 *    slows a botnet down instead of locking the owner out.
 * 3. Account and source. One source's attempts on one account: `pair.free` at once, then each
 *    must wait `min(pair.baseMs · 2^(n − free), pair.maxMs)` after the previous one. Counted
 *    when made (concurrent guesses cannot slip through together), forgotten
 *    `pair.windowMs` after the last one, and cleared by a successful login from that source —
 *    so hammering an account from one place never stops its owner elsewhere.
 *
 * Accounts are keyed by the email as typed (lowercased, hashed), whether or not an account
 * has it: an unknown email goes through exactly the same counters, waits and answers as a
 * real one, so neither the status, the body, the headers nor the work done (one bcrypt
 * verification against a dummy hash) tells which emails exist. Failures are counted only for
 * attempts that were evaluated (a refused attempt is not a failure).
 *
 * Counters live in the rate-limit store: in-process on a single node, Redis in a cluster.
 */
import ipaddr from 'ipaddr.js'
import type { Config } from '../config.ts'
import { RateLimitedError } from '../core/errors.ts'
import type { RateLimitStore } from '../store/rate-limit.ts'

export type ThrottleRule = 'source' | 'account' | 'pair'

/** A login refused by one of the rules above (429 with Retry-After). */
export class LoginThrottledError extends RateLimitedError {
  constructor(
    readonly rule: ThrottleRule,
    retryMs: number,
    detail: string,
  ) {
    const seconds = Math.max(1, Math.ceil(retryMs / 1000))
    super('Too many failed logins, please try again later', seconds, [{ field: rule === 'source' ? 'login' : 'email', message: `${detail}; try again in ${seconds} s` }])
  }
}

/**
 * The key of a client address: an IPv4 address as it is (also when IPv4-mapped), an IPv6
 * address by its /64 — one subscriber usually holds a whole /64 (RFC 6177), so counting single
 * IPv6 addresses would give an attacker 2^64 fresh sources.
 */
export function sourceOf(ip: string | null | undefined): string {
  if (!ip) return 'unknown'
  try {
    const a = ipaddr.process(ip)
    if (a.kind() === 'ipv4') return a.toString()
    return `${(a as ipaddr.IPv6).parts.slice(0, 4).map((p) => p.toString(16)).join(':')}::/64`
  } catch {
    // Not an address (a proxy's odd X-Forwarded-For): counted as given, length bounded.
    return ip.slice(0, 64)
  }
}

const accountOf = (email: string) => new Bun.CryptoHasher('sha256').update(email.toLowerCase()).digest('base64url')

/** One login attempt that was let through; report its outcome with `failed` or `succeeded`. */
export interface LoginAttempt {
  account: string
  source: string
  /** The last attempt this source may make on the account at once: if it fails, the next must wait. */
  lastFree?: boolean
}

export class LoginThrottle {
  constructor(
    private readonly store: RateLimitStore,
    private readonly rules: Config['login'],
  ) {}

  private keys(a: LoginAttempt) {
    return {
      source: `login:src:${a.source}`,
      account: `login:acct:${a.account}`,
      slow: `login:slow:${a.account}`,
      trusted: `login:trust:${a.account}:${a.source}`,
      pair: `login:pair:${a.account}:${a.source}`,
    }
  }

  /** Let an attempt through, or throw LoginThrottledError (see the rules above). */
  async admit(email: string, ip: string | null | undefined): Promise<LoginAttempt> {
    const attempt = { account: accountOf(email), source: sourceOf(ip) }
    const k = this.keys(attempt)
    const { source, account, pair } = this.rules
    const [bySource, byAccount] = await Promise.all([this.store.peek(k.source), this.store.peek(k.account)])
    if (bySource.count >= source.maxFailures) {
      throw new LoginThrottledError('source', bySource.resetMs, `${source.maxFailures} failed logins from this address within ${Math.ceil(source.windowMs / 1000)} s`)
    }
    if (byAccount.count >= account.maxFailures && (await this.store.peek(k.trusted)).count === 0) {
      const slot = await this.store.hit(k.slow, account.slowIntervalMs, 1)
      if (!slot.allowed) {
        throw new LoginThrottledError('account', slot.resetMs, `Many failed logins for this account: one attempt per ${Math.ceil(account.slowIntervalMs / 1000)} s from a new address`)
      }
    }
    const r = await this.store.backoff(k.pair, pair)
    if (!r.allowed) throw new LoginThrottledError('pair', r.retryMs, `Too many failed logins for this account from this address`)
    return { ...attempt, lastFree: r.count === pair.free }
  }

  /**
   * The attempt was let through but never evaluated (the database could not be asked): it
   * does not count, so retrying through an outage does not end in a wait afterwards.
   */
  async unevaluated(a: LoginAttempt): Promise<void> {
    await this.store.unbackoff(this.keys(a).pair)
  }

  /**
   * The password was wrong (or the account unknown). Returns the rule this failure just set off
   * for the account, if any — `pair`: this source must now wait; `account`: new sources are now
   * slowed — so its owner can be told (once: only the failure that crosses the line returns it).
   */
  async failed(a: LoginAttempt): Promise<Exclude<ThrottleRule, 'source'> | undefined> {
    const k = this.keys(a)
    const { source, account } = this.rules
    // `max` only matters for `allowed`, which is not used here: these count, `admit` decides.
    const [, byAccount] = await Promise.all([this.store.hit(k.source, source.windowMs, source.maxFailures), this.store.hit(k.account, account.windowMs, account.maxFailures)])
    if (byAccount.allowed && byAccount.remaining === 0) return 'account'
    return a.lastFree ? 'pair' : undefined
  }

  /** The password was right: this source's failures on the account no longer count, and it is trusted for it. */
  async succeeded(a: LoginAttempt): Promise<void> {
    const k = this.keys(a)
    await Promise.all([this.store.reset(k.pair), this.store.hold(k.trusted, this.rules.account.trustedSourceTtlMs)])
  }
}
