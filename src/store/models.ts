/**
 * Models (table models), their aliases (model_aliases) and which version is deployed.
 * Written only by the model's own actor (src/actors/model.ts); runs and versions belong to
 * the model-run actors (./model-runs.ts, ./model-versions.ts).
 *
 * A model's status, its active runs and its latest version are read from its runs and
 * versions here, never stored on the model: DEPLOYED when a version is served; else TRAINING
 * while a run is queued or running; else TRAINED once a version exists; FAILED when the last
 * run to end failed; else DRAFT.
 */
import { timed, type Db } from './db.ts'
import type { ArtifactFormat } from './model-versions.ts'
import { decodeCursor, toPage, type Page } from './pagination.ts'

type ModelType = 'CLASSIFICATION' | 'REGRESSION'
type Framework = 'TENSORFLOW' | 'PYTORCH' | 'SKLEARN' | 'XGBOOST' | 'CUSTOM'
type ModelStatus = 'DRAFT' | 'TRAINING' | 'TRAINED' | 'DEPLOYED' | 'FAILED'

export interface ModelRow {
  id: string
  userId: string
  /** The organisation it is shared in, with its runs and versions (null: personal). */
  orgId: string | null
  name: string
  description: string | null
  type: ModelType
  framework: Framework
  workstationId: string | null
  status: ModelStatus
  activeRuns: number
  latestVersion: number
  deployedVersion: number | null
  deployedAlias: string | null
  deployedAt: Date | null
  createdAt: Date
  updatedAt: Date
}

/**
 * The model's columns and what is read from its runs and versions, over `models m` (the
 * index idx_model_runs_model_status serves both lateral reads).
 */
const MODEL = (sql: Db) => sql`
  m.id, m.user_id as "userId", m.org_id as "orgId", m.name, m.description, m.type, m.framework, m.workstation_id as "workstationId",
  case
    when m.deployed_version is not null then 'DEPLOYED'
    when r.active > 0 then 'TRAINING'
    when v.latest is not null then 'TRAINED'
    when e.last_ended = 'FAILED' then 'FAILED'
    else 'DRAFT'
  end as status,
  r.active as "activeRuns", coalesce(v.latest, 0) as "latestVersion", m.deployed_version as "deployedVersion",
  m.deployed_alias as "deployedAlias", m.deployed_at as "deployedAt", m.created_at as "createdAt", m.updated_at as "updatedAt"`

const DERIVED = (sql: Db) => sql`
  cross join lateral (select count(*)::int as active from model_runs x where x.model_id = m.id and x.status in ('QUEUED', 'RUNNING')) r
  left join lateral (
    select e.status as last_ended from model_runs e
    where e.model_id = m.id and e.status in ('SUCCEEDED', 'FAILED', 'CANCELLED') order by e.finished_at desc nulls last limit 1
  ) e on true
  cross join lateral (select max(version) as latest from model_versions where model_id = m.id) v`

export interface NewModel {
  id: string
  userId: string
  orgId: string | null
  name: string
  description: string | null
  type: ModelType
  framework: Framework
  workstationId: string | null
}

/** Insert a model (its create turn). A name the owner already uses is a unique violation. */
export const insertModel = timed('models.insertModel', async function insertModel(tx: Db, m: NewModel): Promise<void> {
  await tx`
    insert into models (id, user_id, org_id, name, description, type, framework, workstation_id)
    values (${m.id}, ${m.userId}, ${m.orgId}, ${m.name}, ${m.description}, ${m.type}, ${m.framework}, ${m.workstationId})`
})

export const findModel = timed('models.findModel', async function findModel(sql: Db, id: string): Promise<ModelRow | undefined> {
  const [row] = await sql<ModelRow[]>`select ${MODEL(sql)} from models m ${DERIVED(sql)} where m.id = ${id}`
  return row
})

/** The owner of a model (its actor's check, topic authorization), or undefined. */
export const modelOwner = timed('models.modelOwner', async function modelOwner(sql: Db, id: string): Promise<string | undefined> {
  const [row] = await sql<{ userId: string }[]>`select user_id as "userId" from models where id = ${id}`
  return row?.userId
})

/** Share the model (with its runs and versions) in org `orgId`, or (null) make it personal (its move turn). */
export const setModelOrg = timed('models.setModelOrg', async function setModelOrg(tx: Db, id: string, orgId: string | null): Promise<void> {
  await tx`update models set org_id = ${orgId}, updated_at = now() where id = ${id}`
})

export interface ModelListOptions {
  /** This owner's models, in no org or in an org the owner is still a member of (their own list). */
  userId?: string
  /** Every model of this organisation, whoever made it. */
  orgId?: string
  limit: number
  cursor?: string
  type?: ModelType
  status?: ModelStatus
  search?: string
  framework?: Framework
}

export const listModels = timed('models.listModels', async function listModels(sql: Db, o: ModelListOptions): Promise<Page<ModelRow>> {
  const c = decodeCursor(o.cursor)
  const pattern = o.search ? `%${o.search.replace(/[\\%_]/g, (m) => '\\' + m)}%` : null
  const rows = await sql<(ModelRow & { cursorAt: string })[]>`
    select * from (
      select ${MODEL(sql)}, m.created_at::text as "cursorAt" from models m ${DERIVED(sql)}
      where true
        ${o.userId ? sql`and m.user_id = ${o.userId} and (m.org_id is null or exists (select 1 from org_members om where om.org_id = m.org_id and om.user_id = ${o.userId}))` : sql``}
        ${o.orgId ? sql`and m.org_id = ${o.orgId}` : sql``}
        ${c ? sql`and (m.created_at, m.id) > (${c.t}::text::timestamptz, ${c.id}::uuid)` : sql``}
        ${o.type ? sql`and m.type = ${o.type}` : sql``}
        ${o.framework ? sql`and m.framework = ${o.framework}` : sql``}
        ${pattern ? sql`and (m.name ilike ${pattern} or m.description ilike ${pattern})` : sql``}
    ) models
    ${o.status ? sql`where status = ${o.status}` : sql``}
    order by "createdAt", id
    limit ${o.limit + 1}`
  return toPage(rows, o.limit)
})

