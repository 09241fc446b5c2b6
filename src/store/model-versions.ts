/**
 * Model versions (table model_versions): version N of a model, registered by its N-th
 * successful run with the artifact on disk. Written only by `model-run` turns; read by the
 * HTTP edge and serving.
 */
import type postgres from 'postgres'
import { timed, type Db } from './db.ts'

export type ArtifactFormat = 'quadrax.tabular' | 'files'

type Json = postgres.JSONValue

export interface VersionRow {
  modelId: string
  version: number
  runId: string | null
  artifactPath: string
  artifactFormat: ArtifactFormat
  inputSchema: unknown
  metrics: Record<string, number>
  files: { path: string; bytes: number }[]
  bytes: number
  aliases: string[]
  createdAt: Date
}

const VERSION = (sql: Db) => sql`
  v.model_id as "modelId", v.version, v.run_id as "runId", v.artifact_path as "artifactPath", v.artifact_format as "artifactFormat",
  v.input_schema as "inputSchema", v.metrics, v.files, v.bytes, v.created_at as "createdAt",
  coalesce((select array_agg(a.alias order by a.alias) from model_aliases a where a.model_id = v.model_id and a.version = v.version), '{}') as aliases`

export interface NewVersion {
  modelId: string
  runId: string
  artifactPath: string
  artifactFormat: ArtifactFormat
  inputSchema: unknown
  metrics: Record<string, number>
  files: { path: string; bytes: number }[]
  bytes: number
}

/**
 * Register the next version of a model (in the run's success turn). A per-model advisory lock
 * held to the end of the turn's transaction numbers versions without gaps or repeats: two
 * runs ending at once get N and N+1. Throws when the model is gone.
 */
export const registerVersion = timed('model_versions.registerVersion', async function registerVersion(tx: Db, v: NewVersion): Promise<number> {
  await tx`select pg_advisory_xact_lock(hashtextextended(${'quadrax-model-version:' + v.modelId}, 0))`
  const [row] = await tx<{ version: number }[]>`
    insert into model_versions (model_id, version, run_id, artifact_path, artifact_format, input_schema, metrics, files, bytes)
    select m.id, coalesce((select max(version) from model_versions where model_id = m.id), 0) + 1, ${v.runId}, ${v.artifactPath}, ${v.artifactFormat},
           ${v.inputSchema === null || v.inputSchema === undefined ? null : tx.json(v.inputSchema as Json)},
           ${tx.json(v.metrics as Json)}, ${tx.json(v.files as unknown as Json)}, ${v.bytes}
    from models m where m.id = ${v.modelId}
    returning version`
  if (!row) throw new Error(`model ${v.modelId} is gone: cannot register a version`)
  return row.version
})

export const listVersions = timed('model_versions.listVersions', async function listVersions(sql: Db, modelId: string): Promise<VersionRow[]> {
  return sql<VersionRow[]>`select ${VERSION(sql)} from model_versions v where v.model_id = ${modelId} order by v.version desc`
})

export const findVersion = timed('model_versions.findVersion', async function findVersion(sql: Db, modelId: string, version: number): Promise<VersionRow | undefined> {
  const [row] = await sql<VersionRow[]>`select ${VERSION(sql)} from model_versions v where v.model_id = ${modelId} and v.version = ${version}`
  return row
})
