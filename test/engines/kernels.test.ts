/**
 * Kernels (src/engines/kernels) against the real Docker engine, in containers hardened like
 * every workstation (made through the engine's ensure + start: no network, read-only root,
 * uid 1000, no capabilities): the shell kernel in the busybox test image, the python3 kernel
 * in the Python image scripts/python-image.sh builds (its tag as the server computes it, or
 * QUADRAX_PYTHON_IMAGE). Without that image the python3 tests fail, saying how to build it.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import type { ContainerRef } from '../../src/engines/containers/engine.ts'
import { pythonImageTag } from '../../src/engines/containers/python-image.ts'
import { KernelDiedError, KernelStartError, type ExecuteReply, type KernelSession, type NbOutput } from '../../src/engines/kernels/kernel.ts'
import { ContainerKernels } from '../../src/engines/kernels/provider.ts'
import { dockerTestEnv, until } from '../support/docker.ts'

const docker = dockerTestEnv(import.meta.file)
// Starting an ipykernel takes seconds, a restart as long (bun's default per test is 5 s).
setDefaultTimeout(120_000)
const PYTHON_IMAGE = process.env.QUADRAX_PYTHON_IMAGE ?? pythonImageTag()

afterAll(async () => {
  await docker?.cleanup()
})

interface Run {
  reply: ExecuteReply
  outputs: NbOutput[]
  /** The stream outputs of one name joined, as a notebook shows them. */
  stdout: string
  stderr: string
}

async function run(k: KernelSession, code: string, signal?: AbortSignal): Promise<Run> {
  const outputs: NbOutput[] = []
  const reply = await k.execute(code, { onOutput: (o) => outputs.push(o), signal })
  const text = (name: string) =>
    outputs
      .filter((o) => o.output_type === 'stream' && o.name === name)
      .map((o) => (o as { text: string }).text)
      .join('')
  return { reply, outputs, stdout: text('stdout'), stderr: text('stderr') }
}

const result = (r: Run) => r.outputs.find((o) => o.output_type === 'execute_result')
const errorOf = (r: Run) => r.outputs.find((o) => o.output_type === 'error') as Extract<NbOutput, { output_type: 'error' }> | undefined

/** A workstation container of `image`, created and started through the engine (its hardening). */
async function workstation(image: string, memory = 256): Promise<ContainerRef> {
  const env = docker!
  const engine = env.engine({ images: [env.image, PYTHON_IMAGE], pidsLimit: 256, stopTimeoutSeconds: 1 })
  const ref: ContainerRef = { kind: 'workstation', entityId: crypto.randomUUID() }
  await engine.ensure({ ...ref, ownerId: env.ownerId, image, resources: { cpu: 1, memory } })
  await engine.start(ref)
  return ref
}

