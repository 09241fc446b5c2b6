/**
 * What the step-kind tests share: a real server (PostgreSQL, the actor runtime, DuckDB, and the
 * Docker Engine when DOCKER_HOST is set) with the DataKit and model features, and the StepEnv
 * the pipelines feature builds from the same engines (src/features/pipelines.ts), so a kind
 * runs exactly as a `pipeline-run` actor would run it, without a pipeline around it.
 */
import { writeFile, mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'bun:test'
import { datakitDir, datakitFiles } from '../../../src/actors/datakit-files.ts'
import { StepFailure, type StepEnv, type StepLogLine, type StepRunContext } from '../../../src/actors/pipelines/steps/executor.ts'
import { closeIdleWorker } from '../../../src/engines/trainer/pool.ts'
import { datakitsFeature } from '../../../src/features/datakits.ts'
import { modelsFeature } from '../../../src/features/models.ts'
import { stepEnv } from '../../../src/features/pipelines.ts'
import * as datakits from '../../../src/store/datakits.ts'
import { testServer, type TestServer } from '../../support/app.ts'
import { service } from '../../support/services.ts'
import { until } from '../../support/until.ts'

export const TEST_IMAGE = process.env.QUADRAX_TEST_IMAGE ?? 'quadrax/busybox:test'

export interface StepTestServer {
  t: TestServer
  env: StepEnv
  dockerHost: string | undefined
  /** A READY DataKit of `ownerId` holding `csv` (a new version of `addTo` when given). */
  datakit(ownerId: string, csv: string, addTo?: string): Promise<string>
  /** A context for one attempt; `logs` collects what the step logged. */
  context(ownerId: string, o?: Partial<StepRunContext>): StepRunContext & { logs: StepLogLine[]; abort(reason?: unknown): void }
  stop(): Promise<void>
}

export async function stepTestServer(file: string): Promise<StepTestServer> {
  const dockerHost = service('docker', file)
  const uploadDir = await mkdtemp(join(tmpdir(), 'quadrax-steps-uploads-'))
  const modelDir = await mkdtemp(join(tmpdir(), 'quadrax-steps-models-'))
  const t = await testServer(
    { UPLOAD_DIR: uploadDir, MODEL_DIR: modelDir, TRAINING_IMAGES: TEST_IMAGE, ...(dockerHost ? { DOCKER_HOST: dockerHost } : {}) },
    { features: [datakitsFeature, modelsFeature], actorConfig: { reminderPollMs: 100 } },
  )
  const { config, sql, actors } = t.server.http
  const engines = t.server.context.engines

  const env = stepEnv(t.server.http, engines)

  async function datakit(ownerId: string, csv: string, addTo?: string): Promise<string> {
    const dir = datakitDir(config.uploadDir)
    await mkdir(dir, { recursive: true })
    const fileId = crypto.randomUUID()
    await writeFile(datakitFiles(dir, fileId).original, csv)
    const file = { fileId, originalName: 'data.csv', format: 'csv' as const, sizeBytes: Buffer.byteLength(csv), sha256: new Bun.CryptoHasher('sha256').update(csv).digest('hex'), uploadedBy: ownerId }
    const id = addTo ?? crypto.randomUUID()
    const reply = (await actors.ask('datakit', id, addTo ? { type: 'addVersion', file } : { type: 'create', ownerId, name: `kit-${id.slice(0, 8)}`, description: null, file })) as { version: number }
    const v = await until(async () => {
      const row = await datakits.findVersion(sql, id, reply.version)
      return row?.status === 'PROCESSING' ? undefined : row
    }, `DataKit ${id} to be profiled`)
    if (v?.status !== 'READY') throw new Error(`DataKit ${id} is ${v?.status}: ${v?.error}`)
    return id
  }

  function context(ownerId: string, o: Partial<StepRunContext> = {}) {
    const ctl = new AbortController()
    const logs: StepLogLine[] = []
    return {
      runId: crypto.randomUUID(),
      stepId: 'step',
      attempt: 1,
      ownerId,
      externalId: crypto.randomUUID(),
      resumed: false,
      signal: ctl.signal,
      log: (lines: StepLogLine[]) => logs.push(...lines),
      ...o,
      logs,
      abort: (reason?: unknown) => ctl.abort(reason),
    }
  }

  return {
    t,
    env,
    dockerHost,
    datakit,
    context,
    async stop() {
      await t.stop()
      closeIdleWorker()
      await rm(uploadDir, { recursive: true, force: true })
      await rm(modelDir, { recursive: true, force: true })
    },
  }
}

/** The reason a step failed with, checking it failed with a StepFailure (a reason for the user). */
export async function failure(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(StepFailure)
  return (err as StepFailure).message
}
