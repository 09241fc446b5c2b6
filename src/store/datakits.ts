/**
 * DataKits and their versions (sql/0003_datakits.sql), and the per-user storage quota.
 *
 * The `datakits` row is the `datakit` actor's state (saveDatakit/deleteDatakit are its
 * persist); version rows are written by the same actor through its turn's transaction. The
 * HTTP edge only reads from here.
 *
 * Functions the actor calls with its turn's transaction (ctx.tx) build no nested fragments
 * (`${VERSION(sql)}`): that handle runs every tagged template it is given as a query of its own.
 */
import { AppError } from '../core/errors.ts'
import { timed, type Db } from './db.ts'
import { decodeCursor, toPage, type Page } from './pagination.ts'

type DatakitStatus = 'PROCESSING' | 'READY' | 'FAILED'

/** A datakit row: the actor's state. */
export interface DatakitRow {
  id: string
  ownerId: string
  /** The organisation it is shared in (null: personal). */
  orgId: string | null
  name: string
  description: string | null
  /** The status of the latest version. */
  status: DatakitStatus
  currentVersion: number
  createdAt: Date
  updatedAt: Date
}

/** A version without its profile (lists, and everything that only needs the file). */
export interface VersionRow {
  datakitId: string
  version: number
  ownerId: string
  uploadedBy: string | null
  status: DatakitStatus
  error: string | null
  errorLine: number | null
  format: string
  originalName: string
  fileId: string
  sizeBytes: number
  sha256: string
  parquetBytes: number | null
  rowCount: number | null
  columnCount: number | null
  createdAt: Date
  profiledAt: Date | null
}

export interface VersionWithProfile extends VersionRow {
  profile: unknown
}

/** A datakit joined with its latest version (list items and details). */
export interface DatakitWithVersion extends DatakitRow {
  latest: VersionRow
}

const DATAKIT = (sql: Db) => sql`
  d.id, d.owner_id as "ownerId", d.org_id as "orgId", d.name, d.description, d.status, d.current_version as "currentVersion",
  d.created_at as "createdAt", d.updated_at as "updatedAt"`

const VERSION = (sql: Db) => sql`
  v.datakit_id as "datakitId", v.version, v.owner_id as "ownerId", v.uploaded_by as "uploadedBy", v.status, v.error,
  v.error_line as "errorLine", v.format, v.original_name as "originalName", v.file_id as "fileId", v.size_bytes as "sizeBytes",
  v.sha256, v.parquet_bytes as "parquetBytes", v.row_count as "rowCount", v.column_count as "columnCount",
  v.created_at as "createdAt", v.profiled_at as "profiledAt"`

// ---- datakits (the actor's state) ---------------------------------------------------------

export const findDatakit = timed('datakits.findDatakit', async function findDatakit(sql: Db, id: string): Promise<DatakitRow | undefined> {
  const [row] = await sql<DatakitRow[]>`select ${DATAKIT(sql)} from datakits d where d.id = ${id}`
  return row
})

/** Insert or update the datakit row (the actor's persist). The owner never changes; the org does (a move). */
export function saveDatakit(sql: Db, d: DatakitRow) {
  return sql`
    insert into datakits (id, owner_id, org_id, name, description, status, current_version, created_at, updated_at)
    values (${d.id}, ${d.ownerId}, ${d.orgId}, ${d.name}, ${d.description}, ${d.status}, ${d.currentVersion}, ${d.createdAt}, ${d.updatedAt})
    on conflict (id) do update set
      org_id = excluded.org_id, name = excluded.name, description = excluded.description, status = excluded.status,
      current_version = excluded.current_version, updated_at = excluded.updated_at`
}

/** Delete the datakit; its versions go with it (on delete cascade). */
export function deleteDatakit(sql: Db, id: string) {
  return sql`delete from datakits where id = ${id}`
}

/** The datakit with its latest version, or undefined. */
export const findWithLatest = timed('datakits.findWithLatest', async function findWithLatest(sql: Db, id: string): Promise<(DatakitWithVersion & { profile: unknown }) | undefined> {
  const [row] = await sql<(DatakitRow & { v: VersionRow; profile: unknown })[]>`
    select ${DATAKIT(sql)}, to_jsonb(x) - 'profile' as v, x.profile
    from datakits d
    join lateral (select ${VERSION(sql)}, v.profile from datakit_versions v where v.datakit_id = d.id and v.version = d.current_version) x on true
    where d.id = ${id}`
  if (!row) return undefined
  const { v, profile, ...d } = row
  return { ...d, latest: reviveVersion(v), profile }
})

