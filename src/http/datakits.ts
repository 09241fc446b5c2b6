/**
 * /api/datakits: uploaded datasets (the upload route is ./datakit-upload.ts). Writes go
 * to the dataset's `datakit` actor (src/actors/datakit.ts), which profiles each version in the
 * background; reads are plain SQL, and previews, queries and exports read the version's
 * Parquet copy through the dataset engine.
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
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { Elysia, t } from 'elysia'
import { NotFoundError, ValidationError } from '../core/errors.ts'
import { consumeFile } from '../core/files.ts'
import { DATAKIT_KIND, type DatakitMessage } from '../actors/datakit.ts'
import { datakitFiles } from '../actors/datakit-files.ts'
import type { DatasetEngine, ExportFormat } from '../engines/datasets/engine.ts'
import { FORMAT_MEDIA_TYPES, type DatasetFormat } from '../engines/datasets/format.ts'
import { diffProfiles, type DatasetProfile } from '../engines/datasets/profile.ts'
import * as store from '../store/datakits.ts'
import * as users from '../store/users.ts'
import { bearer, documented, Envelope, errors, ok, requireRole, requireUser, type HttpDeps } from './context.ts'
import { datakitAccess, datakitsRead, VersionNotReadyError } from './datakit-access.ts'
import { contentDisposition, sanitizeFilename } from './upload.ts'
import { DatakitModel, serializeDatakit, serializeDetail, serializeVersion } from './views/datakit.ts'

const TAGS = ['DataKits']
const idParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid datakit id' }) })
const versionParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid datakit id' }), n: t.Integer({ minimum: 1, error: 'Invalid version number' }) })

export interface DatakitRoutesOptions {
  engine: DatasetEngine
  /** UPLOAD_DIR/datakits */
  dir: string
}

