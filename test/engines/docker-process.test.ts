/**
 * Piped processes (ContainerEngine.spawn) against the real Docker engine, in hardened
 * workstation containers of the busybox test image.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import type { Readable } from 'node:stream'
import { AppError } from '../../src/core/errors.ts'
import type { ContainerRef } from '../../src/engines/containers/engine.ts'
import { containerName } from '../../src/engines/containers/docker-spec.ts'
import { dockerTestEnv, until } from '../support/docker.ts'

const docker = dockerTestEnv(import.meta.file)
// Tens of MB through the engine at the consumer's pace take seconds.
setDefaultTimeout(60_000)
const MB = 1024 * 1024

afterAll(async () => {
  await docker?.cleanup()
})

/** Everything a stream gives until it ends, as text. */
async function text(r: Readable): Promise<string> {
  const parts: Buffer[] = []
  for await (const chunk of r) parts.push(chunk as Buffer)
  return Buffer.concat(parts).toString()
}

/** Bytes a stream gives until it ends, counted (not kept). */
async function count(r: Readable): Promise<number> {
  let n = 0
  for await (const chunk of r) n += (chunk as Buffer).length
  return n
}

describe.skipIf(!docker)('ContainerEngine.spawn (real engine)', () => {
  const env = docker!
  const engine = env?.engine({ pidsLimit: 128, stopTimeoutSeconds: 1 })
  const ref: ContainerRef = { kind: 'workstation', entityId: crypto.randomUUID() }
  const ps = async () => (await env.exec(containerName(ref.kind, ref.entityId), ['ps', '-o', 'pid,args'])).stdout

  beforeAll(async () => {
    if (!env) return
    await engine.ensure({ ...ref, ownerId: env.ownerId, image: env.image, resources: { cpu: 1, memory: 128 } })
    await engine.start(ref)
  })

  test('stdin goes in, stdout and stderr come back apart, the exit code is seen, env and cwd apply', async () => {
    const p = await engine.spawn(ref, {
      cmd: ['sh', '-c', 'while read -r l; do echo "out:$l"; echo "err:$l" >&2; done; echo "$GREETING from $(pwd)"; exit 3'],
      env: { GREETING: 'hello' },
      workingDir: '/tmp',
    })
    const out = text(p.stdout)
    const err = text(p.stderr)
    p.stdin.write('one\n')
    p.stdin.write('two\n')
    // end() closes stdin only: the loop ends and the output after it still arrives.
    p.stdin.end()
    expect(await out).toBe('out:one\nout:two\nhello from /tmp\n')
    expect(await err).toBe('err:one\nerr:two\n')
    expect(await p.wait()).toBe(3)
  })

  test('a large output on both streams arrives whole, read at the consumer pace', async () => {
    // 48 MB on stdout and 16 MB on stderr at once, more than every buffer on the way.
    const p = await engine.spawn(ref, { cmd: ['sh', '-c', 'head -c 16777216 /dev/zero >&2 & head -c 50331648 /dev/zero; wait'] })
    p.stdin.end()
    const err = count(p.stderr)
    // Read stdout slowly for a while: the process waits (nothing is dropped or piled up here).
    let n = 0
    let peak = 0
    for await (const chunk of p.stdout) {
      n += (chunk as Buffer).length
      peak = Math.max(peak, p.stdout.readableLength)
      if (n < 4 * MB) await new Promise((r) => setImmediate(r))
    }
    expect(n).toBe(48 * MB)
    expect(await err).toBe(16 * MB)
    // What waits in our buffer stays near the stream's high-water mark plus one engine chunk.
    expect(peak).toBeLessThan(2 * MB)
    expect(await p.wait()).toBe(0)
  })

  test('a consumer that stops reading holds the process back instead of buffering its output', async () => {
    const p = await engine.spawn(ref, { cmd: ['sh', '-c', 'head -c 67108864 /dev/zero; echo done >&2'] })
    p.stdin.end()
    let n = 0
    // Paused inside the handler: a flowing stream emits what it holds in one go, and chunks
    // emitted with no listener left would be lost to this count.
    const first = await new Promise<Buffer>((resolve) =>
      p.stdout.once('data', (b: Buffer) => {
        p.stdout.pause()
        resolve(b)
      }),
    )
    n += first.length
    const err = text(p.stderr)
    // Still running a while later: it blocks on its writes, and our buffer stays bounded.
    await until(() => p.stdout.readableLength > 0, 'the paused stream to fill')
    expect(await ps()).toContain('head -c 67108864')
    expect(p.stdout.readableLength).toBeLessThan(2 * MB)
    n += await count(p.stdout)
    expect(n).toBe(64 * MB)
    expect(await err).toBe('done\n')
    expect(await p.wait()).toBe(0)
  })

  test('kill ends the process and everything it started, then the session is over', async () => {
    // A child in the background and one that ignores the hang-up: both must go.
    const p = await engine.spawn(ref, { cmd: ['sh', '-c', "sleep 4343 & sh -c 'trap \"\" HUP; sleep 4344' & echo started; wait"] })
    p.stderr.resume()
    const out = text(p.stdout)
    await until(async () => (await ps()).includes('sleep 4344'), 'the children to start')
    await p.kill()
    expect(await out).toBe('started\n')
    const rest = await ps()
    expect(rest).not.toContain('sleep 4343')
    expect(rest).not.toContain('sleep 4344')
    expect(await p.wait()).not.toBe(0)
    // Idempotent, and writing to a killed process fails instead of hanging.
    await p.kill()
    const failed = new Promise((resolve) => p.stdin.once('error', resolve))
    p.stdin.write('x\n')
    expect(String(await failed)).toContain('stdin is closed')
  })

  test('stopping the container ends the session; spawning in a stopped container is a 409', async () => {
    const other: ContainerRef = { kind: 'workstation', entityId: crypto.randomUUID() }
    await engine.ensure({ ...other, ownerId: env.ownerId, image: env.image, resources: { cpu: 0.5, memory: 64 } })
    await engine.start(other)
    const p = await engine.spawn(other, { cmd: ['sleep', '4545'] })
    p.stdout.resume()
    p.stderr.resume()
    await engine.stop(other, { timeoutSeconds: 0 })
    const code = await p.wait()
    expect(code === null || code !== 0).toBe(true)
    const err = await engine.spawn(other, { cmd: ['true'] }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(AppError)
    expect((err as AppError).status).toBe(409)
  })

  test('bad options are refused before the engine sees them', async () => {
    await expect(engine.spawn(ref, { cmd: [] })).rejects.toThrow('needs a command')
    await expect(engine.spawn(ref, { cmd: ['true'], env: { 'NOT VALID': 'x' } })).rejects.toThrow('invalid environment variable name')
    await expect(engine.spawn(ref, { cmd: ['true'], workingDir: 'relative' })).rejects.toThrow('absolute path')
  })
})
