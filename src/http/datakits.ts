/**
 * /api/datakits: uploaded datasets (the upload route is ./datakit-upload.ts). Writes go
 * to the dataset's `datakit` actor (src/actors/datakit.ts), which profiles each version in the
 * background; reads are plain SQL, and previews, queries and exports read the version's
 * Parquet copy through the dataset engine.
 *
 * Who may do what: a datakit belongs to the user who uploaded it. Another user gets 404 on
 * every route, as if it did not exist; an admin may read and manage every datakit. A VIEWER
 * may read their own datakits but not upload, change or delete (403). A datakit created in
 * (or moved to) an organisation is shared there, as src/auth/policy.ts says: its VIEWERs read
 * and query it, MEMBERs change it, ADMINs (and a MEMBER who owns it) delete it; outside the
 * org it does not exist (404). Its storage counts against the org's quota.
 *
 * Storage: files live in UPLOAD_DIR/datakits under generated UUID names (the client's name is
 * kept, sanitised, as metadata only). Each user has a storage quota (uploads plus their
 * Parquet copies): USER_STORAGE_QUOTA_BYTES, or an admin's override. In a cluster UPLOAD_DIR
 * must be storage every node shares: the node that receives an upload is not necessarily the
 * one whose actor profiles it.
 *
 * Downloads (the uploaded file, a dataset export, a query export) are paced per user:
 * DATAKIT_DOWNLOAD_BYTES_PER_SECOND (./downloads.ts).
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { Elysia, t } from 'elysia'
import { NotFoundError, ValidationError } from '../core/errors.ts'
import { DATAKIT_KIND, type DatakitMessage } from '../actors/datakit.ts'
import { datakitFiles } from '../actors/datakit-files.ts'
import type { DatasetEngine, ExportFormat } from '../engines/datasets/engine.ts'
import { FORMAT_MEDIA_TYPES, type DatasetFormat } from '../engines/datasets/format.ts'
import { diffProfiles, type DatasetProfile } from '../engines/datasets/profile.ts'
import * as store from '../store/datakits.ts'
import * as users from '../store/users.ts'
import { access } from '../auth/route-access.ts'
import { documented, Envelope, errors, ok, requireAction, requireOrgRole, requireUser, type HttpDeps } from './context.ts'
import { datakitAccess, datakitsRead, VersionNotReadyError } from './datakit-access.ts'
import { Downloads } from './downloads.ts'
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

/** What follows a query answer's rows: the end of `data`, then of the envelope. */
const CLOSE_QUERY_ANSWER = Buffer.from('}}')

