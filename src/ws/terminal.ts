/**
 * Container sessions over WebSockets: terminals (docker exec with a TTY) and log following,
 * for workstations and VMs.
 *
 * WS <prefix>/:id/terminal[?session=<id>&cols=&rows=]
 *   Authenticated at the upgrade like /ws (Authorization header, `bearer.<token>`
 *   subprotocol, or a single-use `?ticket=`); a stranger gets 401/404 before any upgrade, and
 *   only the owner or an admin gets a shell (a VIEWER: 403). The first frame is text:
 *   `{"op":"session","sessionId":"…","reattached":false}`. Then screen output arrives as
 *   binary frames; text or binary frames from the client are keyboard input, except a text
 *   frame holding `{"op":"resize","cols":…,"rows":…}`. When the shell exits: `{"op":"exit",
 *   "code":…}` and close 1000.
 *
 *   Re-attach (Coder's reconnecting PTY): a dropped connection leaves the shell running for the
 *   grace period (TERMINAL_REATTACH_GRACE_MS); connecting again with `?session=<id>` attaches
 *   to the same shell and first replays the recent output (a bounded ring). After the grace
 *   period the exec is ended. A session lives on the node that started it (sticky routing in
 *   a cluster).
 *
 * WS <prefix>/:id/logs[?tail=N]
 *   The last N lines, then new ones as text frames `{"op":"log","stream","line","at"}`, and
 *   `{"op":"end"}` when the container stops. A line longer than CONTAINER_LOG_LINE_MAX_BYTES
 *   comes in pieces, each but the last with `"partial":true`. One follow streams at most
 *   CONTAINER_LOG_FOLLOW_MAX_BYTES of output: past it a notice (`"notice":true`, stream
 *   stderr) says so, the rest is only counted, and at the end a second notice and the end frame
 *   (`{"op":"end","droppedBytes":N}`) give the count.
 *
 * Terminals and log streams attach to a running container and never change its lifecycle, so
 * they are served here at the edge, after an SQL ownership check, rather than in the actor's
 * turns (which must stay short).
 *
 * Every frame goes out through the typed senders of ./container-protocol.ts (its schemas are
 * the frames' definition, and the AsyncAPI document's); handlers return nothing (see ./routes.ts).
 */
import { Elysia } from 'elysia'
import type { ServerWebSocket } from 'bun'
import { AppError, ConflictError, ForbiddenError, NotFoundError } from '../core/errors.ts'
import { isUuid } from '../core/ids.ts'
import type { Logger } from '../core/logger.ts'
import { decide, roleMay } from '../auth/policy.ts'
import type { Principal } from '../auth/principal.ts'
import { engineUnavailable, type ContainerEngine, type ExecSession, type LogCut } from '../engines/containers/engine.ts'
import type { ComputeStatus } from '../store/compute.ts'
import { authenticateUpgrade, TooManyConnectionsError, type UpgradeAuth, type UpgradeGate } from './auth.ts'
import {
  LOG_TAIL,
  LOGS_CLOSE,
  logsRoute,
  parseResize,
  sendLog,
  sendOutput,
  sendTerminal,
  TERMINAL_CLOSE,
  TERMINAL_DEFAULTS,
  TERMINAL_SIZE,
  terminalRoute,
} from './container-protocol.ts'

type Socket = ServerWebSocket<unknown>

/** bash where the image has it, sh otherwise. */
const SHELL = ['/bin/sh', '-c', 'if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi']

export interface TerminalTarget {
  kind: 'workstation' | 'vm'
  id: string
}

interface Session {
  id: string
  userId: string
  target: TerminalTarget
  exec: ExecSession | null
  socket: Socket | null
  /** Input typed before the exec was ready. */
  pending: Array<string | Buffer>
  /** Recent output, replayed on re-attach. */
  backlog: Buffer[]
  backlogBytes: number
  grace: ReturnType<typeof setTimeout> | undefined
  paused: boolean
  ended: boolean
}

export interface TerminalOptions {
  engine: ContainerEngine
  /** How long a detached shell waits for a re-attach. */
  graceMs: number
  logger: Logger
  /** Terminal input counts as activity (idle culling). */
  onActivity?: (target: TerminalTarget) => void
  /** Bytes of output kept for a re-attach. Default 64 KiB. */
  backlogBytes?: number
  /** Unsent bytes after which the shell's output is paused until the socket drains. Default 1 MiB. */
  maxBufferedBytes?: number
  /** Live sessions per user on this node. Default 10. */
  maxSessionsPerUser?: number
}