export interface ListOptions {
  limit: number
  cursor?: string
  /** Only this owner's datakits (every caller but an admin), in no org or in an org `memberId` is in. */
  ownerId?: string
  /** With ownerId: the caller, whose datakits in orgs they have left are not theirs to list. */
  memberId?: string
  /** Only the datakits of this organisation (whoever owns them). */
  orgId?: string
  /** Case-insensitive substring of the name. */
  search?: string
  status?: DatakitStatus
}

/** Datakits in creation order (keyset on created_at, id), each with its latest version. */
export const listDatakits = timed('datakits.listDatakits', async function listDatakits(sql: Db, opts: ListOptions): Promise<Page<DatakitWithVersion>> {
  const c = decodeCursor(opts.cursor)
  const pattern = opts.search ? `%${opts.search.replace(/[\\%_]/g, (m) => '\\' + m)}%` : null
  const rows = await sql<(DatakitRow & { v: VersionRow; cursorAt: string })[]>`
    select ${DATAKIT(sql)}, d.created_at::text as "cursorAt", to_jsonb(x) as v
    from datakits d
    join lateral (select ${VERSION(sql)} from datakit_versions v where v.datakit_id = d.id and v.version = d.current_version) x on true
    where true
      ${opts.ownerId ? sql`and d.owner_id = ${opts.ownerId}` : sql``}
      ${opts.memberId ? sql`and (d.org_id is null or exists (select 1 from org_members om where om.org_id = d.org_id and om.user_id = ${opts.memberId}))` : sql``}
      ${opts.orgId ? sql`and d.org_id = ${opts.orgId}` : sql``}
      ${c ? sql`and (d.created_at, d.id) > (${c.t}::text::timestamptz, ${c.id}::uuid)` : sql``}
      ${pattern ? sql`and d.name ilike ${pattern}` : sql``}
      ${opts.status ? sql`and d.status = ${opts.status}` : sql``}
    order by d.created_at, d.id
    limit ${opts.limit + 1}`
  const page = toPage(rows, opts.limit)
  return { nextCursor: page.nextCursor, items: page.items.map(({ v, ...d }) => ({ ...d, latest: reviveVersion(v) })) }
})

/** A version read through to_jsonb has its timestamps as text: make them Dates again. */
function reviveVersion(v: VersionRow): VersionRow {
  return {
    ...v,
    createdAt: new Date(v.createdAt as unknown as string),
    profiledAt: v.profiledAt === null ? null : new Date(v.profiledAt as unknown as string),
  }
}

// ---- versions ------------------------------------------------------------------------------

export interface NewVersion {
  datakitId: string
  version: number
  ownerId: string
  uploadedBy: string
  format: string
  originalName: string
  fileId: string
  sizeBytes: number
  sha256: string
}

export function insertVersion(sql: Db, v: NewVersion) {
  return sql`
    insert into datakit_versions (datakit_id, version, owner_id, uploaded_by, status, format, original_name, file_id, size_bytes, sha256)
    values (${v.datakitId}, ${v.version}, ${v.ownerId}, ${v.uploadedBy}, 'PROCESSING', ${v.format}, ${v.originalName}, ${v.fileId}, ${v.sizeBytes}, ${v.sha256})`
}

export const findVersion = timed('datakits.findVersion', async function findVersion(sql: Db, datakitId: string, version: number): Promise<VersionWithProfile | undefined> {
  const [row] = await sql<VersionWithProfile[]>`
    select ${VERSION(sql)}, v.profile from datakit_versions v where v.datakit_id = ${datakitId} and v.version = ${version}`
  return row
})

/** The newest READY version (with its profile), if any. */
export const latestReadyVersion = timed('datakits.latestReadyVersion', async function latestReadyVersion(sql: Db, datakitId: string): Promise<VersionWithProfile | undefined> {
  const [row] = await sql<VersionWithProfile[]>`
    select ${VERSION(sql)}, v.profile from datakit_versions v
    where v.datakit_id = ${datakitId} and v.status = 'READY' order by v.version desc limit 1`
  return row
})

