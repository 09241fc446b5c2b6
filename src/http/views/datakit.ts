/** DataKits as the API shows them: the TypeBox schemas of bodies, queries and answers, and the row serializers. */
import { t } from 'elysia'
import { MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS } from '../../actors/datakit.ts'
import { MAX_PREVIEW_ROWS } from '../../engines/datasets/engine.ts'
import type { DatasetProfile } from '../../engines/datasets/profile.ts'
import type * as store from '../../store/datakits.ts'
import { Envelope } from '../context.ts'

const DATAKIT_ID = '3b9f1c2e-7a44-4d2b-9e0f-5c8a1d6e2f70'
const OWNER_ID = '8e2d4c6a-1f3b-4a5c-9d7e-0b1c2d3e4f50'
const ORG_ID = '3c5e7a9b-2d4f-4b6a-8c1e-5f7a9b1d3e60'
const VERSION_EXAMPLE = {
  version: 1,
  status: 'READY',
  error: null,
  errorLine: null,
  format: 'csv',
  originalName: 'customers.csv',
  sizeBytes: 1048576,
  sha256: '9f2c1e7d5b3a4f60c8e1d2b3a4f5e6d7c8b9a0f1e2d3c4b5a69788796a5b4c3d',
  parquetBytes: 412876,
  rowCount: 10000,
  columnCount: 3,
  uploadedBy: OWNER_ID,
  createdAt: '2026-12-04T10:15:00.000Z',
  profiledAt: '2026-12-04T10:15:02.000Z',
}
const DATAKIT_EXAMPLE = {
  id: DATAKIT_ID,
  ownerId: OWNER_ID,
  orgId: null,
  name: 'Customer Data',
  description: 'Customer analytics dataset',
  status: 'READY',
  error: null,
  currentVersion: 1,
  latestVersion: VERSION_EXAMPLE,
  createdAt: '2026-12-04T10:15:00.000Z',
  updatedAt: '2026-12-04T10:15:02.000Z',
}
const PROFILE_EXAMPLE = {
  rowCount: 10000,
  columns: [
    { name: 'id', type: 'BIGINT', kind: 'number', nullPercent: 0, approxDistinct: 10000, min: 1, max: 10000, mean: 5000.5, std: 2886.9, q25: 2500, q50: 5000, q75: 7500 },
    { name: 'age', type: 'BIGINT', kind: 'number', nullPercent: 1.2, approxDistinct: 62, min: 18, max: 79, mean: 41.3, std: 12.7, q25: 31, q50: 41, q75: 52 },
    {
      name: 'city',
      type: 'VARCHAR',
      kind: 'text',
      nullPercent: 0,
      approxDistinct: 4,
      min: 'Kyoto',
      max: 'Oslo',
      mean: null,
      std: null,
      q25: null,
      q50: null,
      q75: null,
      topValues: [
        { value: 'Lisbon', count: 2600 },
        { value: 'Oslo', count: 2500 },
      ],
    },
  ],
}

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
    { title: 'DataKitVersion', examples: [VERSION_EXAMPLE] },
  )
  export const versions = t.Array(version, { examples: [[{ ...VERSION_EXAMPLE, version: 2, originalName: 'customers-2026.csv', rowCount: 12000 }, VERSION_EXAMPLE]] })
  export const datakit = t.Object(
    {
      id: t.String({ format: 'uuid' }),
      ownerId: t.String({ format: 'uuid' }),
      orgId: t.Union([t.String({ format: 'uuid' }), t.Null()], { description: 'The organisation it is shared in; null: personal' }),
      name: t.String(),
      description: t.Union([t.String(), t.Null()]),
      status: t.Union([t.Literal('PROCESSING'), t.Literal('READY'), t.Literal('FAILED')], { description: 'The status of the latest version' }),
      error: t.Union([t.String(), t.Null()]),
      currentVersion: t.Integer({ minimum: 1 }),
      latestVersion: version,
      createdAt: t.String({ format: 'date-time' }),
      updatedAt: t.String({ format: 'date-time' }),
    },
    { title: 'DataKit', examples: [DATAKIT_EXAMPLE] },
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
  export const profile = t.Object({ rowCount: t.Integer(), columns: t.Array(column) }, { title: 'DataKitProfile', examples: [PROFILE_EXAMPLE] })
  export const detail = t.Composite([datakit, t.Object({ profile: t.Union([profile, t.Null()], { description: "The latest version's profile (null until READY)" }) })], {
    title: 'DataKitDetail',
    examples: [{ ...DATAKIT_EXAMPLE, profile: PROFILE_EXAMPLE }],
  })
  export const listQuery = t.Object({
    ...Envelope.pageQuery,
    search: t.Optional(t.String({ maxLength: 100, description: 'Case-insensitive part of the name', examples: ['customer'] })),
    status: t.Optional(status),
    ownerId: t.Optional(t.String({ format: 'uuid', description: "Admins: only this user's datakits", examples: [OWNER_ID] })),
    orgId: t.Optional(t.String({ format: 'uuid', error: 'Invalid organisation id', description: "Every datakit of this organisation (you must be a member)", examples: [ORG_ID] })),
  })
  export const patch = t.Object(
    {
      name: t.Optional(t.String({ minLength: 1, maxLength: MAX_NAME_CHARS, pattern: '\\S', error: `Name must be 1–${MAX_NAME_CHARS} characters` })),
      description: t.Optional(t.Union([t.String({ maxLength: MAX_DESCRIPTION_CHARS }), t.Null()], { error: `Description must be at most ${MAX_DESCRIPTION_CHARS} characters` })),
      orgId: t.Optional(
        t.Union([t.String({ format: 'uuid' }), t.Null()], { error: 'orgId must be an organisation id or null', description: 'Move it into this organisation, or (null) make it personal' }),
      ),
    },
    {
      additionalProperties: false,
      minProperties: 1,
      error: 'Provide name, description and/or orgId',
      examples: [{ name: 'Customer Data 2026', description: 'Customers, deduplicated' }, { orgId: ORG_ID }],
    },
  )
  export const uploadFields = t.Object({
    name: t.Optional(t.String({ minLength: 1, maxLength: MAX_NAME_CHARS, pattern: '\\S', error: `Name must be 1–${MAX_NAME_CHARS} characters` })),
    description: t.Optional(t.String({ maxLength: MAX_DESCRIPTION_CHARS, error: `Description must be at most ${MAX_DESCRIPTION_CHARS} characters` })),
    datakitId: t.Optional(t.String({ format: 'uuid', error: 'Invalid datakit id' })),
    orgId: t.Optional(t.String({ format: 'uuid', error: 'Invalid organisation id' })),
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
    {
      title: 'DataKitPreview',
      examples: [
        {
          version: 1,
          columns: [
            { name: 'id', type: 'BIGINT' },
            { name: 'age', type: 'BIGINT' },
            { name: 'city', type: 'VARCHAR' },
          ],
          rows: [
            { id: 1, age: 34, city: 'Lisbon' },
            { id: 2, age: 51, city: 'Oslo' },
          ],
          offset: 0,
          limit: 2,
          totalRows: 10000,
          truncated: false,
        },
      ],
    },
  )
  export const query = t.Object(
    {
      sql: t.String({ minLength: 1, maxLength: 100_000, description: 'One read-only DuckDB statement over the table `data`' }),
      version: t.Optional(t.Integer({ minimum: 1, description: 'Default: the newest READY version' })),
    },
    { additionalProperties: false, examples: [{ sql: 'SELECT city, count(*) AS n, avg(age) AS mean_age FROM data GROUP BY city ORDER BY n DESC' }] },
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
    {
      title: 'DataKitQueryResult',
      examples: [
        {
          version: 1,
          columns: [
            { name: 'city', type: 'VARCHAR' },
            { name: 'n', type: 'BIGINT' },
            { name: 'mean_age', type: 'DOUBLE' },
          ],
          rows: [
            { city: 'Lisbon', n: 2600, mean_age: 40.8 },
            { city: 'Oslo', n: 2500, mean_age: 42.1 },
          ],
          rowCount: 2,
          truncated: false,
          truncatedBy: null,
          elapsedMs: 12,
        },
      ],
    },
  )
  export const queryExport = t.Object(
    {
      sql: t.String({ minLength: 1, maxLength: 100_000, description: 'One read-only DuckDB statement over the table `data`' }),
      format: t.Optional(t.Union([t.Literal('csv'), t.Literal('parquet'), t.Literal('json')], { default: 'csv', description: 'csv (header, formula cells neutralised), parquet, or json (an array of objects)' })),
      version: t.Optional(t.Integer({ minimum: 1, description: 'Default: the newest READY version' })),
    },
    { additionalProperties: false, examples: [{ sql: 'SELECT * FROM data WHERE age >= 30', format: 'csv' }] },
  )
  export const exportQuery = t.Object({
    format: t.Optional(t.Union([t.Literal('csv'), t.Literal('parquet'), t.Literal('json')], { default: 'csv', examples: ['csv'] })),
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
    {
      title: 'DataKitVersionDiff',
      examples: [
        {
          from: 1,
          to: 2,
          added: [{ name: 'score', type: 'BIGINT' }],
          removed: [{ name: 'note', type: 'VARCHAR' }],
          retyped: [{ name: 'id', from: 'BIGINT', to: 'VARCHAR' }],
          rowCount: { from: 10000, to: 12000, change: 2000 },
        },
      ],
    },
  )
  export const diffQuery = t.Object({ against: t.Optional(t.Integer({ minimum: 1, description: 'The older version (default: n − 1)', examples: [1] })) })
  export const storage = t.Object(
    {
      userId: t.Optional(t.String({ format: 'uuid', description: "Whose storage (a user's)" })),
      orgId: t.Optional(t.String({ format: 'uuid', description: "Whose storage (an organisation's, with `?orgId=`)" })),
      usedBytes: t.Integer({ description: 'Uploaded files plus their Parquet copies' }),
      quotaBytes: t.Integer(),
      remainingBytes: t.Integer(),
      overridden: t.Boolean({ description: "An admin set this user's quota (otherwise USER_STORAGE_QUOTA_BYTES); for an org, its quota is not ORG_DEFAULT_STORAGE_BYTES" }),
    },
    { title: 'StorageUsage', examples: [{ userId: OWNER_ID, usedBytes: 1461452, quotaBytes: 10737418240, remainingBytes: 10735956788, overridden: false }] },
  )
  export const storageQuery = t.Object({
    userId: t.Optional(t.String({ format: 'uuid', description: "Admins: another user's usage", examples: [OWNER_ID] })),
    orgId: t.Optional(t.String({ format: 'uuid', error: 'Invalid organisation id', description: "An organisation's usage (you must be a member)", examples: [ORG_ID] })),
  })
  export const setQuotaQuery = t.Object({ userId: t.String({ format: 'uuid', error: 'Invalid user id', description: 'Whose quota', examples: [OWNER_ID] }) })
  export const setQuota = t.Object(
    { quotaBytes: t.Union([t.Integer({ minimum: 0 }), t.Null()], { description: 'Bytes; null returns the user to the default' }) },
    { additionalProperties: false, examples: [{ quotaBytes: 21474836480 }] },
  )
  export const deleted = t.Object({ id: t.String({ format: 'uuid' }) }, { examples: [{ id: DATAKIT_ID }] })
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
    orgId: d.orgId,
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
