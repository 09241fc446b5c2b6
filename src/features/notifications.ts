/**
 * The notifications feature: the `notifier` actor kind (src/actors/notifier.ts), the mail
 * engine (SMTP through nodemailer, when SMTP_HOST is set) with its delivery jobs (BullMQ with
 * REDIS_URL, in-process alone), /api/notifications and /api/users/me/notifications.
 *
 * What sets things moving, on every node:
 * - committed actor events that may call for a notification → a `sync` of the user's notifier
 *   (with a message id taken from the event, so the nodes that all see it make one turn);
 * - the NOTIFY every new notification or mail sends at commit (src/store/notifications-mail.ts)
 *   → a `sync` to announce a notification recorded outside an actor, a job for a mail;
 * - a sweep every MAIL_SWEEP_INTERVAL_MS, and at start → a `sync` for every user whose notifier
 *   is behind, a job for every mail that is due (its job ran out of attempts, or no node heard
 *   its NOTIFY). Nothing depends on a trigger arriving: the sweep finds what any of them missed.
 */
import { concernsNotifier, NOTIFIER_KIND, notifierActor } from '../actors/notifier.ts'
import { MailDelivery } from '../engines/mail/delivery.ts'
import { SmtpMailer } from '../engines/mail/nodemailer.ts'
import { BullMailQueue, LocalMailQueue, type MailQueue } from '../engines/mail/queue.ts'
import { notificationRoutes } from '../http/notifications.ts'
import { dueMails, NOTIFY_CHANNEL, sealKey, type NotifyPayload } from '../store/notifications-mail.ts'
import { usersBehind } from '../store/notifications.ts'
import type { Feature, FeatureContext } from './feature.ts'

/** Mail attempts running at once on one node. */
const MAIL_CONCURRENCY = 4
/** Rows one sweep looks at, of each sort (more wait for the next sweep). */
const SWEEP_BATCH = 1000

export function notificationsFeature(ctx: FeatureContext): Feature {
  const { config, sql, logger, actors, metrics } = ctx.http
  const log = logger.child({ component: 'notifications' })
  const smtp = config.smtp
  const kind = notifierActor({ frontendUrl: config.frontendUrl, mailAvailable: smtp.host !== undefined, storageQuotaBytes: config.datakits.storageQuotaBytes })
  const attempts = metrics.counter('mail_attempts_total', 'Attempts at sending a mail of the outbox, by outcome (sent, retry, failed, skipped: sent or claimed elsewhere)', ['outcome'])
  const sweeps = metrics.counter('notification_sweeps_total', 'Sweeps for notifications and mail that the live triggers missed')

  let mailer: SmtpMailer | undefined
  let queue: MailQueue | undefined
  if (smtp.host !== undefined) {
    mailer = new SmtpMailer({ host: smtp.host, port: smtp.port, secure: smtp.secure, user: smtp.user, pass: smtp.pass, from: smtp.from })
    const delivery = new MailDelivery({
      sql,
      mailer,
      nodeId: actors.nodeId,
      frontendUrl: config.frontendUrl,
      key: sealKey(config.jwt.secret),
      retry: { baseMs: config.mail.retryBaseMs, maxMs: config.mail.retryMaxMs, giveUpMs: config.mail.giveUpMs },
      // Past the mailer's timeouts (30 s each for connecting, the greeting and every read).
      leaseMs: 5 * 60_000,
      logger: log,
      onOutcome: (outcome) => attempts.inc({ outcome }),
    })
    const opts = { attempt: (id: string) => delivery.attempt(id), attempts: config.mail.attemptsPerJob, backoffMs: config.mail.retryBaseMs, maxBackoffMs: config.mail.retryMaxMs, concurrency: MAIL_CONCURRENCY, logger: log }
    queue = config.redisUrl ? new BullMailQueue(config.redisUrl, config.redisPrefix.replace(/:+$/, ''), opts) : new LocalMailQueue(opts)
  }

  const sync = (userId: string, messageId?: string) => {
    try {
      actors.tell(NOTIFIER_KIND, userId, { type: 'sync' }, messageId ? { messageId } : {})
    } catch (err) {
      log.warn({ err, userId }, 'notifier sync refused')
    }
  }
  const enqueue = (id: string) => queue?.add(id).catch((err) => log.warn({ err, mail: id }, 'mail job not added; the sweep adds it later'))

  let sweeping = false
  const sweep = async () => {
    if (sweeping) return
    sweeping = true
    try {
      for (const userId of await usersBehind(sql, SWEEP_BATCH)) sync(userId)
      if (queue) for (const id of await dueMails(sql, SWEEP_BATCH)) await enqueue(id)
      sweeps.inc()
    } catch (err) {
      log.warn({ err }, 'notification sweep failed')
    } finally {
      sweeping = false
    }
  }

  let unsubscribe: (() => void) | undefined
  let unlisten: (() => Promise<void>) | undefined
  let timer: ReturnType<typeof setInterval> | undefined
  return {
    name: 'notifications',
    actors: [kind],
    routes: [notificationRoutes(ctx.http)],
    async start() {
      // The one step that needs the database first: a start that fails here (the server retries
      // it) has started nothing else yet.
      const listening = await sql.listen(NOTIFY_CHANNEL, (text) => {
        let p: NotifyPayload
        try {
          p = JSON.parse(text) as NotifyPayload
        } catch {
          return log.warn({ text }, 'bad notification NOTIFY payload')
        }
        if (p.u) sync(p.u, p.n ? `sync:notification:${p.n}` : undefined)
        if (p.m) void enqueue(p.m)
      })
      unlisten = () => listening.unlisten()
      await queue?.start()
      unsubscribe = actors.subscribe((e) => {
        if (concernsNotifier(e)) sync(e.topic.slice('user:'.length), `sync:${e.topic}#${e.seq}`)
      })
      timer = setInterval(() => void sweep(), config.mail.sweepIntervalMs)
      void sweep()
    },
    async stop() {
      clearInterval(timer)
      unsubscribe?.()
      await unlisten?.().catch(() => {})
      await queue?.stop()
      mailer?.close()
    },
  }
}