/** Every version, newest first, without profiles. */
export const listVersions = timed('datakits.listVersions', async function listVersions(sql: Db, datakitId: string): Promise<VersionRow[]> {
  return await sql<VersionRow[]>`select ${VERSION(sql)} from datakit_versions v where v.datakit_id = ${datakitId} order by v.version desc`
})

/** The stored files of every version (to remove them after a delete). */
export const versionFiles = timed('datakits.versionFiles', async function versionFiles(sql: Db, datakitId: string): Promise<string[]> {
  const rows = await sql<{ fileId: string }[]>`select file_id as "fileId" from datakit_versions where datakit_id = ${datakitId}`
  return rows.map((r) => r.fileId)
})

/** Versions still PROCESSING: (datakit, version) pairs, to resume profiling after a restart. */
export const processingDatakits = timed('datakits.processingDatakits', async function processingDatakits(sql: Db): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`select distinct datakit_id as id from datakit_versions where status = 'PROCESSING'`
  return rows.map((r) => r.id)
})

/** Versions of one datakit still PROCESSING, oldest first (called in actor turns). */
export const processingVersions = timed('datakits.processingVersions', async function processingVersions(sql: Db, datakitId: string): Promise<{ version: number; fileId: string; format: string }[]> {
  return await sql<{ version: number; fileId: string; format: string }[]>`
    select version, file_id as "fileId", format from datakit_versions
    where datakit_id = ${datakitId} and status = 'PROCESSING' order by version`
})

/** Whether the version exists (called in actor turns). */
export const versionExists = timed('datakits.versionExists', async function versionExists(sql: Db, datakitId: string, version: number): Promise<boolean> {
  const rows = await sql`select 1 from datakit_versions where datakit_id = ${datakitId} and version = ${version}`
  return rows.length > 0
})

export interface ProfileOutcome {
  rowCount: number
  columnCount: number
  parquetBytes: number
  profile: unknown
}

/** PROCESSING → READY with the profile. False when the version is gone or was not PROCESSING. */
export const markReady = timed('datakits.markReady', async function markReady(sql: Db, datakitId: string, version: number, p: ProfileOutcome): Promise<boolean> {
  const rows = await sql`
    update datakit_versions set status = 'READY', error = null, error_line = null, row_count = ${p.rowCount},
      column_count = ${p.columnCount}, parquet_bytes = ${p.parquetBytes}, profile = ${sql.json(p.profile as never)}, profiled_at = now()
    where datakit_id = ${datakitId} and version = ${version} and status = 'PROCESSING'`
  return rows.count > 0
})

/** PROCESSING → FAILED with the reason. False when the version is gone or was not PROCESSING. */
export const markFailed = timed('datakits.markFailed', async function markFailed(sql: Db, datakitId: string, version: number, reason: string, line: number | null): Promise<boolean> {
  const rows = await sql`
    update datakit_versions set status = 'FAILED', error = ${reason}, error_line = ${line}, profiled_at = now()
    where datakit_id = ${datakitId} and version = ${version} and status = 'PROCESSING'`
  return rows.count > 0
})

/** Every file id known to the database (the orphan sweep keeps these). */
export const allFileIds = timed('datakits.allFileIds', async function allFileIds(sql: Db): Promise<Set<string>> {
  const rows = await sql<{ fileId: string }[]>`select file_id as "fileId" from datakit_versions`
  return new Set(rows.map((r) => r.fileId))
})

// ---- storage quota -------------------------------------------------------------------------
//
// Whose storage a version takes: its datakit's organisation's when the datakit is shared in
// one, else its owner's (a personal datakit). A move carries the bytes along.

/** Bytes stored for `userId` in personal datakits: uploaded files plus their Parquet read copies. */
const storageUsed = timed('datakits.storageUsed', async function storageUsed(sql: Db, userId: string): Promise<number> {
  const [row] = await sql<{ used: number }[]>`
    select coalesce(sum(v.size_bytes + coalesce(v.parquet_bytes, 0)), 0)::int8 as used
    from datakit_versions v join datakits d on d.id = v.datakit_id
    where v.owner_id = ${userId} and d.org_id is null`
  return row!.used
})