/** Live terminal sessions of one node: attach, input, detach with a grace period, re-attach. */
export class TerminalSessions {
  private readonly sessions = new Map<string, Session>()
  private readonly bySocket = new Map<Socket, Session>()
  private readonly backlogLimit: number
  private readonly bufferLimit: number
  readonly maxPerUser: number

  constructor(private readonly opts: TerminalOptions) {
    this.backlogLimit = opts.backlogBytes ?? TERMINAL_DEFAULTS.backlogBytes
    this.bufferLimit = opts.maxBufferedBytes ?? TERMINAL_DEFAULTS.outputPauseBytes
    this.maxPerUser = opts.maxSessionsPerUser ?? TERMINAL_DEFAULTS.sessionsPerUser
    if (opts.graceMs <= 0) throw new Error('graceMs must be > 0')
  }

  get size(): number {
    return this.sessions.size
  }

  countFor(userId: string): number {
    let n = 0
    for (const s of this.sessions.values()) if (s.userId === userId) n++
    return n
  }

  /** Is `sessionId` a live session of this user on this target (a re-attach, not a new session)? */
  canReattach(sessionId: string | undefined, userId: string, target: TerminalTarget): boolean {
    const s = sessionId ? this.sessions.get(sessionId) : undefined
    return s !== undefined && !s.ended && s.userId === userId && s.target.kind === target.kind && s.target.id === target.id
  }

  /** A socket was upgraded: re-attach to its session, or start a new shell. */
  async open(socket: Socket, userId: string, target: TerminalTarget, opts: { sessionId?: string; cols?: number; rows?: number }): Promise<void> {
    if (this.canReattach(opts.sessionId, userId, target)) {
      const s = this.sessions.get(opts.sessionId!)!
      clearTimeout(s.grace)
      s.grace = undefined
      if (s.socket) {
        this.bySocket.delete(s.socket)
        s.socket.close(TERMINAL_CLOSE.attachedElsewhere, 'the session was attached elsewhere')
      }
      s.socket = socket
      this.bySocket.set(socket, s)
      sendTerminal(socket, { op: 'session', sessionId: s.id, reattached: true })
      if (s.backlogBytes > 0) sendOutput(socket, Buffer.concat(s.backlog))
      if (opts.cols && opts.rows) void s.exec?.resize(opts.cols, opts.rows).catch(() => {})
      this.resume(s)
      return
    }
    const s: Session = {
      id: crypto.randomUUID(),
      userId,
      target,
      exec: null,
      socket,
      pending: [],
      backlog: [],
      backlogBytes: 0,
      grace: undefined,
      paused: false,
      ended: false,
    }
    this.sessions.set(s.id, s)
    this.bySocket.set(socket, s)
    sendTerminal(socket, { op: 'session', sessionId: s.id, reattached: false })
    let exec: ExecSession
    try {
      exec = await this.opts.engine.exec({ kind: target.kind, entityId: target.id }, { cmd: SHELL, cols: opts.cols, rows: opts.rows })
    } catch (err) {
      const message = err instanceof AppError && err.expose ? err.message : 'the terminal could not be started'
      if (!(err instanceof AppError && err.expose)) this.opts.logger.error({ err, target }, 'terminal exec failed')
      s.ended = true
      this.sessions.delete(s.id)
      if (s.socket) {
        sendTerminal(s.socket, { op: 'error', message })
        this.bySocket.delete(s.socket)
        s.socket.close(TERMINAL_CLOSE.failed, 'terminal failed')
      }
      return
    }
    if (s.ended) {
      // Closed for good while the exec was being created (grace over, or server stopping).
      exec.close()
      return
    }
    s.exec = exec
    exec.stream.on('data', (chunk: Buffer) => this.output(s, chunk))
    exec.stream.on('error', () => {})
    void exec.wait().then(
      (code) => this.end(s, code),
      () => this.end(s, null),
    )
    for (const input of s.pending.splice(0)) exec.stream.write(input)
  }

  /** A frame from the client: keyboard input, or a resize. */
  input(socket: Socket, message: string | Buffer): void {
    const s = this.bySocket.get(socket)
    if (!s || s.ended) return
    const size = typeof message === 'string' ? parseResize(message) : undefined
    if (size) {
      if (s.exec) void s.exec.resize(size.cols, size.rows).catch(() => {})
      return
    }
    this.opts.onActivity?.(s.target)
    if (s.exec) s.exec.stream.write(message)
    else s.pending.push(message)
  }

  /** The socket can take more: let the shell's output flow again. */
  drain(socket: Socket): void {
    const s = this.bySocket.get(socket)
    if (s && socket.getBufferedAmount() < this.bufferLimit / 2) this.resume(s)
  }

