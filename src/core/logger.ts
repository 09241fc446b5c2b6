import pino, { type Logger } from 'pino'

export type { Logger }

/**
 * Structured logs: one JSON object per line on stdout (pino), each key once. Secrets never
 * reach a log line.
 */
export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  const root = pino({
    level,
    base: { pid: process.pid, ...bindings },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: ['password', '*.password', 'token', '*.token', 'refreshToken', '*.refreshToken', 'authorization', '*.authorization'], censor: '[redacted]' },
  })
  uniqueBindings(root)
  return root
}

/**
 * pino appends a child's bindings to its parent's as they are, so a child that sets a key its
 * parent already has (`component`: the actor system's logger handed to an actor kind that
 * names its own) writes that key twice on every line, and JSON readers keep whichever of the
 * two they like. A child that sets such a key is made from the root instead, with the bindings
 * merged: each key once, the child's value winning. (pino makes a child with
 * `Object.create(parent)`, so every descendant of the root inherits this `child`.)
 */
function uniqueBindings(root: Logger): void {
  const plain = root.child as unknown as (this: Logger, bindings: pino.Bindings, options?: pino.ChildLoggerOptions) => Logger
  const fromRoot = Object.keys(root.bindings())
  root.child = function (this: Logger, bindings: pino.Bindings, options?: pino.ChildLoggerOptions): Logger {
    const inherited = this.bindings()
    if (!Object.keys(bindings).some((k) => k in inherited)) return plain.call(this, bindings, options)
    const merged: pino.Bindings = { ...inherited, ...bindings }
    for (const k of fromRoot) if (!(k in bindings)) delete merged[k]
    return plain.call(root, merged, { level: this.level, ...options })
  } as unknown as Logger['child']
}