/** Bytes stored in the datakits of organisation `orgId`. */
const orgStorageUsed = timed('datakits.orgStorageUsed', async function orgStorageUsed(sql: Db, orgId: string): Promise<number> {
  const [row] = await sql<{ used: number }[]>`
    select coalesce(sum(v.size_bytes + coalesce(v.parquet_bytes, 0)), 0)::int8 as used
    from datakits d join datakit_versions v on v.datakit_id = d.id
    where d.org_id = ${orgId}`
  return row!.used
})

/** Bytes held by every version of one datakit (what a move carries to another account). */
export const datakitBytes = timed('datakits.datakitBytes', async function datakitBytes(sql: Db, datakitId: string): Promise<number> {
  const [row] = await sql<{ used: number }[]>`
    select coalesce(sum(size_bytes + coalesce(parquet_bytes, 0)), 0)::int8 as used from datakit_versions where datakit_id = ${datakitId}`
  return row!.used
})

/** Whether `userId` may create datakits in some organisation (MEMBER or above in one). */
export const createsInOrgs = timed('datakits.createsInOrgs', async function createsInOrgs(sql: Db, userId: string): Promise<boolean> {
  const [row] = await sql`select 1 from org_members where user_id = ${userId} and role <> 'VIEWER' limit 1`
  return row !== undefined
})

/** The admin's override for `userId`, or undefined (the configured default applies). */
async function quotaOverride(sql: Db, userId: string): Promise<number | undefined> {
  const [row] = await sql<{ quotaBytes: number }[]>`select quota_bytes as "quotaBytes" from user_storage_quotas where user_id = ${userId}`
  return row?.quotaBytes
}

/**
 * An org's storage quota (sql/0013_org_resources.sql `org_quotas`): what its admins chose
 * (`storage_bytes`) within the ceiling a platform admin set (`limit_storage_bytes`, NULL: the
 * configured default); undefined when neither is set.
 */
async function orgQuota(sql: Db, orgId: string): Promise<{ chosen: number | null; ceiling: number | null } | undefined> {
  const [row] = await sql<{ chosen: number | null; ceiling: number | null }[]>`
    select storage_bytes as chosen, limit_storage_bytes as ceiling from org_quotas where org_id = ${orgId}`
  return row
}

/** A user's storage: what is used, the quota that applies (an admin's override, or the default), and what is left. */
export interface StorageUsage {
  userId: string
  usedBytes: number
  quotaBytes: number
  remainingBytes: number
  overridden: boolean
}

/** An organisation's storage: used by its datakits, against its quota. */
export interface OrgStorageUsage {
  orgId: string
  usedBytes: number
  quotaBytes: number
  remainingBytes: number
  /** Whether the org's quota differs from ORG_DEFAULT_STORAGE_BYTES (its admins or a platform admin set one). */
  overridden: boolean
}

/** The storage quota rule, computed here only: the override if an admin set one, else `defaultQuotaBytes`. */
export const storageUsage = timed('datakits.storageUsage', async function storageUsage(sql: Db, userId: string, defaultQuotaBytes: number): Promise<StorageUsage> {
  const [usedBytes, override] = await Promise.all([storageUsed(sql, userId), quotaOverride(sql, userId)])
  const quotaBytes = override ?? defaultQuotaBytes
  return { userId, usedBytes, quotaBytes, remainingBytes: Math.max(0, quotaBytes - usedBytes), overridden: override !== undefined }
})

/**
 * The org storage quota rule, computed here only: the org admins' figure, never above the
 * ceiling (the platform admin's `limit_storage_bytes`, else `defaultQuotaBytes`).
 */
export const orgStorageUsage = timed('datakits.orgStorageUsage', async function orgStorageUsage(sql: Db, orgId: string, defaultQuotaBytes: number): Promise<OrgStorageUsage> {
  const [usedBytes, q] = await Promise.all([orgStorageUsed(sql, orgId), orgQuota(sql, orgId)])
  const ceiling = q?.ceiling ?? defaultQuotaBytes
  const quotaBytes = Math.min(q?.chosen ?? ceiling, ceiling)
  return { orgId, usedBytes, quotaBytes, remainingBytes: Math.max(0, quotaBytes - usedBytes), overridden: quotaBytes !== defaultQuotaBytes }
})

/** Whose storage a datakit's versions take: its org's, or (personal) its owner's. */
export type StorageAccount = { orgId: string } | { userId: string }