describe.skipIf(!docker)('shell kernel (busybox image)', () => {
  const env = docker!
  const engine = env?.engine({ images: [env.image], pidsLimit: 256, stopTimeoutSeconds: 1 })
  const kernels = env && new ContainerKernels(engine, { startTimeoutMs: 20_000 })
  let ref: ContainerRef
  let k: KernelSession

  beforeAll(async () => {
    ref = await workstation(env.image)
    k = await kernels.start(ref, 'shell')
  })
  afterAll(() => k?.shutdown())

  test('the image offers only the shell kernel; python3 on it is a KernelStartError', async () => {
    expect(await kernels.available(ref)).toEqual(['shell'])
    const err = await kernels.start(ref, 'python3', { startTimeoutMs: 10_000 }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(KernelStartError)
    expect(String((err as Error).message)).toContain('python3')
  })

  test('variables and the current directory survive between executions; stdout in order', async () => {
    expect(k.state()).toBe('idle')
    const a = await run(k, 'greeting=hello; cd /tmp; echo one; echo two')
    expect(a.reply).toEqual({ status: 'ok', executionCount: 1 })
    expect(a.stdout).toBe('one\ntwo\n')
    const b = await run(k, 'echo "$greeting from $(pwd)"; printf "no newline"')
    expect(b.reply).toEqual({ status: 'ok', executionCount: 2 })
    expect(b.stdout).toBe('hello from /tmp\nno newline')
    expect(b.outputs.every((o) => o.output_type === 'stream')).toBe(true)
  })

  test('stderr is its own stream; a non-zero exit is an error output and status error', async () => {
    const r = await run(k, 'echo oops >&2; echo fine; false')
    expect(r.stderr).toBe('oops\n')
    expect(r.stdout).toBe('fine\n')
    expect(r.reply.status).toBe('error')
    expect(errorOf(r)).toEqual({ output_type: 'error', ename: 'ExitCode', evalue: '1', traceback: ['ExitCode: 1'] })
    const code = await run(k, 'sh -c "exit 7"')
    expect(errorOf(code)?.evalue).toBe('7')
  })

  test('code the shell cannot parse, quotes, and commands that read stdin leave the shell alive', async () => {
    const syntax = await run(k, 'if true; then echo never')
    expect(syntax.reply.status).toBe('error')
    expect(syntax.stderr).toContain('syntax error')
    const quotes = await run(k, `x='it'"'"'s'; echo "$x" 'single "double"'`)
    expect(quotes.stdout).toBe(`it's single "double"\n`)
    // cat and read get end of file at once, not the lines meant for the shell.
    const reads = await run(k, 'cat; read line; echo "read: $?"')
    expect(reads.stdout).toBe('read: 1\n')
    expect((await run(k, 'echo "$greeting"')).stdout).toBe('hello\n')
  })

  test('a large output arrives whole, in pieces, with no marker in it', async () => {
    const r = await run(k, "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo end >&2")
    expect(r.reply.status).toBe('ok')
    expect(r.stdout.length).toBe(3_000_001)
    expect(/^x+\n$/.test(r.stdout)).toBe(true)
    expect(r.outputs.length).toBeGreaterThan(2)
    expect(r.stderr).toBe('end\n')
  })

  test('interrupt ends a running `sleep 100` within 2 s and the shell lives on with its state', async () => {
    const running = run(k, 'echo started; sleep 100; echo after-sleep')
    await until(async () => (await env.exec(`quadrax-workstation-${ref.entityId}`, ['ps', '-o', 'args'])).stdout.includes('sleep 100'), 'the sleep to start')
    const t0 = performance.now()
    await k.interrupt()
    const r = await running
    expect(performance.now() - t0).toBeLessThan(2000)
    expect(r.reply).toEqual({ status: 'aborted', executionCount: null })
    expect(r.stdout).toBe('started\nafter-sleep\n')
    expect(k.state()).toBe('idle')
    expect((await run(k, 'echo "$greeting in $(pwd)"')).stdout).toBe('hello in /tmp\n')
    // The same through the execution's signal.
    const ctl = new AbortController()
    const second = run(k, 'sleep 100', ctl.signal)
    await until(async () => (await env.exec(`quadrax-workstation-${ref.entityId}`, ['ps', '-o', 'args'])).stdout.includes('sleep 100'), 'the second sleep')
    ctl.abort()
    expect((await second).reply.status).toBe('aborted')
  })

  test('restart clears the state and the count; an `exit` is a death, told once', async () => {
    const fresh = await kernels.start(ref, 'shell')
    try {
      await run(fresh, 'kept=yes; cd /tmp')
      await fresh.restart()
      const r = await run(fresh, 'echo "kept=$kept in $(pwd)"')
      expect(r.stdout).toBe('kept= in /home/quadrax\n')
      expect(r.reply.executionCount).toBe(1)
      const deaths: string[] = []
      fresh.onDeath((reason) => deaths.push(reason))
      const err = await fresh.execute('exit 4', { onOutput: () => {} }).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(KernelDiedError)
      expect(fresh.state()).toBe('dead')
      expect(deaths).toEqual(['the shell exited with code 4'])
      await expect(fresh.execute('true', { onOutput: () => {} })).rejects.toBeInstanceOf(KernelDiedError)
    } finally {
      await fresh.shutdown()
    }
  })
})

describe.skipIf(!docker)('python3 kernel (Python image)', () => {
  const env = docker!
  const engine = env?.engine({ images: [env.image, PYTHON_IMAGE], pidsLimit: 256, stopTimeoutSeconds: 1 })
  const kernels = env && new ContainerKernels(engine, { startTimeoutMs: 60_000 })
  let ref: ContainerRef
  let k: KernelSession

  beforeAll(async () => {
    const present = await env.raw
      .getImage(PYTHON_IMAGE)
      .inspect()
      .then(() => true)
      .catch(() => false)
    if (!present) throw new Error(`the Python image ${PYTHON_IMAGE} is not on the engine: build it with scripts/python-image.sh (or name another in QUADRAX_PYTHON_IMAGE)`)
    ref = await workstation(PYTHON_IMAGE, 512)
    k = await kernels.start(ref, 'python3')
  })
  afterAll(() => k?.shutdown())

  test('the image offers python3 and shell', async () => {
    expect(await kernels.available(ref)).toEqual(['python3', 'shell'])
  })

  test('variables survive; prints stream in order; 1+1 is an execute_result with its count', async () => {
    expect(k.state()).toBe('idle')
    const a = await run(k, 'x = 40\nfor i in range(5):\n    print(i, flush=True)')
    expect(a.reply).toEqual({ status: 'ok', executionCount: 1 })
    expect(a.stdout).toBe('0\n1\n2\n3\n4\n')
    const b = await run(k, 'x + 2')
    expect(b.reply).toEqual({ status: 'ok', executionCount: 2 })
    expect(b.outputs).toEqual([{ output_type: 'execute_result', execution_count: 2, data: { 'text/plain': '42' }, metadata: {} }])
    const c = await run(k, '1+1')
    expect(result(c)).toEqual({ output_type: 'execute_result', execution_count: 3, data: { 'text/plain': '2' }, metadata: {} })
  })

  test('an exception is an error output with ename, evalue and traceback, and status error', async () => {
    const r = await run(k, 'def f():\n    raise ValueError("bad value")\nf()')
    expect(r.reply.status).toBe('error')
    expect(typeof r.reply.executionCount).toBe('number')
    const e = errorOf(r)!
    expect(e.ename).toBe('ValueError')
    expect(e.evalue).toBe('bad value')
    // IPython colours its tracebacks with ANSI escapes, as Jupyter shows them.
    expect(e.traceback.join('\n').replace(/\x1b\[[0-9;]*m/g, '')).toContain('raise ValueError("bad value")')
  })

  test('a matplotlib figure arrives as display_data with image/png', async () => {
    const r = await run(k, 'import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()')
    expect(r.reply.status).toBe('ok')
    const d = r.outputs.find((o) => o.output_type === 'display_data') as Extract<NbOutput, { output_type: 'display_data' }>
    expect(d).toBeDefined()
    const png = Buffer.from(String(d.data['image/png']), 'base64')
    expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))
  })

  test('clear_output reaches onClear; a large print arrives whole, in pieces', async () => {
    const clears: boolean[] = []
    await k.execute('from IPython.display import clear_output\nprint("a")\nclear_output(wait=True)\nprint("b")', { onOutput: () => {}, onClear: (w) => clears.push(w) })
    expect(clears).toEqual([true])
    const r = await run(k, 'print("y" * 3_000_000)')
    expect(r.stdout.length).toBe(3_000_001)
    expect(r.outputs.length).toBeGreaterThan(1)
  })

  test('interrupt ends time.sleep(100) within 2 s; a later execution still sees earlier variables', async () => {
    await k.interrupt() // nothing running: a no-op
    const outputs: NbOutput[] = []
    const sleeping = Promise.withResolvers<void>()
    const running = k.execute('import time\nprint("sleeping", flush=True)\ntime.sleep(100)', {
      onOutput: (o) => {
        outputs.push(o)
        if (o.output_type === 'stream') sleeping.resolve()
      },
    })
    await sleeping.promise
    const t0 = performance.now()
    await k.interrupt()
    const reply = await running
    expect(performance.now() - t0).toBeLessThan(2000)
    expect(reply.status).toBe('aborted')
    expect(outputs.find((o) => o.output_type === 'error')).toMatchObject({ ename: 'KeyboardInterrupt' })
    expect(k.state()).toBe('idle')
    expect(result(await run(k, 'x'))).toMatchObject({ data: { 'text/plain': '40' } })
  })

  test('an interrupt that comes before the code runs still ends it (through the signal)', async () => {
    const ctl = new AbortController()
    const t0 = performance.now()
    const running = run(k, 'import time\ntime.sleep(100)', ctl.signal)
    ctl.abort()
    const r = await running
    expect(performance.now() - t0).toBeLessThan(2000)
    expect(r.reply.status).toBe('aborted')
    expect(result(await run(k, 'x + 1'))).toMatchObject({ data: { 'text/plain': '41' } })
  })

  test('restart (here while an execution runs: it ends aborted) clears the state and resets the count', async () => {
    const sleeping = Promise.withResolvers<void>()
    const running = k.execute('import time\nprint("z", flush=True)\ntime.sleep(100)', { onOutput: () => sleeping.resolve() })
    await sleeping.promise
    await k.restart()
    expect(await running).toEqual({ status: 'aborted', executionCount: null })
    expect(k.state()).toBe('idle')
    const r = await run(k, 'x')
    expect(errorOf(r)?.ename).toBe('NameError')
    expect(r.reply.executionCount).toBe(1)
    expect(result(await run(k, '1+1'))).toMatchObject({ execution_count: 2 })
  })

  test('an output past maxMessageBytes is dropped with a note; a kernel killed from inside is a death', async () => {
    const own = await new ContainerKernels(engine, { maxMessageBytes: 64 * 1024 }).start(ref, 'python3')
    const big = await run(own, 'from IPython.display import HTML, display\ndisplay(HTML("<b>" + "x" * 200_000 + "</b>"))\nprint("after")')
    expect(big.reply.status).toBe('ok')
    expect(big.outputs).toHaveLength(2)
    expect(big.outputs[0]).toMatchObject({ output_type: 'stream', name: 'stderr' })
    expect(big.stderr).toMatch(/^\[an output of \d+ bytes was dropped: one output may be at most 65536 bytes\]\n$/)
    expect(big.stdout).toBe('after\n')
    // A long print is cut into stream outputs that each fit (escaped non-ASCII included), never dropped.
    const wide = await run(own, 'print("é😀" * 60_000)')
    expect(wide.stderr).toBe('')
    expect(wide.stdout).toBe('é😀'.repeat(60_000) + '\n')
    const deaths: string[] = []
    own.onDeath((reason) => deaths.push(reason))
    const err = await own.execute('import os, signal\nos.kill(os.getpid(), signal.SIGKILL)', { onOutput: () => {} }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(KernelDiedError)
    expect(String((err as Error).message)).toContain('SIGKILL')
    expect(own.state()).toBe('dead')
    expect(deaths.length).toBe(1)
    await own.shutdown()
  })

  test('stopping the container kills the kernel: KernelDiedError and onDeath', async () => {
    const other = await workstation(PYTHON_IMAGE, 512)
    const own = await kernels.start(other, 'python3')
    const deaths: string[] = []
    own.onDeath((reason) => deaths.push(reason))
    const running = own.execute('import time\ntime.sleep(100)', { onOutput: () => {} }).catch((e: unknown) => e)
    await engine.stop(other, { timeoutSeconds: 0 })
    expect(await running).toBeInstanceOf(KernelDiedError)
    await until(() => deaths.length > 0, 'the death to be told')
    expect(deaths).toEqual(['the container stopped'])
    expect(own.state()).toBe('dead')
    await own.shutdown()
  })
})