/** The /api/datakits routes over an actor system where the `datakit` kind is registered. */
export function datakitRoutes(deps: HttpDeps, opts: DatakitRoutesOptions) {
  const { config, sql } = deps
  const { engine, dir } = opts
  const exportDir = join(dir, 'exports')
  const downloads = new Downloads(config.datakits.downloadBytesPerSecond)
  const ask = (id: string, message: DatakitMessage) => deps.actors.ask(DATAKIT_KIND, id, message)

  const { readable, writable, deletable, move, invalidate, readyVersion } = datakitAccess(deps)
  const usage = (userId: string) => store.storageUsage(sql, userId, config.datakits.storageQuotaBytes)
  const list = async (query: { limit?: number; cursor?: string; search?: string; status?: store.DatakitRow['status'] }, owner: Pick<store.ListOptions, 'ownerId' | 'memberId' | 'orgId'>) => {
    const limit = query.limit ?? 20
    const page = await store.listDatakits(sql, { limit, cursor: query.cursor, search: query.search, status: query.status, ...owner })
    return ok(page.items.map(serializeDatakit), { nextCursor: page.nextCursor, limit })
  }

  return (
    new Elysia({ prefix: '/api/datakits' })
      .get(
        '/',
        async ({ request, query, set }) => {
          const me = await requireAction(deps, request, 'datakit', 'read')
          if (query.orgId) {
            await requireOrgRole(deps, me, query.orgId, 'VIEWER')
            return list(query, { orgId: query.orgId, ownerId: me.role === 'ADMIN' ? query.ownerId : undefined })
          }
          const owner = me.role === 'ADMIN' ? { ownerId: query.ownerId } : { ownerId: me.userId, memberId: me.userId }
          return deps.cache.serve(request, set.headers as Record<string, string>, { scope: datakitsRead.scope(me, {})!, viewer: me.userId, route: datakitsRead.path }, () => list(query, owner))
        },
        {
          query: DatakitModel.listQuery,
          detail: {
            summary: 'List your datakits',
            description:
              'Your datakits, oldest first, each with its latest version (an admin sees everyone’s, or one user’s with `ownerId`); those you made in an organisation you have left are ' +
              'no longer yours to see. With `orgId`, every datakit of that organisation, whoever made it (404 `Organisation not found` unless you are a member). `search` matches part of the name ' +
              '(case-insensitive), `status` the latest version’s status; `limit` (1–100, default 20) and `cursor` page through them (`meta.nextCursor`). ' +
              'Answers are cached per viewer with an ETag (`If-None-Match` → 304). 400 for a bad parameter.',
            tags: TAGS,
            ...access.collection('datakit', 'read'),
            responses: documented({ 200: Envelope.list(DatakitModel.datakit), ...errors(400, 404) }),
          },
        },
      )
      .get(
        '/storage',
        async ({ request, query }) => {
          const me = await requireUser(deps, request)
          if (query.orgId) {
            await requireOrgRole(deps, me, query.orgId, 'VIEWER')
            return ok(await store.orgStorageUsage(sql, query.orgId, config.datakits.orgStorageQuotaBytes))
          }
          const userId = query.userId ?? me.userId
          if (userId !== me.userId && me.role !== 'ADMIN') throw new NotFoundError('User')
          return ok(await usage(userId))
        },
        {
          query: DatakitModel.storageQuery,
          response: { 200: Envelope.data(DatakitModel.storage), ...errors(400, 404) },
          detail: {
            summary: 'Get DataKit storage used and allowed',
            description:
              'Bytes of uploads and their Parquet copies stored by you, against your quota (USER_STORAGE_QUOTA_BYTES, or an admin’s override). ' +
              'An admin may ask for any user with `userId`; for anyone else another user’s `userId` is a 404. With `orgId`, an organisation’s: the bytes of its datakits against ' +
              'its quota (what its admins set, within the ceiling a platform admin set, else ORG_DEFAULT_STORAGE_BYTES); 404 unless you are a member.',
            tags: TAGS,
            ...access.signedIn,
          },
        },
      )
      .put(
        '/storage',
        async ({ request, query, body }) => {
          await requireAction(deps, request, 'platform', 'change')
          if (!(await users.findById(sql, query.userId))) throw new NotFoundError('User')
          await deps.audit.change(sql, (tx) => store.setQuotaOverride(tx, query.userId, body.quotaBytes))
          return ok(await usage(query.userId))
        },
        {
          query: DatakitModel.setQuotaQuery,
          body: DatakitModel.setQuota,
          response: { 200: Envelope.data(DatakitModel.storage), ...errors(400, 403, 404) },
          detail: {
            summary: "Set a user's DataKit storage quota",
            description:
              'Overrides USER_STORAGE_QUOTA_BYTES for the user `userId` (`quotaBytes`; `null` returns them to the default) and answers their usage, as ' +
              '`GET /storage?userId=` does. Uploads already stored are kept; the next upload is checked against the new figure. 403 for anyone but an admin, ' +
              '404 when there is no such user, 400 for a `userId` that is not a UUID or a negative `quotaBytes`.',
            tags: TAGS,
            ...access.admin('change'),
          },
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
            summary: 'Get a datakit with its latest version and profile',
            description:
              'The datakit, its latest version (format, original name, size, sha256, rows, columns, `error` and `errorLine` when it FAILED) and that version’s profile ' +
              '(`null` until READY): per column its type, null %, approximate distinct count, min, max, mean, std, quartiles and, for text, the top values. ' +
              'Cached with an ETag. 400 when the id is not a UUID, 404 when there is no such datakit.',
            tags: TAGS,
            ...access.object('datakit', 'read'),
            responses: documented({ 200: Envelope.data(DatakitModel.detail), ...errors(400, 404) }),
          },
        },
      )
      .patch(
        '/:id',
        async ({ request, params, body }) => {
          const { orgId, ...fields } = body
          const d = orgId !== undefined ? await move(request, params.id, orgId) : (await writable(request, params.id)).d
          if (fields.name !== undefined || fields.description !== undefined) await ask(d.id, { type: 'update', ...fields })
          await invalidate(d)
          const row = await store.findWithLatest(sql, d.id)
          if (!row) throw new NotFoundError('DataKit')
          return ok(serializeDetail(row))
        },
        {
          params: idParams,
          body: DatakitModel.patch,
          response: { 200: Envelope.data(DatakitModel.detail), ...errors(400, 403, 404, 413) },
          detail: {
            summary: 'Rename a datakit, change its description, or move it to an organisation',
            description:
              'Sets `name` (1–200 characters) and/or `description` (up to 2000; `null` clears it) and answers the datakit; an `updated` event {id, name, description} ' +
              'follows on `datakit:<id>` (and `datakit.updated` on `user:<ownerId>`). `orgId` moves it into that organisation (`null`: makes it personal again), a `moved` event ' +
              'following: only its owner, ADMIN or above in the org it goes to and in the org it leaves (403 otherwise; 404 for an org you are not in); its storage then counts ' +
              'against the new account, which must have room for it (413). Unknown fields are refused (400); 403 for a VIEWER (of the platform or of its org); 404 when there is no such datakit.',
            tags: TAGS,
            ...access.object('datakit', 'change'),
          },
        },
      )
      .delete(
        '/:id',
        async ({ request, params }) => {
          const { d } = await deletable(request, params.id)
          await ask(d.id, { type: 'delete' })
          await invalidate(d)
          return ok({ id: d.id })
        },
        {
          params: idParams,
          response: { 200: Envelope.data(DatakitModel.deleted), ...errors(400, 403, 404) },
          detail: {
            summary: 'Delete a datakit, all its versions and their files',
            description:
              'Deletes the datakit and every version; profiling in progress is stopped, the uploaded files and Parquet copies are removed in the background and the ' +
              'storage they used is freed. A `deleted` event {id} follows on `datakit:<id>`. 403 for a VIEWER, and in an organisation for a MEMBER who did not make it ' +
              '(its ADMINs delete any); 404 when there is no such datakit.',
            tags: TAGS,
            ...access.object('datakit', 'delete'),
          },
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
            summary: 'Preview rows of a datakit version',
            description:
              'Rows `offset … offset+limit` (limit 1–1000, default 50) of the newest READY version, or of `version`, in file order, with the columns and `totalRows`; ' +
              'no more rows than fit DATAKIT_QUERY_MAX_BYTES of JSON (`truncated: true` then). Read in a worker process under the query limits ' +
              '(DATAKIT_QUERY_TIMEOUT_MS, DATAKIT_QUERY_MEMORY_MB: 422 naming the one crossed in `details`), in one of your query slots ' +
              '(429 when you already have DATAKIT_QUERY_QUEUE_PER_USER operations waiting), paced as queries are (DATAKIT_QUERY_BYTES_PER_SECOND). Cached with an ETag. 404 for an unknown datakit or version, ' +
              '409 while the version is PROCESSING or when it FAILED.',
            tags: TAGS,
            ...access.object('datakit', 'read'),
            responses: documented({ 200: Envelope.data(DatakitModel.preview), ...errors(400, 404, 409, 422, 429) }),
          },
        },
      )
      .get(
        '/:id/download',
        async ({ request, params, query, set }) => {
          const { me, d } = await readable(request, params.id)
          const v = await store.findVersion(sql, d.id, query.version ?? d.currentVersion)
          if (!v) throw new NotFoundError('DataKit version')
          const path = datakitFiles(dir, v.fileId).original
          if (!(await Bun.file(path).exists())) throw new NotFoundError('DataKit file')
          const h = set.headers as Record<string, string>
          h['content-type'] = FORMAT_MEDIA_TYPES[v.format as DatasetFormat] ?? 'application/octet-stream'
          h['content-disposition'] = contentDisposition(v.originalName)
          h['x-content-sha256'] = v.sha256
          return downloads.file(me.userId, path, h, request.signal)
        },
        {
          params: idParams,
          query: t.Object({ version: t.Optional(t.Integer({ minimum: 1, description: 'Default: the latest version' })) }),
          detail: {
            summary: 'Download the uploaded file of a datakit version',
            description:
              'The file of the latest version, or of `version`, exactly as it was received: streamed, with `Content-Disposition: attachment` and the sanitised original name, ' +
              'the media type of its detected format and its sha256 in `X-Content-Sha256`. Any version can be downloaded, READY or not. ' +
              'Your downloads and exports together are sent at most DATAKIT_DOWNLOAD_BYTES_PER_SECOND (one second’s worth at once, with its Content-Length; a larger file is streamed at that pace, chunked). 404 for an unknown datakit or version.',
            tags: TAGS,
            ...access.object('datakit', 'read'),
            responses: { 200: { description: 'The file', content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } }, ...documented(errors(400, 404)) },
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
          h['content-disposition'] = contentDisposition(`${sanitizeFilename(d.name.replace(/[\\/]/g, '_'), 'datakit')}-v${v.version}.${format}`)
          return downloads.consume(me.userId, res.path, res.bytes, h, request.signal)
        },
        {
          params: idParams,
          query: DatakitModel.exportQuery,
          detail: {
            summary: 'Export a datakit version as CSV, JSON or Parquet',
            description:
              'The newest READY version, or `version`, as CSV (cells of text columns that a spreadsheet would evaluate as a formula get a leading `\'`), a JSON array of ' +
              'objects, or Parquet; CSV and JSON are written by a worker process in one of your query slots, then streamed and removed. Bounded by ' +
              'DATAKIT_PROFILE_TIMEOUT_MS (it is as big as the dataset) and DATAKIT_QUERY_MEMORY_MB (422 naming the one crossed in `details`); 429 when you ' +
              'already have DATAKIT_QUERY_QUEUE_PER_USER operations waiting. Your downloads and exports together are sent at most DATAKIT_DOWNLOAD_BYTES_PER_SECOND (one second’s worth at once, with its Content-Length; a larger file is streamed at that pace, chunked). 404 for an unknown datakit or version, 409 while the version is PROCESSING or when it FAILED.',
            tags: TAGS,
            ...access.object('datakit', 'read'),
            responses: {
              200: {
                description: 'The exported file',
                content: {
                  'text/csv': { schema: { type: 'string' } },
                  'application/json': { schema: { type: 'string' }, example: '[{"id":1,"city":"Lisbon"}]' },
                  'application/vnd.apache.parquet': { schema: { type: 'string', format: 'binary' } },
                },
              },
              ...documented(errors(400, 404, 409, 422, 429)),
            },
          },
        },
      )
      .post(
        '/:id/query',
        async ({ request, params, body, set }) => {
          const { me, d } = await readable(request, params.id)
          const v = await readyVersion(d, body.version)
          const r = await engine.query(datakitFiles(dir, v.fileId).parquet, body.sql, { user: me.userId, signal: request.signal })
          // The rows arrive as JSON bytes from the worker and are spliced in as they are: parsing
          // and serialising up to DATAKIT_QUERY_MAX_BYTES again here cost the event loop ~150 ms
          // per 8 MB answer (measured under load), and even as text, receiving and encoding it
          // blocked it ~7 ms (bytes: ~3), time every other request waits.
          const meta = JSON.stringify({ version: v.version, columns: r.columns, rowCount: r.rowCount, truncated: r.truncated, truncatedBy: r.truncatedBy, elapsedMs: r.elapsedMs })
          ;(set.headers as Record<string, string>)['content-type'] = 'application/json'
          return Buffer.concat([Buffer.from(`{"success":true,"data":${meta.slice(0, -1)},"rows":`), r.rowsJson, CLOSE_QUERY_ANSWER])
        },
        {
          params: idParams,
          body: DatakitModel.query,
          detail: {
            summary: 'Run a read-only SQL query over a datakit',
            description:
              'One read-only DuckDB statement (SELECT, WITH, FROM-first, SUMMARIZE, DESCRIBE) over the table `data` (the newest READY version, or `version`), in a fresh ' +
              'DuckDB with no file, network, extension or write access, in a worker process of its own. DuckDB’s settings (`current_setting()`, `duckdb_settings()`, ' +
              '`pg_settings`) and SQL built while the query runs (`query()`, `query_table()`) are refused: they would show the server’s paths. ' +
              'At most DATAKIT_QUERY_MAX_ROWS rows and DATAKIT_QUERY_MAX_BYTES of JSON come back (`truncated: true`, `truncatedBy`: `rows` or `bytes`; a value larger ' +
              'than what is left is not even read); POST /query/export gives the whole result as a file. 422 with DuckDB’s message for a refused or failing statement, ' +
              'or naming the bound in `details` (`{field: "limit", message: "NAME=value"}`): DATAKIT_QUERY_TIMEOUT_MS (counted from arrival; the worker is killed) or ' +
              'DATAKIT_QUERY_MEMORY_MB (the worker’s resident memory, also held by the kernel). Your queries run one at a time (DATAKIT_QUERY_CONCURRENCY_PER_USER) and ' +
              'take turns fairly with other users’; 429 when you already have DATAKIT_QUERY_QUEUE_PER_USER waiting. The rows your queries and previews answer with are paced: ' +
              'past DATAKIT_QUERY_MAX_BYTES at once and DATAKIT_QUERY_BYTES_PER_SECOND on average, your next one waits (holding no slot), or is a 429 `answer_rate_exceeded` ' +
              'with Retry-After when it could not start within its time limit. 404 for an unknown datakit or version, 409 while it is not READY.',
            tags: TAGS,
            ...access.object('datakit', 'read'),
            responses: documented({ 200: Envelope.data(DatakitModel.queryResult), ...errors(400, 404, 409, 422, 429) }),
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
          h['content-disposition'] = contentDisposition(`${sanitizeFilename(d.name.replace(/[\\/]/g, '_'), 'datakit')}-v${v.version}-query.${format}`)
          return downloads.consume(me.userId, res.path, res.bytes, h, request.signal)
        },
        {
          params: idParams,
          body: DatakitModel.queryExport,
          detail: {
            summary: 'Export the whole result of a SQL query as a file',
            description:
              'The same sandbox and checks as POST /query, without the row and byte caps of a JSON answer: DuckDB writes the whole result as CSV (header; cells that look ' +
              'like formulas neutralised), Parquet or a JSON array, which is then streamed with backpressure and removed. Bounded by DATAKIT_QUERY_TIMEOUT_MS and ' +
              'DATAKIT_QUERY_MEMORY_MB (422) and by DATAKIT_EXPORT_MAX_BYTES of file (413 `export_too_large`: stopped as soon as the file outgrows it); every error comes ' +
              'before the first byte, in the envelope. 429 when you already have DATAKIT_QUERY_QUEUE_PER_USER operations waiting; 404 for an unknown datakit or version, 409 while it is not READY. ' +
              'Your downloads and exports together are sent at most DATAKIT_DOWNLOAD_BYTES_PER_SECOND (one second’s worth at once, with its Content-Length; a larger file is streamed at that pace, chunked).',
            tags: TAGS,
            ...access.object('datakit', 'read'),
            responses: {
              200: {
                description: 'The result file',
                content: {
                  'text/csv': { schema: { type: 'string' } },
                  'application/vnd.apache.parquet': { schema: { type: 'string', format: 'binary' } },
                  'application/json': { schema: { type: 'string' }, example: '[{"city":"Lisbon","n":2600}]' },
                },
              },
              ...documented(errors(400, 404, 409, 413, 422, 429)),
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
            summary: 'List the versions of a datakit',
            description:
              'Every version, newest first: its status (`error`/`errorLine` when it FAILED, e.g. the CSV line that broke or the DATAKIT_MAX_* limit it crossed), format, ' +
              'original name, size, sha256, rows and columns. Cached with an ETag. 404 when there is no such datakit.',
            tags: TAGS,
            ...access.object('datakit', 'read'),
            responses: documented({ 200: Envelope.data(DatakitModel.versions), ...errors(400, 404) }),
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
          response: { 200: Envelope.data(DatakitModel.diff), ...errors(400, 404, 409) },
          detail: {
            summary: 'Compare the profiles of two datakit versions',
            description:
              'Columns added, removed and retyped (matched by name), and the change in rows, from version `against` (default n − 1) to version n. ' +
              '400 for version 1 without `against`, or `against` equal to n; 404 for an unknown datakit or version; 409 when either version is not READY.',
            tags: TAGS,
            ...access.object('datakit', 'read'),
          },
        },
      )
  )
}