/** The defaults of both quota rules (USER_STORAGE_QUOTA_BYTES, ORG_DEFAULT_STORAGE_BYTES). */
export interface StorageDefaults {
  userBytes: number
  orgBytes: number
}

/** The usage of `account`, by the rule of its kind. */
export function accountUsage(sql: Db, account: StorageAccount, defaults: StorageDefaults): Promise<StorageUsage | OrgStorageUsage> {
  return 'orgId' in account ? orgStorageUsage(sql, account.orgId, defaults.orgBytes) : storageUsage(sql, account.userId, defaults.userBytes)
}

/** The account of a datakit owned by `ownerId`, shared in `orgId` (null: personal). */
export function storageAccount(d: { ownerId: string; orgId: string | null }): StorageAccount {
  return d.orgId ? { orgId: d.orgId } : { userId: d.ownerId }
}

/** The storage quota was (or would be) exceeded: 413, with the numbers in the details. */
export class StorageQuotaError extends AppError {
  constructor(usedBytes: number, incomingBytes: number, quotaBytes: number, org = false) {
    super(
      'storage_quota_exceeded',
      `Storage quota${org ? ' of the organisation' : ''} exceeded: ${usedBytes} bytes used of ${quotaBytes} allowed, and this upload needs ${incomingBytes} more. ` +
        (org ? 'Delete datakits or versions the organisation no longer needs, or ask its admins for a larger quota.' : 'Delete datakits or versions you no longer need, or ask an admin for a larger quota.'),
      {
        status: 413,
        details: [
          { field: 'usedBytes', message: String(usedBytes) },
          { field: 'allowedBytes', message: String(quotaBytes) },
          { field: 'incomingBytes', message: String(incomingBytes) },
        ],
      },
    )
  }
}

/**
 * Check that `bytes` more fit in the account's quota (a user's, or an org's), under the
 * account's storage lock in the caller's transaction (which records the version that takes
 * them), so two uploads that finish at once cannot both fit in the same remaining space.
 * Throws StorageQuotaError.
 */
export const reserveStorage = timed('datakits.reserveStorage', async function reserveStorage(tx: Db, account: StorageAccount, bytes: number, defaults: StorageDefaults): Promise<void> {
  const key = 'orgId' in account ? `datakit-storage:org:${account.orgId}` : `datakit-storage:${account.userId}`
  await tx`select pg_advisory_xact_lock(hashtextextended(${key}, 0))`
  const u = await accountUsage(tx, account, defaults)
  if (u.usedBytes + bytes > u.quotaBytes) throw new StorageQuotaError(u.usedBytes, bytes, u.quotaBytes, 'orgId' in account)
})

/** Set (or, with null, remove) the override for `userId`. */
export const setQuotaOverride = timed('datakits.setQuotaOverride', async function setQuotaOverride(sql: Db, userId: string, quotaBytes: number | null): Promise<void> {
  if (quotaBytes === null) await sql`delete from user_storage_quotas where user_id = ${userId}`
  else
    await sql`
      insert into user_storage_quotas (user_id, quota_bytes) values (${userId}, ${quotaBytes})
      on conflict (user_id) do update set quota_bytes = excluded.quota_bytes, updated_at = now()`
})


// ---- what training reads -------------------------------------------------------------------

/** The data a run trains on: a version of a DataKit, resolved when the run is planned. */
export interface TrainingSource {
  datakitId: string
  ownerId: string
  /** The DataKit's organisation (null: personal). */
  orgId: string | null
  version: number
  status: 'PROCESSING' | 'READY' | 'FAILED'
  fileId: string
  rowCount: number | null
}

/** Version `version` of a DataKit (default: its current one), as a training run reads it. */
export const findTrainingSource = timed('datakits.findTrainingSource', async function findTrainingSource(sql: Db, datakitId: string, version?: number): Promise<TrainingSource | undefined> {
  const [row] = await sql<TrainingSource[]>`
    select d.id as "datakitId", d.owner_id as "ownerId", d.org_id as "orgId", v.version, v.status, v.file_id as "fileId", v.row_count as "rowCount"
    from datakits d join datakit_versions v on v.datakit_id = d.id and v.version = coalesce(${version ?? null}::int, d.current_version)
    where d.id = ${datakitId}`
  return row
})
