/**
 * The WebSocket clients of bench/ws.ts, in their own process: opens N sockets to URL,
 * subscribes each (when SUBSCRIBE is a JSON frame), and reports on stdout (JSON lines):
 * {"ready":N} once all are subscribed, then {"done":…} when every socket received EXPECT
 * events, with latencies computed from each event's `sentAt` (epoch ms, same machine).
 */
const url = process.env.URL!
const n = Number(process.env.SOCKETS ?? 1000)
const expect = Number(process.env.EXPECT ?? 1000)
const subscribe = process.env.SUBSCRIBE
const token = process.env.TOKEN

const now = () => performance.timeOrigin + performance.now()
const latencies = new Float64Array(n * expect)
let received = 0
let readyCount = 0
let firstAt = 0
let lastAt = 0
let finished = 0

for (let i = 0; i < n; i++) {
  const ws = new WebSocket(url, token ? ({ headers: { authorization: `Bearer ${token}` } } as unknown as string[]) : undefined)
  let count = 0
  ws.onopen = () => {
    if (subscribe) ws.send(subscribe)
    else if (++readyCount === n) console.log(JSON.stringify({ ready: n }))
  }
  ws.onmessage = (e) => {
    const text = String(e.data)
    if (text.includes('"op":"ack"')) {
      if (++readyCount === n) console.log(JSON.stringify({ ready: n }))
      return
    }
    const at = now()
    const sentAt = Number(/"sentAt":([\d.]+)/.exec(text)?.[1])
    if (!firstAt) firstAt = at
    lastAt = at
    latencies[received++] = at - sentAt
    if (++count === expect && ++finished === n) report()
  }
  ws.onerror = () => console.error('socket error')
}

function report() {
  const l = latencies.subarray(0, received).sort()
  const q = (p: number) => l[Math.min(l.length - 1, Math.floor(p * l.length))]!
  console.log(JSON.stringify({ done: true, received, seconds: (lastAt - firstAt) / 1000, p50: q(0.5), p99: q(0.99) }))
  process.exit(0)
}
