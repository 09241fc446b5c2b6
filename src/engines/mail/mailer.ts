/**
 * The mail engine's interface: hand one message to a mail server. The SMTP implementation is
 * ./nodemailer.ts; the durable part (outbox, retries, once-only) is ./delivery.ts.
 */

export interface MailMessage {
  to: string
  subject: string
  text: string
  html: string
  /** The Message-ID, from the outbox row's id: a copy sent twice (a node died mid-send) is recognisably the same message. */
  messageId: string
}

export interface Mailer {
  /** Resolves once the server accepted the message; rejects with a MailSendError. */
  send(message: MailMessage): Promise<void>
  close(): void
}

/**
 * The server did not take the message. `permanent`: it refused it for good (a 5xx reply to the
 * recipient or the message); anything else (no connection, a timeout, a 4xx, a login refused
 * while credentials are being fixed) may pass, and the message is tried again later.
 */
export class MailSendError extends Error {
  override name = 'MailSendError'
  constructor(
    message: string,
    readonly permanent: boolean,
    readonly code?: string,
  ) {
    super(message)
  }
}
