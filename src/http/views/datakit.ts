/** DataKits as the API shows them: the TypeBox schemas of bodies, queries and answers, and the row serializers. */
import { t } from 'elysia'
import { MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS } from '../../actors/datakit.ts'
import { MAX_PREVIEW_ROWS } from '../../engines/datasets/engine.ts'
import type { DatasetProfile } from '../../engines/datasets/profile.ts'
import type * as store from '../../store/datakits.ts'
import { Envelope } from '../context.ts'

export namespace DatakitModel {
  export const status = t.Union([t.Literal('PROCESSING'), t.Literal('READY'), t.Literal('FAILED')])
  export const version = t.Object(
    {
      version: t.Integer({ minimum: 1 }),
      status,
      error: t.Union([t.String(), t.Null()], { description: 'Why processing failed (FAILED only), e.g. the CSV line that broke' }),
      errorLine: t.Union([t.Integer(), t.Null()], { description: 'The line of the file where reading failed, when known' }),
      format: t.String({ description: 'Detected from the content: csv, tsv, json, ndjson, parquet, or a text format + .gz' }),
      originalName: t.String({ description: "The uploaded file's name (sanitised; metadata only)" }),
      sizeBytes: t.Integer(),
      sha256: t.String(),
      parquetBytes: t.Union([t.Integer(), t.Null()]),
      rowCount: t.Union([t.Integer(), t.Null()]),
      columnCount: t.Union([t.Integer(), t.Null()]),
      uploadedBy: t.Union([t.String(), t.Null()]),
      createdAt: t.String({ format: 'date-time' }),
      profiledAt: t.Union([t.String({ format: 'date-time' }), t.Null()]),
    },
    { title: 'DataKitVersion' },
  )
  export const datakit = t.Object(
    {
      id: t.String({ format: 'uuid' }),
      ownerId: t.String({ format: 'uuid' }),
      name: t.String(),
      description: t.Union([t.String(), t.Null()]),
      status: t.Union([t.Literal('PROCESSING'), t.Literal('READY'), t.Literal('FAILED')], { description: 'The status of the latest version' }),
      error: t.Union([t.String(), t.Null()]),
      currentVersion: t.Integer({ minimum: 1 }),
      latestVersion: version,
      createdAt: t.String({ format: 'date-time' }),
      updatedAt: t.String({ format: 'date-time' }),
    },
    { title: 'DataKit' },
  )
  export const topValue = t.Object({ value: t.String(), count: t.Integer() })
  const stat = t.Union([t.Number(), t.String(), t.Null()])
  export const column = t.Object(
    {
      name: t.String(),
      type: t.String({ description: "DuckDB's type, e.g. BIGINT, DOUBLE, VARCHAR, DATE" }),
      kind: t.Union([t.Literal('number'), t.Literal('text'), t.Literal('boolean'), t.Literal('temporal'), t.Literal('other')]),
      nullPercent: t.Number(),
      approxDistinct: t.Integer(),
      min: stat,
      max: stat,
      mean: stat,
      std: t.Union([t.Number(), t.Null()]),
      q25: stat,
      q50: stat,
      q75: stat,
      topValues: t.Optional(t.Array(topValue, { description: 'Text columns: the most frequent values with exact counts' })),
    },
    { title: 'DataKitColumn' },
  )
  export const profile = t.Object({ rowCount: t.Integer(), columns: t.Array(column) }, { title: 'DataKitProfile' })
  export const detail = t.Composite([datakit, t.Object({ profile: t.Union([profile, t.Null()], { description: "The latest version's profile (null until READY)" }) })], {
    title: 'DataKitDetail',
  })
  export const listQuery = t.Object({
    ...Envelope.pageQuery,
    search: t.Optional(t.String({ maxLength: 100, description: 'Case-insensitive part of the name' })),
    status: t.Optional(status),
    ownerId: t.Optional(t.String({ format: 'uuid', description: "Admins: only this user's datakits" })),
  })
  export const patch = t.Object(
    {
      name: t.Optional(t.String({ minLength: 1, maxLength: MAX_NAME_CHARS, pattern: '\\S', error: `Name must be 1–${MAX_NAME_CHARS} characters` })),
      description: t.Optional(t.Union([t.String({ maxLength: MAX_DESCRIPTION_CHARS }), t.Null()], { error: `Description must be at most ${MAX_DESCRIPTION_CHARS} characters` })),
    },
    { additionalProperties: false, minProperties: 1, error: 'Provide name and/or description' },
  )
  export const uploadFields = t.Object({
    name: t.Optional(t.String({ minLength: 1, maxLength: MAX_NAME_CHARS, pattern: '\\S', error: `Name must be 1–${MAX_NAME_CHARS} characters` })),
    description: t.Optional(t.String({ maxLength: MAX_DESCRIPTION_CHARS, error: `Description must be at most ${MAX_DESCRIPTION_CHARS} characters` })),
    datakitId: t.Optional(t.String({ format: 'uuid', error: 'Invalid datakit id' })),
  })
  export const previewQuery = t.Object({
    limit: t.Optional(t.Integer({ minimum: 1, maximum: MAX_PREVIEW_ROWS, default: 50, description: `Rows (1–${MAX_PREVIEW_ROWS})` })),
    offset: t.Optional(t.Integer({ minimum: 0, default: 0 })),
    version: t.Optional(t.Integer({ minimum: 1, description: 'Default: the newest READY version' })),
  })
  export const resultColumn = t.Object({ name: t.String(), type: t.String() })
  const row = t.Record(t.String(), t.Unknown())
  export const preview = t.Object(
    {
      version: t.Integer(),
      columns: t.Array(resultColumn),
      rows: t.Array(row),
      offset: t.Integer(),
      limit: t.Integer(),
      totalRows: t.Integer(),
      truncated: t.Boolean({ description: 'Fewer rows than `limit`: more would pass DATAKIT_QUERY_MAX_BYTES of JSON' }),
    },
    { title: 'DataKitPreview' },
  )
  export const query = t.Object(
    {
      sql: t.String({ minLength: 1, maxLength: 100_000, description: 'One read-only DuckDB statement over the table `data`' }),
      version: t.Optional(t.Integer({ minimum: 1, description: 'Default: the newest READY version' })),
    },
    { additionalProperties: false },
  )
  export const queryResult = t.Object(
    {
      version: t.Integer(),
      columns: t.Array(resultColumn),
      rows: t.Array(row),
      rowCount: t.Integer(),
      truncated: t.Boolean({ description: 'The result had more than was returned (see truncatedBy); the rest was not read. POST /query/export gives all of it' }),
      truncatedBy: t.Union([t.Literal('rows'), t.Literal('bytes'), t.Null()], {
        description: '`rows`: DATAKIT_QUERY_MAX_ROWS reached; `bytes`: the next row would take the JSON of the rows past DATAKIT_QUERY_MAX_BYTES; null when not truncated',
      }),
      elapsedMs: t.Integer(),
    },
    { title: 'DataKitQueryResult' },
  )
  export const queryExport = t.Object(
    {
      sql: t.String({ minLength: 1, maxLength: 100_000, description: 'One read-only DuckDB statement over the table `data`' }),
      format: t.Optional(t.Union([t.Literal('csv'), t.Literal('parquet'), t.Literal('json')], { default: 'csv', description: 'csv (header, formula cells neutralised), parquet, or json (an array of objects)' })),
      version: t.Optional(t.Integer({ minimum: 1, description: 'Default: the newest READY version' })),
    },
    { additionalProperties: false },
  )
  export const exportQuery = t.Object({
    format: t.Optional(t.Union([t.Literal('csv'), t.Literal('parquet'), t.Literal('json')], { default: 'csv' })),
    version: t.Optional(t.Integer({ minimum: 1, description: 'Default: the newest READY version' })),
  })
  export const diff = t.Object(
    {
      from: t.Integer(),
      to: t.Integer(),
      added: t.Array(t.Object({ name: t.String(), type: t.String() })),
      removed: t.Array(t.Object({ name: t.String(), type: t.String() })),
      retyped: t.Array(t.Object({ name: t.String(), from: t.String(), to: t.String() })),
      rowCount: t.Object({ from: t.Integer(), to: t.Integer(), change: t.Integer() }),
    },
    { title: 'DataKitVersionDiff' },
  )
  export const diffQuery = t.Object({ against: t.Optional(t.Integer({ minimum: 1, description: 'The older version (default: n − 1)' })) })
  export const storage = t.Object(
    {
      userId: t.String({ format: 'uuid' }),
      usedBytes: t.Integer({ description: 'Uploaded files plus their Parquet copies' }),
      quotaBytes: t.Integer(),
      remainingBytes: t.Integer(),
      overridden: t.Boolean({ description: "An admin set this user's quota (otherwise USER_STORAGE_QUOTA_BYTES)" }),
    },
    { title: 'StorageUsage' },
  )
  export const storageQuery = t.Object({ userId: t.Optional(t.String({ format: 'uuid', description: "Admins: another user's usage" })) })
  export const setQuota = t.Object(
    { quotaBytes: t.Union([t.Integer({ minimum: 0 }), t.Null()], { description: 'Bytes; null returns the user to the default' }) },
    { additionalProperties: false },
  )
  export const deleted = t.Object({ id: t.String({ format: 'uuid' }) })
}

export function serializeVersion(v: store.VersionRow) {
  return {
    version: v.version,
    status: v.status,
    error: v.error,
    errorLine: v.errorLine,
    format: v.format,
    originalName: v.originalName,
    sizeBytes: v.sizeBytes,
    sha256: v.sha256,
    parquetBytes: v.parquetBytes,
    rowCount: v.rowCount,
    columnCount: v.columnCount,
    uploadedBy: v.uploadedBy,
    createdAt: v.createdAt.toISOString(),
    profiledAt: v.profiledAt ? v.profiledAt.toISOString() : null,
  }
}

export function serializeDatakit(d: store.DatakitWithVersion) {
  return {
    id: d.id,
    ownerId: d.ownerId,
    name: d.name,
    description: d.description,
    status: d.status,
    error: d.latest.error,
    currentVersion: d.currentVersion,
    latestVersion: serializeVersion(d.latest),
    createdAt: d.createdAt.toISOString(),
    updatedAt: d.updatedAt.toISOString(),
  }
}

export function serializeDetail(d: store.DatakitWithVersion & { profile: unknown }) {
  return { ...serializeDatakit(d), profile: d.latest.status === 'READY' ? (d.profile as DatasetProfile) : null }
}
