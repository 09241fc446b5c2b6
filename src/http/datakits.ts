/**
 * /api/datakits: uploaded datasets. Uploads stream to disk (src/http/upload.ts); writes go to
 * the dataset's `datakit` actor (src/actors/datakit.ts), which profiles each version in the
 * background with DuckDB; reads are plain SQL, and previews, queries and exports read the
 * version's Parquet copy through the dataset engine.
 *
 * Who may do what: a datakit belongs to the user who uploaded it. Another user gets 404 on
 * every route, as if it did not exist; an admin may read and manage every datakit. A VIEWER
 * may read their own datakits but not upload, change or delete (403).
 *
 * Storage: files live in UPLOAD_DIR/datakits under generated UUID names (the client's name is
 * kept, sanitised, as metadata only). Each user has a storage quota (uploads plus their
 * Parquet copies): USER_STORAGE_QUOTA_BYTES, or an admin's override. In a cluster UPLOAD_DIR
 * must be storage every node shares: the node that receives an upload is not necessarily the
 * one whose actor profiles it.
 */
import { mkdir, readdir, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { Elysia, t } from 'elysia'
import { Value } from '@sinclair/typebox/value'
import { AppError, ConflictError, ForbiddenError, NotFoundError, ValidationError } from '../core/errors.ts'
import type { Feature } from '../features.ts'
import * as store from '../store/datakits.ts'
import * as users from '../store/users.ts'
import {
  DATAKIT_KIND,
  MAX_DESCRIPTION_CHARS,
  MAX_NAME_CHARS,
  StorageQuotaError,
  datakitActor,
  datakitFiles,
  quotaOf,
  type DatakitMessage,
} from '../actors/datakit.ts'
import { ActorTimeoutError } from '../actors/runtime/index.ts'
import { consumeFile } from '../core/files.ts'
import { DuckDBDatasetEngine } from '../engines/datasets/duckdb.ts'
import { DEFAULT_ENGINE_OPTIONS, MAX_PREVIEW_ROWS, type DatasetEngine, type ExportFormat } from '../engines/datasets/engine.ts'
import { ACCEPTED_TYPES_TEXT, FORMAT_MEDIA_TYPES, detectFormat, type DatasetFormat } from '../engines/datasets/format.ts'
import { diffProfiles, type DatasetProfile } from '../engines/datasets/profile.ts'
import { bearer, documented, Envelope, errors, ok, requireRole, requireUser, type AppDeps } from './context.ts'
import { contentDisposition, multipartBoundary, receiveUpload, sanitizeFilename } from './upload.ts'
import type { Principal } from '../auth/sessions.ts'
import type { CachedRead } from './native.ts'

export const UPLOAD_PATH = '/api/datakits/upload'
const TAGS = ['DataKits']
/** GET /api/datakits: your datakits (admins: everyone's), cached per viewer and query (served from Bun's router on a hit). */
export const datakitsRead: CachedRead = { path: '/api/datakits', scope: (p) => (p.role === 'ADMIN' ? 'datakits' : `datakits:${p.userId}`) }
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/**
 * Room for the multipart framing and the text fields around the file: a body longer than the
 * file limit plus this cannot carry an acceptable file, so it is refused before it is read.
 */
const FORM_OVERHEAD_BYTES = 64 * 1024

/** Byte caps of the text fields while they stream (characters are checked after decoding). */
const FIELD_BYTES = { name: MAX_NAME_CHARS * 4, description: MAX_DESCRIPTION_CHARS * 4, datakitId: 64 }

const STORED_NAME = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(\.parquet)?(\.tmp-[0-9a-f-]{36})?$/i

/** Orphaned files (no version row) older than this are removed at boot. */
const ORPHAN_AGE_MS = 3600_000

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
  export const versionQuery = t.Object({ version: t.Optional(t.Integer({ minimum: 1, description: 'Default: the newest READY version' })) })
  export const previewQuery = t.Object({
    limit: t.Optional(t.Integer({ minimum: 1, maximum: MAX_PREVIEW_ROWS, default: 50, description: `Rows (1–${MAX_PREVIEW_ROWS})` })),
    offset: t.Optional(t.Integer({ minimum: 0, default: 0 })),
    version: t.Optional(t.Integer({ minimum: 1, description: 'Default: the newest READY version' })),
  })
  export const resultColumn = t.Object({ name: t.String(), type: t.String() })
  const row = t.Record(t.String(), t.Unknown())
  export const preview = t.Object(
    { version: t.Integer(), columns: t.Array(resultColumn), rows: t.Array(row), offset: t.Integer(), limit: t.Integer(), totalRows: t.Integer() },
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
      truncated: t.Boolean({ description: 'More rows than DATAKIT_QUERY_MAX_ROWS: the rest were not read' }),
      elapsedMs: t.Integer(),
    },
    { title: 'DataKitQueryResult' },
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

function serializeDetail(d: store.DatakitWithVersion & { profile: unknown }) {
  return { ...serializeDatakit(d), profile: d.latest.status === 'READY' ? (d.profile as DatasetProfile) : null }
}

const idParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid datakit id' }) })
const versionParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid datakit id' }), n: t.Integer({ minimum: 1, error: 'Invalid version number' }) })

/** A version that cannot be read yet (or ever): 409 with what to do about it. */
class VersionNotReadyError extends ConflictError {
  constructor(v: store.VersionRow) {
    super(
      v.status === 'PROCESSING'
        ? `Version ${v.version} is still being processed; try again when its status is READY`
        : `Version ${v.version} could not be processed: ${v.error ?? 'unknown error'}`,
      [{ field: 'status', message: v.status }],
    )
  }
}

function humanBytes(n: number): string {
  const units = ['bytes', 'KB', 'MB', 'GB', 'TB']
  let i = 0
  let v = n
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return i === 0 ? `${n} bytes` : `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`
}

export interface DatakitRoutesOptions {
  engine: DatasetEngine
  /** UPLOAD_DIR/datakits */
  dir: string
}

/** The /api/datakits routes over an actor system where the `datakit` kind is registered. */
export function datakitRoutes(deps: AppDeps, opts: DatakitRoutesOptions) {
  const { config, sql } = deps
  const { engine, dir } = opts
  const exportDir = join(dir, 'exports')
  const maxFileSize = config.maxFileSize
  const ask = (id: string, message: DatakitMessage) => deps.actors.ask(DATAKIT_KIND, id, message)

  /** The datakit if the caller may read it (owner, or admin), else 404. */
  const readable = async (request: Request, id: string): Promise<{ me: Principal; d: store.DatakitRow }> => {
    const me = await requireUser(deps, request)
    const d = await store.findDatakit(sql, id)
    if (!d || (d.ownerId !== me.userId && me.role !== 'ADMIN')) throw new NotFoundError('DataKit')
    return { me, d }
  }

  /** Like readable, for changes: a VIEWER is refused first (whatever the id). */
  const writable = async (request: Request, id: string) => {
    await requireRole(deps, request, 'USER', 'ADMIN')
    return readable(request, id)
  }

  const invalidate = (d: { id: string; ownerId: string }) => deps.cache.invalidate(`datakit:${d.id}`, `datakits:${d.ownerId}`, 'datakits')

  /** The version to read data from: the one asked for, or the newest READY one. */
  const readyVersion = async (d: store.DatakitRow, requested: number | undefined): Promise<store.VersionWithProfile> => {
    if (requested !== undefined) {
      const v = await store.findVersion(sql, d.id, requested)
      if (!v) throw new NotFoundError('DataKit version')
      if (v.status !== 'READY') throw new VersionNotReadyError(v)
      return v
    }
    const ready = await store.latestReadyVersion(sql, d.id)
    if (ready) return ready
    throw new VersionNotReadyError((await store.findVersion(sql, d.id, d.currentVersion))!)
  }

  const fileTooLarge = () =>
    new AppError('payload_too_large', `The file is larger than the upload limit of ${humanBytes(maxFileSize)} (MAX_FILE_SIZE)`, {
      status: 413,
      details: [{ field: 'dataset', message: `Must be at most ${maxFileSize} bytes` }],
    })

  async function upload(request: Request, set: { status?: number | string }) {
    const me = await requireUser(deps, request)
    if (me.role === 'VIEWER') throw new ForbiddenError('A VIEWER cannot upload datasets')
    multipartBoundary(request.headers.get('content-type'))
    const used = await store.storageUsed(sql, me.userId)
    const quota = await quotaOf(sql, me.userId, config.datakits.storageQuotaBytes)
    const remaining = Math.max(0, quota - used)
    // A declared length that cannot fit is refused before a byte of it is read.
    const declared = Number(request.headers.get('content-length') ?? Number.NaN)
    if (declared > maxFileSize + FORM_OVERHEAD_BYTES) throw fileTooLarge()
    if (declared > remaining + FORM_OVERHEAD_BYTES) throw new StorageQuotaError(used, declared - FORM_OVERHEAD_BYTES, quota)
    await mkdir(dir, { recursive: true })
    const received = await receiveUpload(request, {
      dir,
      fileField: 'dataset',
      fields: FIELD_BYTES,
      limits: [
        { bytes: maxFileSize, error: fileTooLarge },
        { bytes: remaining, error: (n) => new StorageQuotaError(used, n, quota) },
      ],
    })
    const file = received.file
    let keepFile = false
    try {
      const fields = received.fields
      if (!Value.Check(DatakitModel.uploadFields, fields)) {
        const details = [...Value.Errors(DatakitModel.uploadFields, fields)].map((e) => ({
          field: e.path.replace(/^\//, '') || 'body',
          message: typeof e.schema.error === 'string' ? e.schema.error : e.message,
        }))
        throw new ValidationError('Validation failed', details)
      }
      if (fields.datakitId === undefined && fields.name === undefined) throw new ValidationError('Validation failed', [{ field: 'name', message: 'Required' }])
      // The content decides: a 415 naming the accepted types otherwise.
      const format: DatasetFormat = await detectFormat(file.path)
      const uploaded = { fileId: file.id, originalName: file.originalName, format, sizeBytes: file.size, sha256: file.sha256, uploadedBy: me.userId }
      const description = fields.description === undefined ? undefined : fields.description === '' ? null : fields.description
      let id: string
      try {
        if (fields.datakitId !== undefined) {
          const { d } = await writable(request, fields.datakitId)
          id = d.id
          await ask(id, { type: 'addVersion', file: uploaded, ...(fields.name !== undefined ? { name: fields.name } : {}), ...(description !== undefined ? { description } : {}) })
        } else {
          id = crypto.randomUUID()
          await ask(id, { type: 'create', ownerId: me.userId, name: fields.name!, description: description ?? null, file: uploaded })
        }
      } catch (err) {
        // A turn that timed out may still commit: its file must stay (the orphan sweep
        // removes it at boot if no version row ever named it).
        if (err instanceof ActorTimeoutError) keepFile = true
        throw err
      }
      keepFile = true
      const row = (await store.findWithLatest(sql, id))!
      await invalidate(row)
      set.status = 201
      return ok(serializeDetail(row))
    } finally {
      if (!keepFile) await rm(file.path, { force: true })
    }
  }

  return (
    new Elysia({ prefix: '/api/datakits' })
      .post('/upload', ({ request, set }) => upload(request, set), {
        // The body is the route's to stream: this parser claims it without reading it, so
        // Elysia's own (which would buffer the whole form in memory) never runs.
        parse: () => STREAMED,
        response: { 201: Envelope.data(DatakitModel.detail), ...errors(400, 401, 403, 404, 413, 415, 422) },
        detail: {
          summary: 'Upload a dataset (new datakit, or a new version with datakitId); profiled in the background',
          description:
            `Multipart form: \`dataset\` (the file), \`name\`, \`description\`, optional \`datakitId\` (adds version N+1). ` +
            `The body is streamed to disk and hashed (sha256). Accepted content: ${ACCEPTED_TYPES_TEXT} (415 otherwise, decided from the bytes, not the name). ` +
            `413 when the file exceeds MAX_FILE_SIZE or the uploader's storage quota (details: usedBytes, allowedBytes, incomingBytes). ` +
            'The datakit is PROCESSING until profiled; follow `datakit:<id>` on /ws or poll GET /api/datakits/:id.',
          tags: TAGS,
          security: bearer,
          requestBody: {
            required: true,
            content: {
              'multipart/form-data': {
                schema: {
                  type: 'object',
                  required: ['dataset'],
                  properties: {
                    dataset: { type: 'string', format: 'binary' },
                    name: { type: 'string', maxLength: MAX_NAME_CHARS, description: 'Required for a new datakit' },
                    description: { type: 'string', maxLength: MAX_DESCRIPTION_CHARS },
                    datakitId: { type: 'string', format: 'uuid', description: 'Add a version to this datakit' },
                  },
                },
              },
            },
          },
        },
      })
      .get(
        '/',
        async ({ request, query, set }) => {
          const me = await requireUser(deps, request)
          const isAdmin = me.role === 'ADMIN'
          const ownerId = isAdmin ? query.ownerId : me.userId
          return deps.cache.serve(request, set.headers as Record<string, string>, { scope: datakitsRead.scope(me, {})!, viewer: me.userId, route: datakitsRead.path }, async () => {
            const limit = query.limit ?? 20
            const page = await store.listDatakits(sql, { limit, cursor: query.cursor, ownerId, search: query.search, status: query.status })
            return ok(page.items.map(serializeDatakit), { nextCursor: page.nextCursor, limit })
          })
        },
        {
          query: DatakitModel.listQuery,
          detail: {
            summary: 'Your datakits (admins: everyone’s), oldest first; search by name, filter by status, cursor pagination (cached, ETag)',
            tags: TAGS,
            security: bearer,
            responses: documented({ 200: Envelope.list(DatakitModel.datakit), ...errors(400, 401) }),
          },
        },
      )
      .get(
        '/storage',
        async ({ request, query }) => {
          const me = await requireUser(deps, request)
          const userId = query.userId ?? me.userId
          if (userId !== me.userId && me.role !== 'ADMIN') throw new NotFoundError('User')
          return ok(await usage(userId))
        },
        {
          query: DatakitModel.storageQuery,
          response: { 200: Envelope.data(DatakitModel.storage), ...errors(400, 401, 404) },
          detail: { summary: 'Storage used and allowed (yours; admins: any user’s)', tags: TAGS, security: bearer },
        },
      )
      .put(
        '/storage/:userId',
        async ({ request, params, body }) => {
          await requireRole(deps, request, 'ADMIN')
          if (!(await users.findById(sql, params.userId))) throw new NotFoundError('User')
          await store.setQuotaOverride(sql, params.userId, body.quotaBytes)
          return ok(await usage(params.userId))
        },
        {
          params: t.Object({ userId: t.String({ format: 'uuid', error: 'Invalid user id' }) }),
          body: DatakitModel.setQuota,
          response: { 200: Envelope.data(DatakitModel.storage), ...errors(400, 401, 403, 404) },
          detail: { summary: "Set a user's storage quota (admin; null: back to USER_STORAGE_QUOTA_BYTES)", tags: TAGS, security: bearer },
        },
      )
      .get(
        '/:id',
        async ({ request, params, set }) => {
          const { me } = await readable(request, params.id)
          return deps.cache.serve(request, set.headers as Record<string, string>, { scope: `datakit:${params.id}`, viewer: me.userId, route: '/api/datakits/:id' }, async () => {
            const row = await store.findWithLatest(sql, params.id)
            if (!row) throw new NotFoundError('DataKit')
            return ok(serializeDetail(row))
          })
        },
        {
          params: idParams,
          detail: {
            summary: 'A datakit with its latest version and profile (cached, ETag)',
            tags: TAGS,
            security: bearer,
            responses: documented({ 200: Envelope.data(DatakitModel.detail), ...errors(400, 401, 404) }),
          },
        },
      )
      .patch(
        '/:id',
        async ({ request, params, body }) => {
          const { d } = await writable(request, params.id)
          await ask(d.id, { type: 'update', ...body })
          await invalidate(d)
          const row = await store.findWithLatest(sql, d.id)
          if (!row) throw new NotFoundError('DataKit')
          return ok(serializeDetail(row))
        },
        {
          params: idParams,
          body: DatakitModel.patch,
          response: { 200: Envelope.data(DatakitModel.detail), ...errors(400, 401, 403, 404) },
          detail: { summary: 'Rename a datakit or change its description', tags: TAGS, security: bearer },
        },
      )
      .delete(
        '/:id',
        async ({ request, params }) => {
          const { d } = await writable(request, params.id)
          await ask(d.id, { type: 'delete' })
          await invalidate(d)
          return ok({ id: d.id })
        },
        {
          params: idParams,
          response: { 200: Envelope.data(DatakitModel.deleted), ...errors(400, 401, 403, 404) },
          detail: { summary: 'Delete a datakit, all its versions and their files', tags: TAGS, security: bearer },
        },
      )
      .get(
        '/:id/preview',
        async ({ request, params, query, set }) => {
          const { me, d } = await readable(request, params.id)
          return deps.cache.serve(request, set.headers as Record<string, string>, { scope: `datakit:${d.id}`, viewer: me.userId, route: '/api/datakits/:id/preview' }, async () => {
            const v = await readyVersion(d, query.version)
            const p = await engine.preview(datakitFiles(dir, v.fileId).parquet, query.limit ?? 50, query.offset ?? 0)
            return ok({ version: v.version, ...p })
          })
        },
        {
          params: idParams,
          query: DatakitModel.previewQuery,
          detail: {
            summary: 'Rows of a READY version, in file order (limit 1–1000, offset; cached)',
            tags: TAGS,
            security: bearer,
            responses: documented({ 200: Envelope.data(DatakitModel.preview), ...errors(400, 401, 404, 409) }),
          },
        },
      )
      .get(
        '/:id/download',
        async ({ request, params, query, set }) => {
          const { d } = await readable(request, params.id)
          const v = await store.findVersion(sql, d.id, query.version ?? d.currentVersion)
          if (!v) throw new NotFoundError('DataKit version')
          const path = datakitFiles(dir, v.fileId).original
          const file = Bun.file(path)
          if (!(await file.exists())) throw new NotFoundError('DataKit file')
          const h = set.headers as Record<string, string>
          h['content-type'] = FORMAT_MEDIA_TYPES[v.format as DatasetFormat] ?? 'application/octet-stream'
          h['content-disposition'] = contentDisposition(v.originalName)
          h['x-content-sha256'] = v.sha256
          return new Response(file, { headers: h })
        },
        {
          params: idParams,
          query: t.Object({ version: t.Optional(t.Integer({ minimum: 1, description: 'Default: the latest version' })) }),
          detail: {
            summary: 'The uploaded file as it was received (streamed, Content-Disposition: attachment)',
            tags: TAGS,
            security: bearer,
            responses: { 200: { description: 'The file', content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } }, ...documented(errors(400, 401, 404)) },
          },
        },
      )
      .get(
        '/:id/export',
        async ({ request, params, query, set }) => {
          const { d } = await readable(request, params.id)
          const v = await readyVersion(d, query.version)
          const format: ExportFormat = query.format ?? 'csv'
          await mkdir(exportDir, { recursive: true })
          const res = await engine.exportTo(datakitFiles(dir, v.fileId).parquet, format, join(exportDir, `${crypto.randomUUID()}.${format}`))
          const h = set.headers as Record<string, string>
          h['content-type'] = res.contentType
          h['content-length'] = String(res.bytes)
          h['content-disposition'] = contentDisposition(`${sanitizeFilename(d.name.replace(/[\\/]/g, '_'), 'datakit')}-v${v.version}.${format}`)
          return new Response(await consumeFile(res.path), { headers: h })
        },
        {
          params: idParams,
          query: DatakitModel.exportQuery,
          detail: {
            summary: 'A READY version as CSV (formula cells neutralised), JSON (array of objects) or Parquet, streamed',
            tags: TAGS,
            security: bearer,
            responses: { 200: { description: 'The exported file', content: { 'text/csv': { schema: { type: 'string' } } } }, ...documented(errors(400, 401, 404, 409)) },
          },
        },
      )
      .post(
        '/:id/query',
        async ({ request, params, body }) => {
          const { d } = await readable(request, params.id)
          const v = await readyVersion(d, body.version)
          const r = await engine.query(datakitFiles(dir, v.fileId).parquet, body.sql, { timeoutMs: config.datakits.queryTimeoutMs, maxRows: config.datakits.queryMaxRows })
          return ok({ version: v.version, ...r })
        },
        {
          params: idParams,
          body: DatakitModel.query,
          response: { 200: Envelope.data(DatakitModel.queryResult), ...errors(400, 401, 404, 409, 422) },
          detail: {
            summary: 'Run one read-only DuckDB query over the table `data` (sandboxed: no files, network, extensions or writes; time and row limits; 422 with DuckDB’s message)',
            tags: TAGS,
            security: bearer,
          },
        },
      )
      .get(
        '/:id/versions',
        async ({ request, params, set }) => {
          const { me, d } = await readable(request, params.id)
          return deps.cache.serve(request, set.headers as Record<string, string>, { scope: `datakit:${d.id}`, viewer: me.userId, route: '/api/datakits/:id/versions' }, async () =>
            ok((await store.listVersions(sql, d.id)).map(serializeVersion)),
          )
        },
        {
          params: idParams,
          detail: {
            summary: 'Every version, newest first (cached, ETag)',
            tags: TAGS,
            security: bearer,
            responses: documented({ 200: Envelope.data(t.Array(DatakitModel.version)), ...errors(400, 401, 404) }),
          },
        },
      )
      .get(
        '/:id/versions/:n/diff',
        async ({ request, params, query }) => {
          const { d } = await readable(request, params.id)
          const against = query.against ?? params.n - 1
          if (against < 1 || against === params.n) {
            throw new ValidationError('Validation failed', [{ field: 'against', message: params.n === 1 && query.against === undefined ? 'Version 1 has no previous version: pass ?against=' : 'Must be another version' }])
          }
          const [a, b] = await Promise.all([store.findVersion(sql, d.id, against), store.findVersion(sql, d.id, params.n)])
          if (!a || !b) throw new NotFoundError('DataKit version')
          for (const v of [a, b]) if (v.status !== 'READY') throw new VersionNotReadyError(v)
          return ok({ from: a.version, to: b.version, ...diffProfiles(a.profile as DatasetProfile, b.profile as DatasetProfile) })
        },
        {
          params: versionParams,
          query: DatakitModel.diffQuery,
          response: { 200: Envelope.data(DatakitModel.diff), ...errors(400, 401, 404, 409) },
          detail: { summary: 'Columns added, removed and retyped, and the row-count change, from version `against` (default n − 1) to n', tags: TAGS, security: bearer },
        },
      )
  )

  async function usage(userId: string) {
    const [usedBytes, override] = await Promise.all([store.storageUsed(sql, userId), store.quotaOverride(sql, userId)])
    const quotaBytes = override ?? config.datakits.storageQuotaBytes
    return { userId, usedBytes, quotaBytes, remainingBytes: Math.max(0, quotaBytes - usedBytes), overridden: override !== undefined }
  }
}

/** What the upload route's parser hands Elysia instead of a parsed body. */
const STREAMED = Object.freeze({ streamed: true })

/**
 * Remove files under `dir` that no version names (left by a crash between writing an upload
 * and recording it, or by a delete whose cleanup did not run), Parquet temporaries of a
 * conversion that never finished, and stale export files. Only files older than an hour: an
 * upload or conversion in progress is written continuously, so it is newer.
 */
export async function sweepOrphans(sql: AppDeps['sql'], dir: string, now = Date.now()): Promise<number> {
  let names: string[]
  try {
    names = await readdir(dir)
  } catch {
    return 0
  }
  const known = await store.allFileIds(sql)
  let removed = 0
  const old = async (path: string) => now - (await stat(path)).mtimeMs > ORPHAN_AGE_MS
  for (const name of names) {
    // <fileId>, <fileId>.parquet, or a Parquet copy still under the engine's temporary name.
    const m = STORED_NAME.exec(name)
    if (!m || (m[3] === undefined && known.has(m[1]!.toLowerCase()))) continue
    const path = join(dir, name)
    if (await old(path).catch(() => false)) {
      await rm(path, { force: true })
      removed++
    }
  }
  const exportDir = join(dir, 'exports')
  for (const name of await readdir(exportDir).catch(() => [] as string[])) {
    const path = join(exportDir, name)
    if (await old(path).catch(() => false)) {
      await rm(path, { force: true })
      removed++
    }
  }
  return removed
}

/** The DataKits feature: the `datakit` actor kind, /api/datakits, the `datakit:<id>` topic. */
export function datakitsFeature(deps: AppDeps): Feature {
  const { config, logger, sql } = deps
  const log = logger.child({ component: 'datakits' })
  const dir = join(config.uploadDir, 'datakits')
  const c = config.datakits
  const engine = new DuckDBDatasetEngine({
    threads: c.duckdbThreads > 0 ? c.duckdbThreads : DEFAULT_ENGINE_OPTIONS.threads,
    memoryLimit: c.duckdbMemoryLimit,
    backgroundConcurrency: c.profileConcurrency,
    interactiveConcurrency: c.queryConcurrency,
    tempDirectory: join(config.dataDir, 'duckdb-tmp'),
  })
  const kind = datakitActor({ engine, dir, defaultQuotaBytes: c.storageQuotaBytes, logger })
  // Status changes made by background profiling never pass through a route: every event of a
  // datakit drops its cached reads (the routes also invalidate before answering their writes).
  const unsubscribe = deps.actors.subscribe((e) => {
    if (e.topic.startsWith('datakit:')) void deps.cache.invalidate(e.topic, 'datakits').catch((err) => log.warn({ err }, 'cache invalidation failed'))
    else if (e.topic.startsWith('user:') && e.type.startsWith('datakit.')) {
      void deps.cache.invalidate(`datakits:${e.topic.slice('user:'.length)}`).catch((err) => log.warn({ err }, 'cache invalidation failed'))
    }
  })
  return {
    name: 'datakits',
    actors: [kind],
    routes: [datakitRoutes(deps, { engine, dir })],
    uploadPaths: [UPLOAD_PATH],
    cachedReads: [datakitsRead],
    topics: {
      datakit: async (principal, id) => UUID.test(id) && (await store.findDatakit(sql, id))?.ownerId === principal.userId,
    },
    async start() {
      // Versions a stopped node was profiling: their actors profile them again.
      for (const id of await store.processingDatakits(sql)) deps.actors.tell(DATAKIT_KIND, id, { type: 'resume' })
      const removed = await sweepOrphans(sql, dir).catch((err) => {
        log.warn({ err }, 'orphan sweep failed')
        return 0
      })
      if (removed > 0) log.info({ removed, dir }, 'removed orphaned datakit files')
    },
    async stop() {
      unsubscribe()
    },
  }
}