  /** The socket closed: keep the shell for the grace period. */
  detach(socket: Socket): void {
    const s = this.bySocket.get(socket)
    this.bySocket.delete(socket)
    if (!s || s.socket !== socket) return
    s.socket = null
    if (s.ended) return
    // Output keeps being read into the backlog while nobody watches, so the shell never blocks.
    this.resume(s)
    s.grace = setTimeout(() => this.kill(s), this.opts.graceMs)
  }

  /** End every session (the server is stopping). */
  closeAll(): void {
    for (const s of [...this.sessions.values()]) {
      s.socket?.close(TERMINAL_CLOSE.shutdown, 'server shutting down')
      this.kill(s)
    }
  }

  private kill(s: Session): void {
    if (s.ended) return
    s.ended = true
    clearTimeout(s.grace)
    this.sessions.delete(s.id)
    s.exec?.close()
  }

  private output(s: Session, chunk: Buffer): void {
    s.backlog.push(chunk)
    s.backlogBytes += chunk.length
    while (s.backlogBytes > this.backlogLimit && s.backlog.length > 1) s.backlogBytes -= s.backlog.shift()!.length
    const socket = s.socket
    if (!socket) return
    sendOutput(socket, chunk)
    if (socket.getBufferedAmount() > this.bufferLimit && !s.paused) {
      s.paused = true
      s.exec?.stream.pause()
    }
  }

  private resume(s: Session): void {
    if (!s.paused) return
    s.paused = false
    s.exec?.stream.resume()
  }

  private end(s: Session, code: number | null): void {
    const socket = s.socket
    const wasLive = !s.ended
    s.ended = true
    clearTimeout(s.grace)
    this.sessions.delete(s.id)
    if (socket && wasLive) {
      this.bySocket.delete(socket)
      sendTerminal(socket, { op: 'exit', code })
      socket.close(TERMINAL_CLOSE.exited, 'shell exited')
    }
  }
}

export interface ContainerSocketOptions {
  /** How upgrades are authenticated (as on /ws). */
  gate: UpgradeGate
  /** Unsent bytes after which a log follower is closed as a slow consumer. */
  maxBufferedBytes: number
  kind: 'workstation' | 'vm'
  /** `/ws/workstations` or `/ws/vms`. */
  prefix: string
  /** "Workstation", "VM". */
  label: string
  engine: ContainerEngine | undefined
  /** The entity's owner and status, or undefined when it does not exist. */
  find(id: string): Promise<{ ownerId: string; status: ComputeStatus } | undefined>
  /** Undefined when there is no engine. */
  sessions: TerminalSessions | undefined
  /** An API read of the entity: counts as activity. */
  onActivity?: (target: TerminalTarget) => void
}

interface Attached {
  auth: UpgradeAuth
  id: string
  sessionId?: string
  cols?: number
  rows?: number
  tail: number
}

/** What a log follower is told when its byte budget runs out, and when it ends. */
function followCutNotice(cut: LogCut): string {
  return cut.final
    ? `[quadrax] ${cut.droppedBytes} bytes of output were dropped: this log stream's limit is ${cut.maxBytes} bytes (CONTAINER_LOG_FOLLOW_MAX_BYTES)`
    : `[quadrax] output past ${cut.maxBytes} bytes is not streamed (CONTAINER_LOG_FOLLOW_MAX_BYTES); reconnect to follow on, or read the latest lines with GET …/logs?tail=`
}

const int = (v: unknown, min: number, max: number): number | undefined => {
  const n = typeof v === 'string' && /^\d{1,6}$/.test(v) ? Number(v) : undefined
  return n !== undefined && n >= min && n <= max ? n : undefined
}

