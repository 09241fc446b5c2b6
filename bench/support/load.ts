/**
 * Shared load-generation for the HTTP benchmarks: wrk when installed (lighter on a 2-core
 * machine), otherwise autocannon's CLI under Node; BENCH_TOOL=wrk|autocannon chooses. Every
 * target is loaded with the same client, connection count and duration, so ratios compare
 * like with like — but not across tools: autocannon's own CPU caps the raw baseline (about
 * 90k req/s here against wrk's 160k), so its ratios come out higher.
 */
import { readFileSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface LoadResult {
  rps: number
  p50: number
  p99: number
  non2xx: number
  /** With `LoadOptions.pid`: that process's CPU time (every thread) per request served, in µs. */
  cpuUs?: number
}

export interface LoadOptions {
  connections: number
  durationSeconds: number
  headers?: Record<string, string>
  /** Default GET. With `body`, every request sends it (set its content-type in `headers`). */
  method?: string
  body?: string
  /**
   * The serving process: its CPU time per request is measured too. Steadier than requests/s
   * on a shared machine (other tenants take wall time, not this process's CPU time).
   */
  pid?: number
}

const clockTicks = Number(new TextDecoder().decode(Bun.spawnSync(['getconf', 'CLK_TCK']).stdout).trim()) || 100

/** CPU time (user + system, every thread) of process `pid`, in ms. */
export function cpuOf(pid: number): number {
  // Fields after the command name (which is in parentheses and may hold spaces): utime is the 12th, stime the 13th.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / clockTicks
}

export async function load(url: string, opts: LoadOptions): Promise<LoadResult> {
  const cpu0 = opts.pid === undefined ? 0 : cpuOf(opts.pid)
  const r = await generate(url, opts)
  if (opts.pid !== undefined) r.cpuUs = ((cpuOf(opts.pid) - cpu0) * 1000) / (r.rps * opts.durationSeconds)
  return r
}

const chosen = process.env.BENCH_TOOL
if (chosen !== undefined && chosen !== 'wrk' && chosen !== 'autocannon') throw new Error(`BENCH_TOOL must be wrk or autocannon, not ${JSON.stringify(chosen)}`)
const wrk = chosen === 'autocannon' ? null : Bun.which('wrk')
if (chosen === 'wrk' && !wrk) throw new Error('BENCH_TOOL=wrk but wrk is not installed (apt-get install wrk)')
export const loadTool = wrk ? 'wrk' : 'autocannon'

function ms(text: string): number {
  const m = /([\d.]+)(us|ms|s)/.exec(text)
  if (!m) return NaN
  const v = Number(m[1])
  return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v
}

async function generate(url: string, opts: LoadOptions): Promise<LoadResult> {
  if (wrk) {
    const args = [wrk, '-t2', `-c${opts.connections}`, `-d${opts.durationSeconds}s`, '--latency']
    for (const [k, v] of Object.entries(opts.headers ?? {})) args.push('-H', `${k}: ${v}`)
    // wrk takes a method and body only from a Lua script.
    const script = opts.method || opts.body !== undefined ? join(tmpdir(), `wrk-${crypto.randomUUID()}.lua`) : undefined
    if (script) {
      await Bun.write(script, `wrk.method = ${JSON.stringify(opts.method ?? 'POST')}\nwrk.body = ${JSON.stringify(opts.body ?? '')}\n`)
      args.push('-s', script)
    }
    args.push(url)
    const p = Bun.spawn(args, { stdout: 'pipe', stderr: 'inherit' })
    const out = await new Response(p.stdout).text()
    await p.exited
    if (script) await rm(script, { force: true })
    const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN)
    const p50 = ms(/\s50%\s+(\S+)/.exec(out)?.[1] ?? '')
    const p99 = ms(/\s99%\s+(\S+)/.exec(out)?.[1] ?? '')
    const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0)
    return { rps, p50, p99, non2xx }
  }
  const cli = join(import.meta.dir, '../../node_modules/autocannon/autocannon.js')
  const args = ['node', cli, '--json', '-c', String(opts.connections), '-d', String(opts.durationSeconds)]
  for (const [k, v] of Object.entries(opts.headers ?? {})) args.push('-H', `${k}=${v}`)
  if (opts.method) args.push('-m', opts.method)
  if (opts.body !== undefined) args.push('-b', opts.body)
  args.push(url)
  const p = Bun.spawn(args, { stdout: 'pipe', stderr: 'ignore' })
  const out = await new Response(p.stdout).text()
  await p.exited
  const j = JSON.parse(out) as { requests: { average: number }; latency: { p50: number; p99: number }; non2xx: number }
  return { rps: j.requests.average, p50: j.latency.p50, p99: j.latency.p99, non2xx: j.non2xx }
}

/**
 * The results table of targets measured against a raw baseline loaded before and after them
 * (both with `pid`): prints its header; `row` prints one target, `ratio` gives a target's
 * ratio to the baseline by requests/s and by CPU time per request.
 */
export function versusBaseline(before: LoadResult, after: LoadResult, nameWidth: number) {
  const baseRps = (before.rps + after.rps) / 2
  const baseCpu = (before.cpuUs! + after.cpuUs!) / 2
  console.log(`${'target'.padEnd(nameWidth)} ${'req/s'.padStart(10)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'non-2xx'.padStart(8)} ${'× raw'.padStart(7)} ${'CPU µs/req'.padStart(11)} ${'CPU × raw'.padStart(10)}`)
  return {
    row: (name: string, r: LoadResult) =>
      console.log(
        `${name.padEnd(nameWidth)} ${fmt(r.rps).padStart(10)} ${fmt(r.p50, 2).padStart(8)} ${fmt(r.p99, 2).padStart(8)} ${String(r.non2xx).padStart(8)} ${(r.rps / baseRps).toFixed(2).padStart(7)} ${fmt(r.cpuUs!, 2).padStart(11)} ${(baseCpu / r.cpuUs!).toFixed(2).padStart(10)}`,
      ),
    ratio: (r: LoadResult) => `${(r.rps / baseRps).toFixed(2)}× (by each server's CPU time per request: ${(baseCpu / r.cpuUs!).toFixed(2)}×)`,
  }
}

export function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
}

/** Wait until `url` answers 200 (or the process dies). */
export async function waitHealthy(url: string, proc?: Bun.Subprocess, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (Date.now() < end) {
    if (proc && proc.exitCode !== null) throw new Error(`process exited with ${proc.exitCode}`)
    try {
      if ((await fetch(url)).ok) return
    } catch {
      // not up yet
    }
    await Bun.sleep(100)
  }
  throw new Error(`${url} did not become healthy`)
}

export async function freePort(): Promise<number> {
  const s = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const p = s.port
  s.stop(true)
  return p
}
