/**
 * One attempt at sending one outbox row (table notification_mails, src/store/notifications-mail.ts):
 * claim it, render it, hand it to the mail server, record the outcome. The claim is what makes
 * a mail go out once when several nodes (or a job and the sweep) try the same row: only the
 * attempt that claimed it sends, and a claim lasts `leaseMs` — longer than the SMTP timeouts —
 * so it outlives its attempt only when its node died.
 *
 * A failure that may pass (no connection, a timeout, a 4xx) puts the row back, due again after
 * `baseMs · 2^(attempts − 1)` (at most `maxMs`); a 5xx refusal of the recipient or message, or
 * `giveUpMs` of failures since the row was written, ends it `failed`. Nothing is dropped while
 * the server is down: the row waits.
 */
import type { Logger } from '../../core/logger.ts'
import type { Sql } from '../../store/db.ts'
import { claimMail, markFailed, markRetry, markSent, unseal, type MailRow } from '../../store/notifications-mail.ts'
import { MailSendError, type Mailer } from './mailer.ts'
import { render } from './templates.ts'

export interface RetryPolicy {
  /** The wait before the second attempt; doubled for each further one. */
  baseMs: number
  /** The longest wait between attempts. */
  maxMs: number
  /** After this long since the row was written, a failing mail is given up. */
  giveUpMs: number
}

export interface DeliveryOptions {
  sql: Sql
  mailer: Mailer
  nodeId: string
  frontendUrl: string
  /** The key secrets are sealed with (sealKey(JWT_SECRET)). */
  key: Buffer
  retry: RetryPolicy
  /** How long a claim holds (past the mailer's timeouts). */
  leaseMs: number
  logger: Logger
  /** Counted per outcome (metrics). */
  onOutcome?: (outcome: AttemptOutcome) => void
}

/** `sent`; `skipped`: not this attempt's to send (sent, given up, or claimed by a live attempt); `retry`: put back, try later; `failed`: given up. */
export type AttemptOutcome = 'sent' | 'skipped' | 'retry' | 'failed'

/** The wait before attempt `attempts + 1`. */
export function retryDelay(attempts: number, p: Pick<RetryPolicy, 'baseMs' | 'maxMs'>): number {
  return Math.min(p.baseMs * 2 ** Math.min(Math.max(attempts - 1, 0), 40), p.maxMs)
}

export class MailDelivery {
  constructor(private readonly opts: DeliveryOptions) {}

  /** One attempt at row `id`. */
  async attempt(id: string): Promise<AttemptOutcome> {
    const o = this.opts
    const row = await claimMail(o.sql, id, o.nodeId, o.leaseMs)
    if (!row) return this.#outcome('skipped')
    let error: MailSendError | undefined
    try {
      await o.mailer.send(this.#message(row))
    } catch (err) {
      error = err instanceof MailSendError ? err : new MailSendError(err instanceof Error ? err.message : String(err), false)
    }
    if (!error) {
      // Only the send's own failure is retried: a failure to record it (the database away) leaves
      // the claim to expire, and only then is the mail sent again — the one way it goes out twice.
      await markSent(o.sql, id, o.nodeId)
      o.logger.info({ mail: id, kind: row.kind, attempts: row.attempts }, 'mail sent')
      return this.#outcome('sent')
    }
    const tooOld = Date.now() - row.createdAt.getTime() > o.retry.giveUpMs
    if (error.permanent || tooOld) {
      const why = error.permanent ? error.message : `given up after ${row.attempts} attempts over ${Math.round(o.retry.giveUpMs / 3_600_000)} h; last error: ${error.message}`
      await markFailed(o.sql, id, o.nodeId, why)
      o.logger.warn({ mail: id, kind: row.kind, attempts: row.attempts, err: error }, 'mail given up')
      return this.#outcome('failed')
    }
    await markRetry(o.sql, id, o.nodeId, error.message, new Date(Date.now() + retryDelay(row.attempts, o.retry)))
    o.logger.warn({ mail: id, kind: row.kind, attempts: row.attempts, code: error.code, err: error.message }, 'mail not sent; will try again')
    return this.#outcome('retry')
  }

  #message(row: MailRow) {
    let secret: string | undefined
    if (typeof row.data.sealed === 'string') {
      try {
        secret = unseal(this.opts.key, row.data.sealed)
      } catch {
        throw new MailSendError('the link in this mail cannot be opened (was JWT_SECRET changed?)', true)
      }
    }
    const r = render(row.kind, row.data, this.opts.frontendUrl, secret)
    return { to: row.to, subject: r.subject, text: r.text, html: r.html, messageId: `<${row.id}@quadrax>` }
  }

  #outcome(o: AttemptOutcome): AttemptOutcome {
    this.opts.onOutcome?.(o)
    return o
  }
}
