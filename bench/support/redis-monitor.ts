/**
 * Counting the Redis commands an operation costs, with MONITOR on a plain socket (no client
 * library in between to add or hide commands). Commands a Lua script runs are not counted:
 * a script is one command, one round trip. Only commands naming a key or channel that
 * `matches` are counted, so other users of the server do not show up.
 */
import { connect } from 'node:net'
import { Redis } from 'ioredis'

export interface CommandCount {
  /** Commands per operation, by command name. */
  byCommand: Map<string, number>
  /** Commands per operation in all. */
  total: number
}

/** Run `op` `n` times, one at a time, and count the Redis commands that match. */
export async function countCommands(url: string, matches: RegExp, n: number, op: () => Promise<unknown>): Promise<CommandCount> {
  const u = new URL(url)
  const socket = connect({ host: u.hostname, port: Number(u.port || 6379) })
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject))
  const marker = `count-commands-${crypto.randomUUID()}`
  const byCommand = new Map<string, number>()
  let counting = false
  const monitoring = Promise.withResolvers<void>()
  let oks = u.password ? 2 : 1
  const done = Promise.withResolvers<void>()
  let buffer = ''
  socket.on('data', (chunk: Buffer) => {
    buffer += chunk.toString('utf8')
    let end: number
    while ((end = buffer.indexOf('\r\n')) >= 0) {
      const line = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      // +OK for AUTH (when the URL has a password), then for MONITOR.
      if (line === '+OK' && --oks === 0) monitoring.resolve()
      else if (line.startsWith('-')) monitoring.reject(new Error(`MONITOR refused: ${line}`))
      // +<time> [<db> <client>] "<command>" "<arg>"…; a script's own commands show [<db> lua].
      const m = /^\+[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"(.*)$/.exec(line)
      if (!m || m[1] === 'lua') continue
      if (m[3]!.includes(marker)) {
        if (counting) done.resolve()
        counting = !counting
        continue
      }
      if (counting && matches.test(m[3]!)) byCommand.set(m[2]!.toLowerCase(), (byCommand.get(m[2]!.toLowerCase()) ?? 0) + 1)
    }
  })
  if (u.password) socket.write(`AUTH ${u.username ? `${decodeURIComponent(u.username)} ` : ''}${decodeURIComponent(u.password)}\r\n`)
  socket.write('MONITOR\r\n')
  const client = new Redis(url)
  try {
    await monitoring.promise
    await client.echo(marker)
    for (let i = 0; i < n; i++) await op()
    // Commands an operation sets off after it returns (a job's completion) are its too.
    await Bun.sleep(50)
    await client.echo(marker)
    await done.promise
  } finally {
    client.disconnect()
    socket.destroy()
  }
  let total = 0
  for (const [command, count] of byCommand) {
    byCommand.set(command, count / n)
    total += count / n
  }
  return { byCommand, total }
}
