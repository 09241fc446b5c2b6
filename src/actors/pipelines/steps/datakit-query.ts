/**
 * `datakit.query` {datakits: {alias: id}, sql, name, datakitId?}: one read-only
 * statement in the DataKit sandbox (the dataset engine's: fresh DuckDB, no file or network
 * access, one SELECT) over the owner's DataKits, each the view named by its alias (its newest
 * READY version); the whole result is written as Parquet and saved as a new DataKit named
 * `name`, or as the next version of the owner's DataKit `datakitId` (renamed `name`, as an upload
 * with a datakitId and a name does), exactly as an upload is (the `datakit` actor: storage
 * quota, profiling). The step ends when the version is READY.
 * Outputs: `datakitId`, `version`, `rows`.
 *
 * The result file's id is the attempt's external id (and so is a new DataKit's): a node that
 * takes the run over finds what the attempt saved and waits for it instead of saving twice.
 *
 * Cache key inputs: the content (sha256) of each input DataKit's version (the SQL is in `with`).
 */
import { createReadStream } from 'node:fs'
import { mkdir, rm } from 'node:fs/promises'
import { AppError } from '../../../core/errors.ts'
import { ActorTimeoutError } from '../../runtime/index.ts'
import * as datakits from '../../../store/datakits.ts'
import { DATAKIT_KIND, type DatakitMessage, type UploadedFile } from '../../datakit.ts'
import { datakitFiles } from '../../datakit-files.ts'
import { StepFailure, type StepEnv, type StepKindRuntime, type StepRunContext } from './executor.ts'
import { asFailure, checkWith, fingerprints, ownedDatakit, readyInputs, waitFor, type WithOf } from './support.ts'

type Spec = WithOf<'datakit.query'>

async function sha256Of(path: string): Promise<string> {
  const hasher = new Bun.CryptoHasher('sha256')
  for await (const chunk of createReadStream(path)) hasher.update(chunk as Buffer)
  return hasher.digest('hex')
}

/** The version this attempt saved already (a node took the run over), if any. */
async function savedVersion(env: StepEnv, ctx: StepRunContext, spec: Spec): Promise<{ datakitId: string; version: number } | undefined> {
  const datakitId = spec.datakitId ?? ctx.externalId
  const mine = (await datakits.listVersions(env.sql, datakitId)).find((v) => v.fileId === ctx.externalId)
  return mine && { datakitId, version: mine.version }
}

/** Run the statement, write its result as the attempt's file, and hand it to the `datakit` actor. */
async function save(env: StepEnv, ctx: StepRunContext, spec: Spec): Promise<{ datakitId: string; version: number }> {
  const inputs = await readyInputs(env, ctx.ownerId, spec.datakits)
  const target = spec.datakitId === undefined ? undefined : await ownedDatakit(env, ctx.ownerId, spec.datakitId)
  await mkdir(env.settings.datakitDir, { recursive: true })
  const dest = datakitFiles(env.settings.datakitDir, ctx.externalId).original
  let keep = false
  try {
    const res = await env.datasets
      .exportQuery(Object.fromEntries(Object.entries(inputs).map(([alias, i]) => [alias, i.parquetPath])), spec.sql, 'parquet', dest, {
        user: ctx.ownerId,
        signal: ctx.signal,
        timeoutMs: env.settings.queryTimeoutMs,
        maxBytes: env.settings.datakitMaxBytes,
      })
      .catch((err: unknown) => {
        // The engine names its own export limit; the bound here is the upload's.
        if (err instanceof AppError && err.code === 'export_too_large') {
          throw new StepFailure(`The result grew past ${env.settings.datakitMaxBytes} bytes (MAX_FILE_SIZE: a DataKit is at most as large as an upload) and was stopped`)
        }
        return asFailure(err, 'The query failed: ')
      })
    const file: UploadedFile = {
      fileId: ctx.externalId,
      originalName: `${ctx.stepId}.parquet`,
      format: 'parquet',
      sizeBytes: res.bytes,
      sha256: await sha256Of(dest),
      uploadedBy: ctx.ownerId,
    }
    const message: DatakitMessage = target
      ? { type: 'addVersion', file, name: spec.name }
      : { type: 'create', ownerId: ctx.ownerId, name: spec.name, description: null, file }
    const datakitId = target?.id ?? ctx.externalId
    try {
      const reply = (await env.ask(DATAKIT_KIND, datakitId, message)) as { id: string; version: number }
      keep = true
      return { datakitId, version: reply.version }
    } catch (err) {
      // A turn that timed out may still commit: its file stays (the orphan sweep removes it if no version names it).
      if (err instanceof ActorTimeoutError) keep = true
      return asFailure(err, 'The result could not be saved: ')
    }
  } finally {
    if (!keep) await rm(dest, { force: true })
  }
}

async function run(env: StepEnv, ctx: StepRunContext, w: Record<string, unknown>): Promise<Record<string, unknown>> {
  const spec = checkWith('datakit.query', w)
  // Looked for on every attempt, not only when `resumed`: it costs one query and a takeover is then never a second save.
  const saved = (await savedVersion(env, ctx, spec)) ?? (await save(env, ctx, spec))
  const v = await waitFor(env, `datakit:${saved.datakitId}`, ctx.signal, async () => {
    const row = await datakits.findVersion(env.sql, saved.datakitId, saved.version)
    if (!row) throw new StepFailure(`DataKit ${saved.datakitId} version ${saved.version} was deleted before it was ready`)
    return row.status === 'PROCESSING' ? undefined : row
  })
  if (v.status === 'FAILED') throw new StepFailure(`The result was saved as DataKit ${saved.datakitId} version ${saved.version}, which FAILED: ${v.error ?? 'no reason given'}`)
  return { datakitId: saved.datakitId, version: saved.version, rows: v.rowCount }
}

export const datakitQuery: StepKindRuntime = {
  async inputs(env, ownerId, w) {
    const spec = checkWith('datakit.query', w)
    if (spec.datakitId !== undefined) await ownedDatakit(env, ownerId, spec.datakitId)
    return { datakits: fingerprints(await readyInputs(env, ownerId, spec.datakits)) }
  },
  run,
}
