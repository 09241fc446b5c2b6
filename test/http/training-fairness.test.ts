/**
 * Training slots are shared fairly between users (issue 14, item 3), against the real engine:
 * with TRAINING_CONCURRENCY=2 and TRAINING_CONCURRENCY_PER_USER=1, user A's second run waits
 * while user B's run starts, though A asked first. The runs are container runs whose command
 * waits for a file the test creates in their /input folder, so the test decides when each
 * one may finish.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { datakitsFeature } from '../../src/features/datakits.ts'
import { modelsFeature } from '../../src/features/models.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { multipartBytes, postUpload } from '../support/datakit-upload.ts'
import { dockerTestEnv, removeContainersOf, until } from '../support/docker.ts'

const docker = dockerTestEnv(import.meta.file)
/** Waits for /input/go, then leaves a model behind. */
const GATED = 'while [ ! -e /input/go ]; do sleep 0.05; done; echo trained > /output/model.txt'

describe.skipIf(!docker)('training slots are fair between users (real engine)', () => {
  let t: TestServer
  let modelDir: string
  let uploadDir: string

  beforeAll(async () => {
    modelDir = await mkdtemp(join(tmpdir(), 'quadrax-models-'))
    uploadDir = await mkdtemp(join(tmpdir(), 'quadrax-uploads-'))
    t = await testServer(
      { DOCKER_HOST: docker!.host, MODEL_DIR: modelDir, UPLOAD_DIR: uploadDir, TRAINING_IMAGES: docker!.image, TRAINING_CONCURRENCY: '2', TRAINING_CONCURRENCY_PER_USER: '1' },
      { features: [datakitsFeature, modelsFeature], actorConfig: { reminderPollMs: 100 } },
    )
  }, 60_000)

  afterAll(async () => {
    if (t) {
      await removeContainersOf(docker!.raw, t.db.sql)
      await t.stop()
    }
    if (modelDir) await rm(modelDir, { recursive: true, force: true })
    if (uploadDir) await rm(uploadDir, { recursive: true, force: true })
  })

  /** A user with a READY DataKit and a CUSTOM model: what a container run needs. */
  const trainer = async () => {
    const u = await t.user()
    const form = await multipartBytes([
      { name: 'dataset', filename: 'data.csv', contentType: 'text/csv', data: 'x,y\n1,2\n3,4\n' },
      { name: 'name', value: 'tiny' },
    ])
    const up = await postUpload(t.url, u.token, form)
    expect(up.status).toBe(201)
    const kit = up.body.data.id as string
    await until(async () => (await t.json('GET', `/api/datakits/${kit}`, { token: u.token })).body.data.status === 'READY' || undefined, 'the DataKit to be READY', 60_000)
    const m = await t.json('POST', '/api/models', { token: u.token, body: { name: `fair-${crypto.randomUUID().slice(0, 8)}`, type: 'CLASSIFICATION', framework: 'CUSTOM' } })
    const model = m.body.data.id as string
    const run = async () => {
      const r = await t.json('POST', `/api/models/${model}/train`, { token: u.token, body: { datakitId: kit, image: docker!.image, command: ['sh', '-c', GATED], resources: { cpu: 0.25, memory: 32 } } })
      expect(r.status).toBe(202)
      return r.body.data.id as string
    }
    const status = async (id: string) => (await t.json('GET', `/api/runs/${id}`, { token: u.token })).body.data.status as string
    /** Let the run finish: its /input folder is made once it holds a slot. */
    const release = async (id: string) => {
      const input = join(modelDir, model, 'runs', id, 'attempt-1-input')
      await until(() => existsSync(input), `run ${id}'s input folder`, 30_000)
      await writeFile(join(input, 'go'), '')
    }
    return { run, status, release }
  }

  test("with one slot per user, B's run starts before A's second, though A asked first", async () => {
    const a = await trainer()
    const b = await trainer()
    const a1 = await a.run()
    await until(async () => (await a.status(a1)) === 'RUNNING' || undefined, "A's first run to start", 30_000)
    const a2 = await a.run()
    const b1 = await b.run()
    // Whichever starts next tells: a FIFO gives the free slot to A's second run.
    const next = await until(
      async () => {
        const [sa, sb] = await Promise.all([a.status(a2), b.status(b1)])
        return sa === 'RUNNING' || sb === 'RUNNING' ? { a2: sa, b1: sb } : undefined
      },
      'a second run to start',
      30_000,
    )
    expect(next).toEqual({ a2: 'QUEUED', b1: 'RUNNING' })
    // A's second run starts once A's first gives its slot back, and every run ends.
    await a.release(a1)
    await until(async () => (await a.status(a2)) === 'RUNNING' || undefined, "A's second run to start", 30_000)
    await b.release(b1)
    await a.release(a2)
    for (const [s, id] of [
      [a.status, a1],
      [a.status, a2],
      [b.status, b1],
    ] as const) {
      expect(await until(async () => ((await s(id)) === 'SUCCEEDED' ? 'SUCCEEDED' : undefined), `run ${id} to succeed`, 30_000)).toBe('SUCCEEDED')
    }
  }, 120_000)
})
