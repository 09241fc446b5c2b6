/**
 * The mail engine over SMTP, with nodemailer (https://nodemailer.com/smtp/): SMTP_HOST,
 * SMTP_PORT, SMTP_SECURE (TLS from the first byte, usually port 465; otherwise STARTTLS when
 * the server offers it), SMTP_USER/SMTP_PASS (no login when unset), SMTP_FROM.
 *
 * One connection per message: mail is rare here (a few per run or login event), and a fresh
 * connection per attempt makes a server that went away and came back no special case.
 */
import { createTransport } from 'nodemailer'
import { MailSendError, type Mailer, type MailMessage } from './mailer.ts'

export interface SmtpOptions {
  host: string
  port: number
  secure: boolean
  user?: string
  pass?: string
  from: string
  /** Bound on connecting, the greeting and each read (ms). */
  timeoutMs?: number
}

/** nodemailer's error codes for a failure that concerns the message or its recipient, not the connection. */
const MESSAGE_CODES = new Set(['EENVELOPE', 'EMESSAGE'])

export class SmtpMailer implements Mailer {
  readonly #transport: ReturnType<typeof createTransport>

  constructor(private readonly opts: SmtpOptions) {
    const timeout = opts.timeoutMs ?? 30_000
    this.#transport = createTransport({
      host: opts.host,
      port: opts.port,
      secure: opts.secure,
      auth: opts.user ? { user: opts.user, pass: opts.pass ?? '' } : undefined,
      connectionTimeout: timeout,
      greetingTimeout: timeout,
      socketTimeout: timeout,
    })
  }

  async send(m: MailMessage): Promise<void> {
    try {
      await this.#transport.sendMail({ from: this.opts.from, to: m.to, subject: m.subject, text: m.text, html: m.html, messageId: m.messageId })
    } catch (err) {
      const e = err as { message?: string; code?: string; responseCode?: number }
      // A 5xx about the recipient or the message will not change by trying again; a refused
      // login (EAUTH, 535) or TLS problem is the server's configuration, which can be fixed.
      const permanent = e.responseCode !== undefined && e.responseCode >= 500 && e.responseCode < 600 && MESSAGE_CODES.has(e.code ?? '')
      throw new MailSendError(e.message ?? String(err), permanent, e.code)
    }
  }

  close(): void {
    this.#transport.close()
  }
}
