/**
 * A real SMTP server for tests: Debian's aiosmtpd (`apt-get install -y python3-aiosmtpd`, run
 * by /usr/bin/python3), started by the test on a port of its own, as test/support/smtp-server.py.
 * Every message it accepts is parsed there (as a mail client would decode it) and collected
 * here; a recipient starting with "reject" is refused for good (550).
 *
 *   await using smtp = await startSmtpServer()
 *   // SMTP_HOST: '127.0.0.1', SMTP_PORT: String(smtp.port)
 *   const mail = await smtp.next((m) => m.to.includes(email))
 *   await smtp.stop()   // an outage: connections are refused
 *   await smtp.start()  // back, on the same port
 */
import { join } from 'node:path'
import { until } from './until.ts'

export interface ReceivedMail {
  from: string
  to: string[]
  subject: string
  messageId: string
  headerFrom: string
  text: string | null
  html: string | null
}

export interface SmtpServer extends AsyncDisposable {
  port: number
  /** Every message received so far, in order (across restarts). */
  messages: ReceivedMail[]
  /** The first message (received so far or later) that `pred` accepts. */
  next(pred: (m: ReceivedMail) => boolean, what?: string, timeoutMs?: number): Promise<ReceivedMail>
  /** The messages `pred` accepts, received so far. */
  received(pred: (m: ReceivedMail) => boolean): ReceivedMail[]
  /** Stop the server (connections are refused until `start`). */
  stop(): Promise<void>
  /** Start it again on the same port. */
  start(): Promise<void>
  readonly running: boolean
}

const PYTHON = '/usr/bin/python3'
const SCRIPT = join(import.meta.dir, 'smtp-server.py')

function freePort(): number {
  const probe = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const port = probe.port
  probe.stop(true)
  return port
}

export async function startSmtpServer(): Promise<SmtpServer> {
  const check = Bun.spawnSync([PYTHON, '-c', 'import aiosmtpd'])
  if (check.exitCode !== 0) throw new Error(`the SMTP test server needs Debian's aiosmtpd: apt-get install -y python3-aiosmtpd (${PYTHON} -c 'import aiosmtpd' failed)`)
  const port = freePort()
  const messages: ReceivedMail[] = []
  let proc: Bun.Subprocess<'ignore', 'pipe', 'inherit'> | undefined

  const start = async () => {
    if (proc) return
    const p = Bun.spawn([PYTHON, SCRIPT, String(port)], { stdin: 'ignore', stdout: 'pipe', stderr: 'inherit' })
    proc = p
    const { promise: ready, resolve, reject } = Promise.withResolvers<void>()
    void (async () => {
      const decoder = new TextDecoder()
      let pending = ''
      for await (const chunk of p.stdout) {
        pending += decoder.decode(chunk, { stream: true })
        let nl: number
        while ((nl = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, nl)
          pending = pending.slice(nl + 1)
          const msg = JSON.parse(line) as ReceivedMail | { listening: number }
          if ('listening' in msg) resolve()
          else messages.push(msg)
        }
      }
      reject(new Error(`the SMTP test server exited (${p.exitCode ?? p.signalCode}) before it listened`))
    })()
    await ready
  }

  const stop = async () => {
    const p = proc
    if (!p) return
    proc = undefined
    p.kill('SIGTERM')
    await p.exited
  }

  await start()
  const received = (pred: (m: ReceivedMail) => boolean) => messages.filter(pred)
  return {
    port,
    messages,
    received,
    next: (pred, what = 'an e-mail', timeoutMs = 30_000) => until(() => messages.find(pred), what, timeoutMs),
    stop,
    start,
    get running() {
      return proc !== undefined
    },
    [Symbol.asyncDispose]: stop,
  }
}

/** The link of a mail's text body that starts with `prefix` (e.g. the web app's reset page). */
export function linkIn(mail: ReceivedMail, prefix: string): URL {
  const m = new RegExp(`${prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\S*`).exec(mail.text ?? '')
  if (!m) throw new Error(`no link starting with ${prefix} in: ${mail.text}`)
  return new URL(m[0])
}
