/**
 * A WebSocket test client for /ws: collects every frame and lets a test await the one it
 * wants (no sleeps).
 *
 *   const c = await wsClient(t.url, token)
 *   c.send({ op: 'subscribe', topic: `workstation:${id}`, since: 0 })
 *   const ev = await c.next((m) => m.op === 'event' && m.type === 'status' && m.data.status === 'RUNNING')
 */
export interface WsClient {
  ws: WebSocket
  messages: any[]
  send(msg: unknown): void
  /** Resolves with the first frame (already received or future) matching `pred`. */
  next(pred: (m: any) => boolean, timeoutMs?: number): Promise<any>
  /** Resolves when the socket closes, with its code and reason. */
  closed: Promise<{ code: number; reason: string }>
  close(): void
}

export async function wsClient(baseUrl: string, token?: string, opts: { path?: string; headers?: Record<string, string>; protocols?: string[] } = {}): Promise<WsClient> {
  const url = baseUrl.replace(/^http/, 'ws') + (opts.path ?? '/ws')
  const headers: Record<string, string> = { ...(opts.headers ?? {}) }
  if (token) headers.authorization = `Bearer ${token}`
  const ws = new WebSocket(url, { headers, protocols: opts.protocols } as unknown as string[])
  const messages: any[] = []
  const waiters: { pred: (m: any) => boolean; resolve: (m: any) => void; from: number }[] = []
  let resolveClosed!: (v: { code: number; reason: string }) => void
  const closed = new Promise<{ code: number; reason: string }>((r) => (resolveClosed = r))
  ws.onmessage = (e) => {
    let m: any
    try {
      m = typeof e.data === 'string' ? JSON.parse(e.data) : e.data
    } catch {
      m = e.data
    }
    messages.push(m)
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (waiters[i]!.pred(m)) {
        waiters[i]!.resolve(m)
        waiters.splice(i, 1)
      }
    }
  }
  ws.onclose = (e) => resolveClosed({ code: e.code, reason: e.reason })
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve()
    ws.onerror = () => reject(new Error(`WebSocket ${url} failed to open`))
    closed.then((c) => reject(new Error(`WebSocket closed before open: ${c.code} ${c.reason}`)))
  })
  return {
    ws,
    messages,
    send: (msg) => ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg)),
    next(pred, timeoutMs = 15_000) {
      const found = messages.find(pred)
      if (found !== undefined) return Promise.resolve(found)
      return new Promise((resolve, reject) => {
        // The timer is cleared when the frame arrives, so it never keeps a process alive.
        const timer = setTimeout(() => {
          const i = waiters.indexOf(w)
          if (i >= 0) {
            waiters.splice(i, 1)
            reject(new Error(`no matching WebSocket message within ${timeoutMs} ms; got ${JSON.stringify(messages.slice(-5))}`))
          }
        }, timeoutMs)
        const w = {
          pred,
          resolve: (m: any) => {
            clearTimeout(timer)
            resolve(m)
          },
          from: messages.length,
        }
        waiters.push(w)
      })
    },
    closed,
    close: () => ws.close(),
  }
}