export interface ModelPatch {
  name?: string
  description?: string | null
  workstationId?: string | null
}

/** Apply a patch (its update turn). A name the owner already uses is a unique violation. */
export const updateModel = timed('models.updateModel', async function updateModel(tx: Db, id: string, patch: ModelPatch): Promise<void> {
  const cols: Record<string, unknown> = {}
  if (patch.name !== undefined) cols.name = patch.name
  if (patch.description !== undefined) cols.description = patch.description
  if (patch.workstationId !== undefined) cols.workstation_id = patch.workstationId
  if (Object.keys(cols).length === 0) return
  await tx`update models set ${tx(cols)}, updated_at = now() where id = ${id}`
})

/**
 * Delete a model with no active run (its runs, metrics, versions and aliases go with it),
 * in its delete turn. The row lock is taken first: a run being created for this model holds
 * a key-share lock on it until it commits, so the active-run check that follows, a statement
 * of its own, sees that run. Returns 'deleted', 'active' or 'missing'.
 */
export const deleteModel = timed('models.deleteModel', async function deleteModel(tx: Db, id: string): Promise<'deleted' | 'active' | 'missing'> {
  const [row] = await tx<{ id: string }[]>`select id from models where id = ${id} for update`
  if (!row) return 'missing'
  const [active] = await tx<{ n: number }[]>`select count(*)::int as n from model_runs where model_id = ${id} and status in ('QUEUED', 'RUNNING')`
  if (active!.n > 0) return 'active'
  await tx`delete from models where id = ${id}`
  return 'deleted'
})

// ---- aliases and deployment ---------------------------------------------------------------

export interface AliasRow {
  alias: string
  version: number
  updatedAt: Date
}

export const listAliases = timed('models.listAliases', async function listAliases(sql: Db, modelId: string): Promise<AliasRow[]> {
  return sql<AliasRow[]>`select alias, version, updated_at as "updatedAt" from model_aliases where model_id = ${modelId} order by alias`
})

/** Point `alias` at `version` (created or moved). Undefined when the version does not exist. */
export const setAlias = timed('models.setAlias', async function setAlias(tx: Db, modelId: string, alias: string, version: number): Promise<AliasRow | undefined> {
  const [row] = await tx<AliasRow[]>`
    insert into model_aliases (model_id, alias, version)
    select ${modelId}, ${alias}, ${version} where exists (select 1 from model_versions where model_id = ${modelId} and version = ${version})
    on conflict (model_id, alias) do update set version = excluded.version, updated_at = now()
    returning alias, version, updated_at as "updatedAt"`
  return row
})

export const deleteAlias = timed('models.deleteAlias', async function deleteAlias(tx: Db, modelId: string, alias: string): Promise<boolean> {
  const rows = await tx`delete from model_aliases where model_id = ${modelId} and alias = ${alias} returning alias`
  return rows.length > 0
})

export const resolveAlias = timed('models.resolveAlias', async function resolveAlias(sql: Db, modelId: string, alias: string): Promise<number | undefined> {
  const [row] = await sql<{ version: number }[]>`select version from model_aliases where model_id = ${modelId} and alias = ${alias}`
  return row?.version
})

/** Serve `version` (`alias`: the alias it was deployed by), or nothing (version null). */
export const setDeployment = timed('models.setDeployment', async function setDeployment(tx: Db, modelId: string, version: number | null, alias: string | null): Promise<void> {
  await tx`
    update models set deployed_version = ${version}, deployed_alias = ${alias}, deployed_at = ${version === null ? null : new Date()}, updated_at = now()
    where id = ${modelId}`
})

export interface Deployment {
  modelId: string
  userId: string
  orgId: string | null
  version: number
  artifactPath: string
  artifactFormat: ArtifactFormat
}

/** A model's owner and deployment (version null when it is not deployed); undefined when there is no such model. */
export const findDeployment = timed('models.findDeployment', async function findDeployment(sql: Db, modelId: string): Promise<{ modelId: string; userId: string; orgId: string | null; version: number | null; artifactPath: string | null; artifactFormat: ArtifactFormat | null } | undefined> {
  const [row] = await sql<{ modelId: string; userId: string; orgId: string | null; version: number | null; artifactPath: string | null; artifactFormat: ArtifactFormat | null }[]>`
    select m.id as "modelId", m.user_id as "userId", m.org_id as "orgId", v.version, v.artifact_path as "artifactPath", v.artifact_format as "artifactFormat"
    from models m left join model_versions v on v.model_id = m.id and v.version = m.deployed_version
    where m.id = ${modelId}`
  return row
})

/** Every deployed model with its artifact (loaded for serving at boot). */
export const listDeployments = timed('models.listDeployments', async function listDeployments(sql: Db): Promise<Deployment[]> {
  return sql<Deployment[]>`
    select m.id as "modelId", m.user_id as "userId", m.org_id as "orgId", v.version, v.artifact_path as "artifactPath", v.artifact_format as "artifactFormat"
    from models m join model_versions v on v.model_id = m.id and v.version = m.deployed_version`
})
