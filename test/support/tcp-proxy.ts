/**
 * A TCP proxy in front of a real service (PostgreSQL), for outages on demand: `cut()` resets
 * every connection and stops listening, so new ones are refused (a database that went away);
 * `restore()` listens on the same port again (it came back).
 *
 *   await using proxy = tcpProxy({ host: '127.0.0.1', port: 5432 })
 */
import type { Socket } from 'bun'

interface Side {
  peer: Socket<Side> | undefined
  /** Bytes for this socket that it has not taken yet (past a short write). */
  backlog: Uint8Array[]
  /** A client's bytes that came before its upstream connected. */
  early: Uint8Array[]
}

export interface TcpProxy extends AsyncDisposable {
  port: number
  cut(): void
  restore(): void
}

/** Write what `to` will take; keep the rest for its drain. */
function flush(to: Socket<Side>): void {
  while (to.data.backlog.length) {
    const chunk = to.data.backlog[0]!
    const n = to.write(chunk)
    if (n < chunk.byteLength) {
      to.data.backlog[0] = chunk.subarray(Math.max(0, n))
      return
    }
    to.data.backlog.shift()
  }
}

function send(from: Socket<Side>, chunk: Uint8Array): void {
  const to = from.data.peer
  if (!to) return void from.data.early.push(new Uint8Array(chunk))
  to.data.backlog.push(new Uint8Array(chunk))
  flush(to)
}

export function tcpProxy(target: { host: string; port: number }): TcpProxy {
  const sockets = new Set<Socket<Side>>()
  const handlers = {
    data: send,
    drain: (s: Socket<Side>) => flush(s),
    close(s: Socket<Side>) {
      sockets.delete(s)
      s.data.peer?.end()
    },
    error: (s: Socket<Side>) => void s.data.peer?.end(),
  }
  const listen = (port: number) =>
    Bun.listen<Side>({
      hostname: '127.0.0.1',
      port,
      socket: {
        ...handlers,
        open(client) {
          client.data = { peer: undefined, backlog: [], early: [] }
          sockets.add(client)
          Bun.connect<Side>({
            hostname: target.host,
            port: target.port,
            data: { peer: client, backlog: [], early: [] },
            socket: {
              ...handlers,
              open(upstream) {
                sockets.add(upstream)
                upstream.data.backlog.push(...client.data.early)
                client.data.early = []
                client.data.peer = upstream
                flush(upstream)
              },
            },
          }).catch(() => client.end())
        },
      },
    })
  let server: ReturnType<typeof listen> | undefined = listen(0)
  const port = server.port
  const drop = () => {
    // Reset, as a database that went away does: no orderly goodbye on either side.
    for (const s of sockets) s.terminate()
    sockets.clear()
  }
  return {
    port,
    cut() {
      // Stop listening too: new connections are refused (ECONNREFUSED), as on a stopped server.
      server?.stop(true)
      server = undefined
      drop()
    },
    restore() {
      server ??= listen(port)
    },
    async [Symbol.asyncDispose]() {
      server?.stop(true)
      drop()
    },
  }
}