/** The /api/datakits routes over an actor system where the `datakit` kind is registered. */
export function datakitRoutes(deps: HttpDeps, opts: DatakitRoutesOptions) {
  const { config, sql } = deps
  const { engine, dir } = opts
  const exportDir = join(dir, 'exports')
  const ask = (id: string, message: DatakitMessage) => deps.actors.ask(DATAKIT_KIND, id, message)

  const { readable, writable, invalidate, readyVersion } = datakitAccess(deps)
  const usage = (userId: string) => store.storageUsage(sql, userId, config.datakits.storageQuotaBytes)

  return (
    new Elysia({ prefix: '/api/datakits' })
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
            const p = await engine.preview(datakitFiles(dir, v.fileId).parquet, query.limit ?? 50, query.offset ?? 0, { user: me.userId, signal: request.signal })
            return ok({ version: v.version, ...p })
          })
        },
        {
          params: idParams,
          query: DatakitModel.previewQuery,
          detail: {
            summary: 'Rows of a READY version, in file order (limit 1–1000, offset; at most DATAKIT_QUERY_MAX_BYTES of JSON; cached)',
            tags: TAGS,
            security: bearer,
            responses: documented({ 200: Envelope.data(DatakitModel.preview), ...errors(400, 401, 404, 409, 422, 429) }),
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
          const { me, d } = await readable(request, params.id)
          const v = await readyVersion(d, query.version)
          const format: ExportFormat = query.format ?? 'csv'
          await mkdir(exportDir, { recursive: true })
          const res = await engine.exportTo(datakitFiles(dir, v.fileId).parquet, format, join(exportDir, `${crypto.randomUUID()}.${format}`), { user: me.userId, signal: request.signal })
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
            responses: { 200: { description: 'The exported file', content: { 'text/csv': { schema: { type: 'string' } } } }, ...documented(errors(400, 401, 404, 409, 422, 429)) },
          },
        },
      )
      .post(
        '/:id/query',
        async ({ request, params, body, set }) => {
          const { me, d } = await readable(request, params.id)
          const v = await readyVersion(d, body.version)
          const r = await engine.query(datakitFiles(dir, v.fileId).parquet, body.sql, { user: me.userId, signal: request.signal })
          // The rows arrive as JSON text from the worker and are spliced in as they are: parsing
          // and serialising up to DATAKIT_QUERY_MAX_BYTES again here cost the event loop ~150 ms
          // per 8 MB answer (measured under load), time every other request waits.
          const meta = JSON.stringify({ version: v.version, columns: r.columns, rowCount: r.rowCount, truncated: r.truncated, truncatedBy: r.truncatedBy, elapsedMs: r.elapsedMs })
          ;(set.headers as Record<string, string>)['content-type'] = 'application/json'
          return `{"success":true,"data":${meta.slice(0, -1)},"rows":${r.rowsJson}}}`
        },
        {
          params: idParams,
          body: DatakitModel.query,
          detail: {
            summary: 'Run one read-only DuckDB query over the table `data` (sandboxed; bounded in time, memory, rows and bytes)',
            description:
              'One read-only statement (SELECT, WITH, FROM-first, SUMMARIZE, DESCRIBE) over the table `data`, in a fresh DuckDB with no file, network, extension or write access, ' +
              'run in a worker process. At most DATAKIT_QUERY_MAX_ROWS rows and DATAKIT_QUERY_MAX_BYTES bytes of JSON are returned (`truncated: true`, `truncatedBy`: `rows` or `bytes`); ' +
              'POST /query/export streams the whole result as a file. 422 `query_timeout` past DATAKIT_QUERY_TIMEOUT_MS, `query_memory_exceeded` past DATAKIT_QUERY_MEMORY_MB ' +
              '(details: `{field: "limit", message: "NAME=value"}`), or with DuckDB’s message; 429 when you already have DATAKIT_QUERY_QUEUE_PER_USER operations waiting.',
            tags: TAGS,
            security: bearer,
            responses: documented({ 200: Envelope.data(DatakitModel.queryResult), ...errors(400, 401, 404, 409, 422, 429) }),
          },
        },
      )
      .post(
        '/:id/query/export',
        async ({ request, params, body, set }) => {
          const { me, d } = await readable(request, params.id)
          const v = await readyVersion(d, body.version)
          const format: ExportFormat = body.format ?? 'csv'
          await mkdir(exportDir, { recursive: true })
          const res = await engine.exportQuery(datakitFiles(dir, v.fileId).parquet, body.sql, format, join(exportDir, `${crypto.randomUUID()}.${format}`), {
            user: me.userId,
            signal: request.signal,
          })
          const h = set.headers as Record<string, string>
          h['content-type'] = res.contentType
          h['content-length'] = String(res.bytes)
          h['content-disposition'] = contentDisposition(`${sanitizeFilename(d.name.replace(/[\\/]/g, '_'), 'datakit')}-v${v.version}-query.${format}`)
          // consumeFile is a pull stream: it reads the next chunk only when the client took the last.
          return new Response(await consumeFile(res.path), { headers: h })
        },
        {
          params: idParams,
          body: DatakitModel.queryExport,
          detail: {
            summary: 'The whole result of one sandboxed query as a CSV, Parquet or JSON file, streamed',
            description:
              'The same sandbox and checks as POST /query, without the row and byte caps of a JSON answer: DuckDB writes the result to a file (CSV cells that look like formulas ' +
              'are neutralised), which is then streamed with backpressure and removed. Bounded by DATAKIT_QUERY_TIMEOUT_MS and DATAKIT_QUERY_MEMORY_MB (422) and by ' +
              'DATAKIT_EXPORT_MAX_BYTES of file (413 `export_too_large`: the export is stopped as soon as the file outgrows it); errors come before the first byte, in the envelope.',
            tags: TAGS,
            security: bearer,
            responses: {
              200: {
                description: 'The result file',
                content: {
                  'text/csv': { schema: { type: 'string' } },
                  'application/vnd.apache.parquet': { schema: { type: 'string', format: 'binary' } },
                  'application/json': { schema: { type: 'string' } },
                },
              },
              ...documented(errors(400, 401, 404, 409, 413, 422, 429)),
            },
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
}
