/**
 * DockerEngine against the real Docker Engine from scripts/docker-up.sh.
 * Skipped (with the reason printed) when DOCKER_HOST is not set, unless QUADRAX_REQUIRE
 * includes docker.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { release, tmpdir } from 'node:os'
import { join } from 'node:path'
import { AppError } from '../../src/core/errors.ts'
import type { ContainerEvent, ContainerSpec, LogLine } from '../../src/engines/containers/engine.ts'
import { DockerEngine } from '../../src/engines/containers/docker.ts'
import { containerName, volumeName } from '../../src/engines/containers/docker-spec.ts'
import { dockerTestEnv, until } from '../support/docker.ts'

const docker = dockerTestEnv(import.meta.file)
const MB = 1024 * 1024

afterAll(async () => {
  await docker?.cleanup()
})

async function rejection(p: Promise<unknown>): Promise<AppError> {
  try {
    await p
  } catch (err) {
    expect(err).toBeInstanceOf(AppError)
    return err as AppError
  }
  throw new Error('expected a rejection')
}

describe.skipIf(!docker)('DockerEngine (real engine)', () => {
  const env = docker!
  const engine = env?.engine({ pidsLimit: 128, stopTimeoutSeconds: 5 })

  const spec = (overrides: Partial<ContainerSpec> = {}): ContainerSpec => ({
    kind: 'workstation',
    entityId: crypto.randomUUID(),
    ownerId: env.ownerId,
    image: env.image,
    resources: { cpu: 0.5, memory: 64 },
    ...overrides,
  })

  test('info reports runtimes, runsc among them, and no NVIDIA runtime here', async () => {
    await engine.ping()
    const info = await engine.info()
    expect(info.engine).toBe('docker')
    expect(info.runtimes).toContain('runc')
    expect(info.runtimes).toContain('runsc')
    expect(info.nvidia).toBe(info.runtimes.includes('nvidia'))
    expect(info.cpus).toBeGreaterThan(0)
  })

  test('two concurrent ensures make one container and one volume, and a third finds it', async () => {
    const s = spec()
    const [a, b] = await Promise.all([engine.ensure(s), engine.ensure(s)])
    expect(a.id).not.toBeNull()
    expect(b.id).toBe(a.id)
    expect(a.state).toBe('created')
    const again = await engine.ensure(s)
    expect(again.id).toBe(a.id)
    const listed = await engine.list({ entityId: s.entityId })
    expect(listed).toEqual([{ ref: { kind: 'workstation', entityId: s.entityId }, ownerId: env.ownerId, id: a.id!, name: containerName('workstation', s.entityId), state: 'created', image: env.image }])
    const vol = await env.raw.getVolume(volumeName('workstation', s.entityId)).inspect()
    expect(vol.Labels).toEqual({ 'quadrax.owner': env.ownerId, 'quadrax.entity': s.entityId, 'quadrax.kind': 'workstation' })
    // Same name, another owner: not adopted.
    const err = await rejection(engine.ensure({ ...s, ownerId: 'someone-else' }))
    expect(err.status).toBe(409)
    await engine.remove(s)
    expect((await engine.inspect(s)).state).toBe('missing')
    expect(await env.raw.getVolume(volumeName('workstation', s.entityId)).inspect().catch((e) => e.statusCode)).toBe(404)
  })

  test('every container is hardened (asserted with inspect and from inside)', async () => {
    const s = spec({ resources: { cpu: 0.5, memory: 64 } })
    await engine.ensure(s)
    const name = containerName('workstation', s.entityId)
    const info = await env.raw.getContainer(name).inspect()
    const h = info.HostConfig
    expect(h.Privileged).toBe(false)
    expect(h.CapDrop).toEqual(['ALL'])
    expect(h.CapAdd ?? []).toEqual([])
    expect(h.SecurityOpt).toEqual(['no-new-privileges'])
    expect(h.PidsLimit).toBe(128)
    expect(h.Memory).toBe(64 * MB)
    expect(h.MemorySwap).toBe(64 * MB)
    expect(h.NanoCpus).toBe(500_000_000)
    expect(h.ReadonlyRootfs).toBe(true)
    expect(Object.keys(h.Tmpfs ?? {})).toEqual(['/tmp'])
    expect(h.NetworkMode).toBe('none')
    expect(h.Runtime).toBe('runc')
    expect(h.Binds ?? []).toEqual([])
    expect(h.DeviceRequests ?? []).toEqual([])
    expect(info.Config.User).toBe('1000:1000')
    expect(info.Config.Labels).toEqual({ 'quadrax.owner': env.ownerId, 'quadrax.entity': s.entityId, 'quadrax.kind': 'workstation' })
    expect(info.Mounts.map((m) => ({ type: m.Type, name: m.Name, to: m.Destination, rw: m.RW }))).toEqual([
      { type: 'volume', name: volumeName('workstation', s.entityId), to: '/home/quadrax', rw: true },
    ])
    expect(JSON.stringify(info.Mounts)).not.toContain('docker.sock')

    await engine.start(s)
    const inside = await env.exec(name, [
      'sh',
      '-c',
      'id -u; touch /rootfs-write 2>/dev/null && echo root-writable || echo root-readonly; ' +
        'touch /tmp/t && echo tmp-ok; touch ~/h && echo home-ok; ' +
        // Interfaces besides loopback would be a route out.
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ','; echo; " +
        "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status | tr -s '\\t ' ' '",
    ])
    expect(inside.exitCode).toBe(0)
    expect(inside.stdout.trim().split('\n')).toEqual(['1000', 'root-readonly', 'tmp-ok', 'home-ok', 'lo,', 'CapEff: 0000000000000000', 'NoNewPrivs: 1'])
  })

  test('start, stop, restart and inspect follow the container', async () => {
    const s = spec()
    expect((await engine.inspect(s)).state).toBe('missing')
    await engine.ensure(s)
    const running = await engine.start(s)
    expect(running).toMatchObject({ state: 'running', running: true, exitCode: null, oomKilled: false, error: null, ownerId: env.ownerId, image: env.image, runtime: 'runc' })
    expect(running.startedAt).toBeInstanceOf(Date)
    expect(running.limits).toEqual({ cpu: 0.5, memory: 64, pids: 128, gpu: false })
    // Starting a running container is not an error.
    expect((await engine.start(s)).id).toBe(running.id)
    const stopped = await engine.stop(s, { timeoutSeconds: 5 })
    // The image's command traps SIGTERM and exits 0, so a stop is clean, not a kill.
    expect(stopped).toMatchObject({ state: 'exited', running: false, exitCode: 0, error: null })
    expect(stopped.finishedAt).toBeInstanceOf(Date)
    expect((await engine.stop(s)).state).toBe('exited')
    const restarted = await engine.restart(s)
    expect(restarted.running).toBe(true)
    expect(restarted.startedAt!.getTime()).toBeGreaterThanOrEqual(running.startedAt!.getTime())
    await engine.remove(s)
    // Stop and remove of a missing container are no-ops; start is a 404.
    expect((await engine.stop(s)).state).toBe('missing')
    await engine.remove(s)
    expect((await rejection(engine.start(s))).status).toBe(404)
  })

  test('updateLimits resizes a stopped container', async () => {
    const s = spec()
    await engine.ensure(s)
    const resized = await engine.updateLimits(s, { cpu: 1, memory: 128 })
    expect(resized.limits).toEqual({ cpu: 1, memory: 128, pids: 128, gpu: false })
    const h = (await env.raw.getContainer(containerName('workstation', s.entityId)).inspect()).HostConfig
    expect([h.Memory, h.MemorySwap, h.NanoCpus]).toEqual([128 * MB, 128 * MB, 1_000_000_000])
    expect((await engine.start(s)).running).toBe(true)
    expect((await rejection(engine.updateLimits(s, { cpu: 1, memory: 128, gpu: true }))).status).toBe(422)
  })

  test('logs: tail of stdout and stderr, and a follow stream', async () => {
    const s = spec({
      command: ['sh', '-c', 'echo one; echo two >&2; echo three; i=0; trap "exit 0" TERM; while :; do echo tick $i; i=$((i+1)); sleep 0.1 & wait $!; done'],
    })
    await engine.ensure(s)
    await engine.start(s)
    const lines = await until(async () => {
      const { lines: l } = await engine.logs(s, { tail: 1000 })
      return l.some((x) => x.line === 'two') && l.some((x) => x.line === 'tick 0') && l
    }, 'the first log lines')
    // The engine copies stdout and stderr separately: order holds within a stream only.
    expect(lines.filter((l) => l.stream === 'stdout').slice(0, 3).map((l) => l.line)).toEqual(['one', 'three', 'tick 0'])
    expect(lines.filter((l) => l.stream === 'stderr').map((l) => l.line)).toEqual(['two'])
    expect(lines[0]!.at).toBeInstanceOf(Date)
    expect((await engine.logs(s, { tail: 1 })).lines.length).toBe(1)

    const ac = new AbortController()
    const followed: LogLine[] = []
    for await (const line of engine.followLogs(s, { tail: 0, signal: ac.signal })) {
      if ('cut' in line) throw new Error('no budget was exceeded here')
      followed.push(line)
      if (followed.length === 3) ac.abort()
    }
    expect(followed.length).toBe(3)
    const n = followed.map((l) => Number(/^tick (\d+)$/.exec(l.line)?.[1]))
    expect(n[1]).toBe(n[0]! + 1)
    expect(n[2]).toBe(n[0]! + 2)
  })

  test('stats: a busy container shows CPU near its limit, memory within its limit, a few PIDs', async () => {
    const busy = spec({ resources: { cpu: 0.5, memory: 64 }, command: ['sh', '-c', 'trap "exit 0" TERM; while :; do :; done'] })
    const idle = spec()
    await Promise.all([engine.ensure(busy), engine.ensure(idle)])
    await Promise.all([engine.start(busy), engine.start(idle)])
    const [b, i] = await Promise.all([engine.stats(busy), engine.stats(idle)])
    expect(b.running).toBe(true)
    expect(b.cpuLimit).toBe(0.5)
    // Throttled at half a core: well above idle, not above the quota (with rounding room).
    expect(b.cpuPercent).toBeGreaterThan(5)
    expect(b.cpuPercent).toBeLessThanOrEqual(60)
    expect(i.cpuPercent).toBeLessThan(b.cpuPercent)
    for (const s of [b, i]) {
      expect(s.memoryLimitBytes).toBe(64 * MB)
      expect(s.memoryUsedBytes).toBeGreaterThan(0)
      expect(s.memoryUsedBytes).toBeLessThan(64 * MB)
      expect(s.memoryPercent).toBeGreaterThan(0)
      expect(s.pids).toBeGreaterThanOrEqual(1)
      expect(s.pids).toBeLessThanOrEqual(128)
    }
    await engine.stop(idle)
    expect(await engine.stats(idle)).toMatchObject({ running: false, cpuPercent: 0, memoryUsedBytes: 0, pids: 0, memoryLimitBytes: 64 * MB })
  })

  test('exec with a TTY: input goes in, output comes back, resize applies, exit code is seen', async () => {
    const s = spec()
    await engine.ensure(s)
    await engine.start(s)
    const term = await engine.exec(s, { cmd: ['sh'], cols: 80, rows: 24 })
    let screen = ''
    term.stream.on('data', (b: Buffer) => (screen += b.toString()))
    // $((…)) makes the output differ from the echoed input.
    term.stream.write('echo hello-$((40+2))\n')
    await until(() => screen.includes('hello-42\r\n'), 'echo output over the TTY')
    await term.resize(120, 40)
    term.stream.write('stty size\n')
    await until(() => screen.includes('40 120'), 'the new terminal size')
    expect(await term.exitCode()).toBeNull()
    term.stream.write('exit 3\n')
    expect(await term.wait()).toBe(3)
    await expect(term.resize(0, 10)).rejects.toThrow('between 1 and 1000')
  })

  test('closing a terminal ends its processes inside the container', async () => {
    const s = spec()
    await engine.ensure(s)
    await engine.start(s)
    const name = containerName('workstation', s.entityId)
    const term = await engine.exec(s, { cmd: ['sh'] })
    term.stream.on('data', () => {})
    term.stream.write('sleep 4242\n')
    await until(async () => (await env.exec(name, ['ps'])).stdout.includes('sleep 4242'), 'the sleep to start')
    term.close()
    await until(async () => !(await env.exec(name, ['ps'])).stdout.includes('sleep 4242'), 'the session to end')
  })

  test('run to completion: metric lines stream, output written, input read-only, container removed', async () => {
    const input = mkdtempSync(join(tmpdir(), 'qx-in-'))
    const output = mkdtempSync(join(tmpdir(), 'qx-out-'))
    try {
      writeFileSync(join(input, 'data.txt'), 'weights-from-input\n')
      // The job runs as uid 1000: it must be able to read the input and write the output.
      chmodSync(input, 0o755)
      chownSync(output, 1000, 1000)
      const runId = crypto.randomUUID()
      const lines: LogLine[] = []
      const result = await engine.run(
        {
          entityId: runId,
          ownerId: env.ownerId,
          image: env.image,
          resources: { cpu: 1, memory: 64 },
          command: [
            'sh',
            '-c',
            'for i in 1 2 3; do echo "{\\"step\\":$i,\\"loss\\":0.$((10-i))}"; done; ' +
              'touch /input/x 2>/dev/null && echo input-writable >&2 || echo input-readonly >&2; ' +
              'cat /input/data.txt > /output/model.txt && echo saved',
          ],
          input: { hostPath: input },
          output: { hostPath: output },
        },
        { onLine: (l) => lines.push(l) },
      )
      expect({ ...result, durationMs: 0, lines: result.exitCode === 0 ? [] : lines }).toEqual({ exitCode: 0, oomKilled: false, cancelled: false, timedOut: false, error: null, durationMs: 0, droppedOutputBytes: 0, lines: [] })
      const metrics = lines.filter((l) => l.stream === 'stdout' && l.line.startsWith('{')).map((l) => JSON.parse(l.line))
      expect(metrics).toEqual([
        { step: 1, loss: 0.9 },
        { step: 2, loss: 0.8 },
        { step: 3, loss: 0.7 },
      ])
      expect(lines.filter((l) => l.stream === 'stderr').map((l) => l.line)).toEqual(['input-readonly'])
      // Order holds within a stream (the engine copies stdout and stderr separately).
      expect(lines.filter((l) => l.stream === 'stdout').at(-1)?.line).toBe('saved')
      expect(readFileSync(join(output, 'model.txt'), 'utf8')).toBe('weights-from-input\n')
      expect((await engine.inspect({ kind: 'run', entityId: runId })).state).toBe('missing')

      const failed = await engine.run({ entityId: crypto.randomUUID(), ownerId: env.ownerId, image: env.image, resources: { cpu: 1, memory: 64 }, command: ['sh', '-c', 'exit 7'] })
      expect(failed).toMatchObject({ exitCode: 7, error: 'the job exited with code 7', cancelled: false })
    } finally {
      rmSync(input, { recursive: true, force: true })
      rmSync(output, { recursive: true, force: true })
    }
  })

  test('run: cancel kills the job; running out of memory says so', async () => {
    const ac = new AbortController()
    const cancelled = await engine.run(
      { entityId: crypto.randomUUID(), ownerId: env.ownerId, image: env.image, resources: { cpu: 1, memory: 64 }, command: ['sh', '-c', 'echo started; while :; do sleep 1; done'] },
      { signal: ac.signal, onLine: (l) => l.line === 'started' && ac.abort() },
    )
    expect(cancelled).toMatchObject({ cancelled: true, exitCode: 137, error: 'cancelled' })

    const oom = await engine.run({
      entityId: crypto.randomUUID(),
      ownerId: env.ownerId,
      image: env.image,
      resources: { cpu: 1, memory: 32 },
      command: ['sh', '-c', 'a=$(head -c 200000000 /dev/zero | tr "\\000" x); echo survived ${#a}'],
    })
    expect(oom.oomKilled).toBe(true)
    expect(oom.error).toContain('out of memory')
    expect(oom.error).toContain('32 MB')
  })

  test('run: a job printing faster than outputBytesPerSecond waits for the reader (its writes block), and what it printed is counted exactly', async () => {
    const output = mkdtempSync(join(tmpdir(), 'qx-out-'))
    try {
      chownSync(output, 1000, 1000)
      // 256 chunks of 64 KiB (16 MiB), each followed by a note of how many the job has written so far.
      const CHUNKS = 256
      const CHUNK = 64 * 1024
      const script = `i=0; while [ $i -lt ${CHUNKS} ]; do head -c ${CHUNK} /dev/zero | tr '\\000' x; i=$((i+1)); echo $i > /output/progress.tmp; mv /output/progress.tmp /output/progress; done`
      const ac = new AbortController()
      let received = 0
      let writtenWhenRead1MiB: number | undefined
      const result = await engine.run(
        { entityId: crypto.randomUUID(), ownerId: env.ownerId, image: env.image, resources: { cpu: 1, memory: 64 }, command: ['sh', '-c', script], output: { hostPath: output } },
        {
          signal: ac.signal,
          outputBytesPerSecond: 256 * 1024,
          maxOutputBytes: 2 * MB,
          onLine: (l) => {
            received += Buffer.byteLength(l.line)
            if (received >= MB && writtenWhenRead1MiB === undefined) {
              writtenWhenRead1MiB = Number(readFileSync(join(output, 'progress'), 'utf8'))
              ac.abort()
            }
          },
        },
      )
      expect(result.cancelled).toBe(true)
      // Read at 256 KiB/s, the first MiB takes seconds; a job not held back by its reader
      // writes all 16 MiB in a fraction of one. Held back, it is only the pipes', sockets' and
      // stream buffers ahead of what was read (about 2.5 MiB measured here).
      expect(writtenWhenRead1MiB).toBeGreaterThanOrEqual(16)
      expect(writtenWhenRead1MiB).toBeLessThan(CHUNKS / 2)

      // Unpaced, a job's output is counted to the byte past the budget.
      const counted = await engine.run(
        { entityId: crypto.randomUUID(), ownerId: env.ownerId, image: env.image, resources: { cpu: 1, memory: 64 }, command: ['sh', '-c', "head -c 5000000 /dev/zero | tr '\\000' y"] },
        { maxOutputBytes: MB },
      )
      expect(counted).toMatchObject({ exitCode: 0, droppedOutputBytes: 5_000_000 - MB })
    } finally {
      rmSync(output, { recursive: true, force: true })
    }
  })

  test('run: paced by lines (outputLinesPerSecond, bytes unpaced), a flood of short lines arrives whole and the job is held back by its reader', async () => {
    const output = mkdtempSync(join(tmpdir(), 'qx-out-'))
    try {
      chownSync(output, 1000, 1000)
      // 200 batches of 1,000 lines of 100 B (20 MB), each followed by a note of how many the job
      // has written so far. A flood of short lines costs the engine and the server per line.
      const BATCHES = 200
      const script = `i=0; while [ $i -lt ${BATCHES} ]; do yes ${'z'.repeat(99)} | head -n 1000; i=$((i+1)); echo $i > /output/progress.tmp; mv /output/progress.tmp /output/progress; done`
      const ac = new AbortController()
      let lines = 0
      let whole = 0
      let writtenWhenRead5000: number | undefined
      const result = await engine.run(
        { entityId: crypto.randomUUID(), ownerId: env.ownerId, image: env.image, resources: { cpu: 1, memory: 64 }, command: ['sh', '-c', script], output: { hostPath: output } },
        {
          signal: ac.signal,
          outputLinesPerSecond: 2000,
          onLine: (l) => {
            // What comes after the cancel (the rest of the last read, a line the kill cut) is not looked at.
            if (lines >= 5000) return
            if (l.line === 'z'.repeat(99) && !l.partial) whole++
            if (++lines === 5000) {
              writtenWhenRead5000 = Number(readFileSync(join(output, 'progress'), 'utf8'))
              ac.abort()
            }
          },
        },
      )
      expect(result.cancelled).toBe(true)
      expect(whole).toBe(5000)
      // The job is only the buffers ahead of what was read (a few MB: a few dozen batches), not
      // all 20 MB. How fast the reader goes is not timed here (no test times): bench:abuse
      // (item 5) measures what line pacing does for other users; the decoder's line count it
      // paces by is tested in docker-streams.test.ts.
      expect(writtenWhenRead5000).toBeGreaterThanOrEqual(5)
      expect(writtenWhenRead5000).toBeLessThan(BATCHES / 2)
    } finally {
      rmSync(output, { recursive: true, force: true })
    }
  })

  test('run: a second follower of a running job (a node that restarted) re-attaches with the output from the start; the job runs once', async () => {
    const input = mkdtempSync(join(tmpdir(), 'qx-in-'))
    const output = mkdtempSync(join(tmpdir(), 'qx-out-'))
    try {
      chmodSync(input, 0o755)
      chownSync(output, 1000, 1000)
      const job = {
        entityId: crypto.randomUUID(),
        ownerId: env.ownerId,
        image: env.image,
        resources: { cpu: 1, memory: 64 },
        input: { hostPath: input },
        output: { hostPath: output },
        command: ['sh', '-c', 'echo x >> /output/starts; echo one; while [ ! -e /input/go ]; do sleep 0.05; done; echo two'],
      }
      const first: string[] = []
      const second: string[] = []
      let secondRun: Promise<unknown> | undefined
      const firstRun = engine.run(job, {
        onLine: (l) => {
          first.push(l.line)
          if (l.line === 'one') secondRun = engine.run(job, { onLine: (m) => second.push(m.line) })
        },
      })
      await until(async () => second.includes('one'), 'the second follower to see the first line')
      writeFileSync(join(input, 'go'), '')
      const [a, b] = await Promise.all([firstRun, until(async () => secondRun !== undefined, 'the second run').then(() => secondRun)])
      expect(a).toMatchObject({ exitCode: 0, error: null })
      expect(b).toMatchObject({ exitCode: 0, error: null })
      expect(first).toEqual(['one', 'two'])
      expect(second).toEqual(['one', 'two'])
      expect(readFileSync(join(output, 'starts'), 'utf8')).toBe('x\n')
    } finally {
      rmSync(input, { recursive: true, force: true })
      rmSync(output, { recursive: true, force: true })
    }
  })

  test('events: a docker kill done outside the platform arrives as die', async () => {
    const s = spec()
    await engine.ensure(s)
    await engine.start(s)
    const ac = new AbortController()
    const stream = engine.events({ signal: ac.signal })
    const seen: ContainerEvent[] = []
    const collected = (async () => {
      for await (const ev of stream) {
        if (ev.ref.entityId !== s.entityId) continue
        seen.push(ev)
        if (ev.action === 'die') ac.abort()
      }
    })()
    await env.raw.getContainer(containerName('workstation', s.entityId)).kill()
    const guard = setTimeout(() => ac.abort(), 20_000)
    await collected
    clearTimeout(guard)
    const die = seen.find((e) => e.action === 'die')
    expect(die).toMatchObject({ action: 'die', ref: { kind: 'workstation', entityId: s.entityId }, ownerId: env.ownerId, exitCode: 137 })
    expect((await engine.inspect(s)).state).toBe('exited')
  })

  test('runsc: the container runs on gVisor’s kernel, not the host’s', async () => {
    const s = spec({ kind: 'vm', runtime: 'runsc' })
    const created = await engine.ensure(s)
    expect(created.runtime).toBe('runsc')
    expect((await engine.start(s)).running).toBe(true)
    const name = containerName('vm', s.entityId)
    const r = await env.exec(name, ['uname', '-r'])
    expect(r.stdout.trim()).toBe('4.4.0')
    expect(release()).not.toBe('4.4.0')
    expect((await env.exec(name, ['id', '-u'])).stdout.trim()).toBe('1000')

    const runc = spec()
    await engine.ensure(runc)
    await engine.start(runc)
    expect((await env.exec(containerName('workstation', runc.entityId), ['uname', '-r'])).stdout.trim()).toBe(release())
  })

  test('refusals: runtime, GPU, image and resources are 422 with a clear message', async () => {
    const missingRuntime = await rejection(engine.ensure(spec({ runtime: 'kata-runtime' })))
    expect(missingRuntime.status).toBe(422)
    expect(missingRuntime.message).toContain('runtime "kata-runtime" is not available on this container engine')
    expect(missingRuntime.message).toContain('runsc')

    if (!(await engine.info()).nvidia) {
      const gpu = await rejection(engine.ensure(spec({ resources: { cpu: 1, memory: 64, gpu: true } })))
      expect(gpu.status).toBe(422)
      expect(gpu.message).toBe('no GPU is available on this engine: it has no NVIDIA runtime')
      expect(gpu.details).toEqual([{ field: 'resources.gpu', message: 'no GPU is available' }])
    }

    const notAllowed = await rejection(engine.ensure(spec({ image: 'alpine:latest' })))
    expect(notAllowed.status).toBe(422)
    expect(notAllowed.message).toContain('not allowed')

    const lenient = env.engine({ images: [env.image, 'quadrax/not-imported:1'] })
    const missingImage = await rejection(lenient.ensure(spec({ image: 'quadrax/not-imported:1' })))
    expect(missingImage.status).toBe(422)
    expect(missingImage.message).toContain('is not available on the container engine')

    // More than the engine has: refused before anything is created, each field named.
    const info = await engine.info()
    const hostMb = Math.floor(info.memoryBytes / MB)
    const tooBig = spec({ resources: { cpu: info.cpus + 1, memory: hostMb + 1024 } })
    const capacity = await rejection(engine.ensure(tooBig))
    expect([capacity.status, capacity.message, capacity.details]).toEqual([
      422,
      `cpu: ${info.cpus + 1} cores requested, the container engine has ${info.cpus}; memory: ${hostMb + 1024} MB requested, the container engine has ${hostMb} MB`,
      [
        { field: 'resources.cpu', message: `${info.cpus + 1} cores requested, the container engine has ${info.cpus}` },
        { field: 'resources.memory', message: `${hostMb + 1024} MB requested, the container engine has ${hostMb} MB` },
      ],
    ])
    expect((await engine.inspect(tooBig)).state).toBe('missing')
    const fits = spec()
    await engine.ensure(fits)
    const resize = await rejection(engine.updateLimits(fits, { cpu: info.cpus * 4, memory: 64 }))
    expect([resize.status, resize.details]).toEqual([422, [{ field: 'resources.cpu', message: `${info.cpus * 4} cores requested, the container engine has ${info.cpus}` }]])
    const job = await rejection(engine.run({ entityId: crypto.randomUUID(), ownerId: env.ownerId, image: env.image, resources: { cpu: info.cpus + 0.5, memory: 64 }, command: ['true'] }))
    expect(job.details).toEqual([{ field: 'resources.cpu', message: `${info.cpus + 0.5} cores requested, the container engine has ${info.cpus}` }])

    const badResources = await rejection(engine.ensure(spec({ resources: { cpu: 0, memory: 64 } })))
    expect(badResources.status).toBe(422)
    expect(badResources.details[0]?.field).toBe('resources.cpu')

    expect((await rejection(engine.ensure(spec({ entityId: '../etc' })))).status).toBe(422)
    expect(await engine.list({ ownerId: env.ownerId, kind: 'vm' }).then((l) => l.every((c) => c.ref.kind === 'vm'))).toBe(true)
  })

  test('an unreachable engine is 503 "container engine unavailable"', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'qx-nosock-'))
    try {
      mkdirSync(join(dir, 'x'))
      const gone = new DockerEngine({ host: `unix://${join(dir, 'docker.sock')}`, images: [env.image] })
      // Every rejection handled as it happens (they settle in any order).
      for (const err of await Promise.all([gone.ping(), gone.info(), gone.ensure(spec()), gone.inspect(spec()), gone.list()].map(rejection))) {
        expect([err.status, err.message]).toEqual([503, 'container engine unavailable'])
      }
      const refused = new DockerEngine({ host: 'tcp://127.0.0.1:1', images: [env.image] })
      expect((await rejection(refused.ping())).status).toBe(503)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