/** The terminal and log-follow routes of one kind. */
export function containerSocketRoutes(opts: ContainerSocketOptions) {
  const followers = new Map<Socket, AbortController>()

  /** Who is asking, and may they? 401 / 404 / 409 / 503 before any upgrade. */
  const admit = async (request: Request, id: string, needsRunning: boolean): Promise<{ auth: UpgradeAuth; principal: Principal }> => {
    const auth = await authenticateUpgrade(opts.gate, request)
    const p = auth.principal
    // The access policy, as HTTP routes ask it: a shell is a change (a VIEWER gets 403, even
    // on their own workstation); following logs is a read. A stranger learns nothing, not even
    // that the id exists (404).
    const action = needsRunning ? 'shell' : 'read'
    if (!roleMay(p.role, opts.kind, action)) throw new ForbiddenError('A VIEWER is read-only: a terminal needs the USER or ADMIN role')
    const entity = isUuid(id) ? await opts.find(id) : undefined
    if (!entity || decide(p, action, opts.kind, entity.ownerId) !== 'allow') throw new NotFoundError(opts.label)
    if (!opts.engine || !opts.sessions) throw engineUnavailable()
    if (needsRunning && entity.status !== 'RUNNING') throw new ConflictError(`${opts.label} is ${entity.status.toLowerCase()}; start it to open a terminal`)
    return { auth, principal: p }
  }

  return new Elysia()
    .ws(`${opts.prefix}/:id/terminal`, {
      detail: terminalRoute(opts.kind),
      async upgrade(ctx) {
        const id = ctx.params.id ?? ''
        const query = ctx.query as Record<string, string | undefined>
        const { auth, principal } = await admit(ctx.request, id, true)
        const sessions = opts.sessions!
        const sessionId = query.session
        if (!sessions.canReattach(sessionId, principal.userId, { kind: opts.kind, id }) && sessions.countFor(principal.userId) >= sessions.maxPerUser) {
          throw new TooManyConnectionsError(sessions.maxPerUser)
        }
        if (auth.protocol) (ctx.set.headers as Record<string, string>)['sec-websocket-protocol'] = auth.protocol
        const size = (v: string | undefined) => int(v, TERMINAL_SIZE.min, TERMINAL_SIZE.max)
        const attached: Attached = { auth, id, sessionId, cols: size(query.cols), rows: size(query.rows), tail: 0 }
        ;(ctx as unknown as { terminal: Attached }).terminal = attached
      },
      open(ws) {
        const raw = ws.raw as Socket
        const data = raw.data as { terminal: Attached; message?: unknown }
        const a = data.terminal
        // Elysia turns text frames that look like JSON, numbers or booleans into values before
        // a `message` handler sees them; keyboard input must arrive byte for byte, so this
        // socket's frames go straight to the session instead (Elysia's Bun handler calls
        // `ws.data.message`).
        data.message = (socket: Socket, message: string | Buffer) => opts.sessions!.input(socket, message)
        void opts.sessions!.open(raw, a.auth.principal.userId, { kind: opts.kind, id: a.id }, { sessionId: a.sessionId, cols: a.cols, rows: a.rows })
      },
      message() {
        // Replaced per socket in open() (see there).
      },
      drain(ws) {
        opts.sessions?.drain(ws.raw as Socket)
      },
      close(ws) {
        opts.sessions?.detach(ws.raw as Socket)
      },
    })
    .ws(`${opts.prefix}/:id/logs`, {
      detail: logsRoute(opts.kind),
      async upgrade(ctx) {
        const id = ctx.params.id ?? ''
        const query = ctx.query as Record<string, string | undefined>
        const { auth } = await admit(ctx.request, id, false)
        if (auth.protocol) (ctx.set.headers as Record<string, string>)['sec-websocket-protocol'] = auth.protocol
        ;(ctx as unknown as { terminal: Attached }).terminal = { auth, id, tail: int(query.tail, 0, LOG_TAIL.max) ?? LOG_TAIL.default }
      },
      open(ws) {
        const raw = ws.raw as Socket
        const a = (raw.data as { terminal: Attached }).terminal
        const abort = new AbortController()
        followers.set(raw, abort)
        opts.onActivity?.({ kind: opts.kind, id: a.id })
        void (async () => {
          try {
            let droppedBytes = 0
            for await (const l of opts.engine!.followLogs({ kind: opts.kind, entityId: a.id }, { tail: a.tail, signal: abort.signal })) {
              if ('cut' in l) {
                droppedBytes = l.droppedBytes
                sendLog(raw, { op: 'log', stream: 'stderr', line: followCutNotice(l), at: new Date().toISOString(), notice: true })
              } else {
                sendLog(raw, { op: 'log', stream: l.stream, line: l.line, at: l.at ? l.at.toISOString() : null, ...(l.partial ? { partial: true } : {}) })
              }
              if (raw.getBufferedAmount() > opts.maxBufferedBytes) {
                raw.close(LOGS_CLOSE.slow, 'slow consumer')
                return
              }
            }
            if (!abort.signal.aborted) {
              sendLog(raw, droppedBytes > 0 ? { op: 'end', droppedBytes } : { op: 'end' })
              raw.close(LOGS_CLOSE.ended, 'container stopped')
            }
          } catch (err) {
            if (abort.signal.aborted) return
            const missing = err instanceof NotFoundError
            sendLog(raw, missing ? { op: 'end' } : { op: 'error', message: err instanceof AppError && err.expose ? err.message : 'log stream failed' })
            raw.close(missing ? LOGS_CLOSE.ended : LOGS_CLOSE.failed, missing ? 'no container' : 'log stream failed')
          } finally {
            followers.delete(raw)
          }
        })()
      },
      close(ws) {
        followers.get(ws.raw as Socket)?.abort()
      },
    })
}
