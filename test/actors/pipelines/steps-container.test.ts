/**
 * The `container.run` step kind against the real Docker Engine (the busybox test image),
 * PostgreSQL and DuckDB: outputs from JSON lines and the rest as logs, DataKits under /input,
 * failures with their reason, ownership, the image allow-list, the cache key's inputs.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { containerRun } from '../../../src/actors/pipelines/steps/container-run.ts'
import { until } from '../../support/until.ts'
import { failure, stepTestServer, TEST_IMAGE, type StepTestServer } from './steps-env.ts'

let s: StepTestServer
const LONG = 60_000

beforeAll(async () => {
  s = await stepTestServer(import.meta.file)
})
afterAll(() => s?.stop())

describe('container.run', () => {
  test(
    'JSON output lines become outputs, other lines logs; DataKits are under /input/<alias>.parquet; env values as text',
    async () => {
      if (!s.dockerHost) return console.warn('[skip] no Docker Engine (DOCKER_HOST)')
      const u = await s.t.user()
      const kit = await s.datakit(u.id, 'id,city\n1,Lisbon\n2,Oslo\n3,Lima\n')
      const ctx = s.context(u.id)
      const script = [
        'echo "starting $QUADRAX_STEP_ID"',
        'echo "{\\"output\\": \\"bytes\\", \\"value\\": $(wc -c < /input/customers.parquet)}"',
        'echo \'{"output": "meta", "value": {"ok": true, "tags": ["a", "b"]}}\'',
        'echo "to stderr" >&2',
        'head -c 4 /input/customers.parquet; echo',
        'echo "$GREETING $COUNT"',
      ].join('; ')
      const outputs = await containerRun.run(s.env, ctx, { image: TEST_IMAGE, command: ['sh', '-c', script], datakits: { customers: kit }, env: { GREETING: 'hello', COUNT: 3 }, resources: { cpu: 0.5, memory: 64 } })
      expect(outputs.meta).toEqual({ ok: true, tags: ['a', 'b'] })
      expect(typeof outputs.bytes).toBe('number')
      expect(outputs.bytes as number).toBeGreaterThan(100)
      const lines = ctx.logs.map((l) => `${l.stream}:${l.line}`)
      // PAR1: the Parquet copy's magic number, read through the mount.
      expect(lines).toEqual(expect.arrayContaining(['stdout:starting step', 'stderr:to stderr', 'stdout:PAR1', 'stdout:hello 3']))
      expect(lines.some((l) => l.includes('"output"'))).toBe(false)
    },
    LONG,
  )

  test(
    'a non-zero exit fails the step with the exit code and the last lines',
    async () => {
      if (!s.dockerHost) return console.warn('[skip] no Docker Engine (DOCKER_HOST)')
      const u = await s.t.user()
      const reason = await failure(containerRun.run(s.env, s.context(u.id), { image: TEST_IMAGE, command: ['sh', '-c', 'echo "cannot find the labels"; exit 3'] }))
      expect(reason).toContain('exit')
      expect(reason).toContain('3')
      expect(reason).toContain('cannot find the labels')
    },
    LONG,
  )

  test('another user\'s DataKit, or one that does not exist, is not found (the same words)', async () => {
    const [owner, other] = [await s.t.user(), await s.t.user()]
    const kit = await s.datakit(owner.id, 'a\n1\n')
    const missing = crypto.randomUUID()
    const w = (id: string) => ({ image: TEST_IMAGE, command: ['true'], datakits: { data: id } })
    expect(await failure(containerRun.run(s.env, s.context(other.id), w(kit)))).toBe(`DataKit ${kit} not found`)
    expect(await failure(containerRun.run(s.env, s.context(other.id), w(missing)))).toBe(`DataKit ${missing} not found`)
    // The cache key is refused the same way (the run actor asks for it first).
    expect(await failure(containerRun.inputs!(s.env, other.id, w(kit)))).toBe(`DataKit ${kit} not found`)
  })

  test('an image not on the allow-list fails before anything runs', async () => {
    const u = await s.t.user()
    const reason = await failure(containerRun.run(s.env, s.context(u.id), { image: 'evil/miner:latest', command: ['sh'] }))
    expect(reason).toBe(`image "evil/miner:latest" is not allowed; choose one of: ${TEST_IMAGE}`)
  })

  test('a resolved `with` that does not fit the kind names the field', async () => {
    const u = await s.t.user()
    const reason = await failure(containerRun.run(s.env, s.context(u.id), { image: TEST_IMAGE, command: 'echo hi' }))
    expect(reason).toContain('with.command')
  })

  test('the cache key inputs: the image and the content of each DataKit, a new version is a change', async () => {
    const u = await s.t.user()
    const kit = await s.datakit(u.id, 'x\n1\n')
    const w = { image: TEST_IMAGE, command: ['true'], datakits: { data: kit } }
    const first = await containerRun.inputs!(s.env, u.id, w)
    expect(await containerRun.inputs!(s.env, u.id, w)).toEqual(first)
    await s.datakit(u.id, 'x\n2\n', kit)
    const second = await containerRun.inputs!(s.env, u.id, w)
    expect(second).not.toEqual(first)
    expect(second).toMatchObject({ image: TEST_IMAGE })
  })

  test('holds the resources it asks for, or one core and 512 MB', () => {
    expect(containerRun.holds!({ image: TEST_IMAGE, command: ['true'], resources: { cpu: 0.5, memory: 64 } })).toEqual({ cpu: 0.5, memoryMb: 64 })
    expect(containerRun.holds!({ image: TEST_IMAGE, command: ['true'] })).toEqual({ cpu: 1, memoryMb: 512 })
  })

  test(
    'a cancelled step stops its container',
    async () => {
      if (!s.dockerHost) return console.warn('[skip] no Docker Engine (DOCKER_HOST)')
      const u = await s.t.user()
      const ctx = s.context(u.id)
      const running = containerRun.run(s.env, ctx, { image: TEST_IMAGE, command: ['sh', '-c', 'echo started; sleep 300'] })
      const settled = running.then(
        () => 'resolved',
        (err: unknown) => err,
      )
      await until(() => ctx.logs.some((l) => l.line === 'started'), 'the container to start', 30_000)
      ctx.abort(new Error('cancelled'))
      const err = await settled
      expect(err).not.toBe('resolved')
      expect((await s.env.containers!.inspect({ kind: 'run', entityId: ctx.externalId })).state).toBe('missing')
    },
    LONG,
  )
})
