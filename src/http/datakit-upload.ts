/**
 * POST /api/datakits/upload: a dataset streamed to disk (./upload.ts parses the multipart
 * body: the file never sits in memory), checked against the size limit and the uploader's
 * storage quota while it arrives, its format decided from its bytes, then handed to the
 * datakit's actor as a new datakit or version N+1. A refused or failed upload leaves no file.
 *
 * `orgId` (a form field, or `?orgId=` to have the org checked before the body is read) creates
 * the datakit in an organisation where the uploader is MEMBER or above; its storage counts
 * against the org's quota. The quota checked while the file arrives is the account it will
 * land in when that is known before the body (the org of `?orgId=`, or the uploader's own
 * when they are in no org); the datakit's actor checks the exact account under its lock.
 */
import { mkdir, rm } from 'node:fs/promises'
import { Elysia } from 'elysia'
import { Value } from '@sinclair/typebox/value'
import { AppError, ValidationError } from '../core/errors.ts'
import { DATAKIT_KIND, MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, type DatakitMessage } from '../actors/datakit.ts'
import { ActorTimeoutError } from '../actors/runtime/index.ts'
import { ACCEPTED_TYPES_TEXT, checkDatasetLimits, detectFormat, type DatasetFormat } from '../engines/datasets/format.ts'
import * as store from '../store/datakits.ts'
import type { Principal } from '../auth/principal.ts'
import { access } from '../auth/route-access.ts'
import { isUuid } from '../core/ids.ts'
import { Envelope, errors, ok, requireAction, requireOrgRole, type HttpDeps } from './context.ts'
import { datakitAccess } from './datakit-access.ts'
import { multipartBoundary, receiveUpload } from './upload.ts'
import { DatakitModel, serializeDetail } from './views/datakit.ts'

export const UPLOAD_PATH = '/api/datakits/upload'
const TAGS = ['DataKits']

/**
 * Room for the multipart framing and the text fields around the file: a body longer than the
 * file limit plus this cannot carry an acceptable file, so it is refused before it is read.
 */
const FORM_OVERHEAD_BYTES = 64 * 1024

/** Byte caps of the text fields while they stream (characters are checked after decoding). */
const FIELD_BYTES = { name: MAX_NAME_CHARS * 4, description: MAX_DESCRIPTION_CHARS * 4, datakitId: 64, orgId: 64 }

/** What the upload route's parser hands Elysia instead of a parsed body. */
const STREAMED = Object.freeze({ streamed: true })

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

/** The upload route; `dir` is UPLOAD_DIR/datakits. */
export function uploadRoute(deps: HttpDeps, dir: string) {
  const { config, sql } = deps
  const maxFileSize = config.maxFileSize
  const kits = datakitAccess(deps)
  const ask = (id: string, message: DatakitMessage) => deps.actors.ask(DATAKIT_KIND, id, message)

  const defaults: store.StorageDefaults = { userBytes: config.datakits.storageQuotaBytes, orgBytes: config.datakits.orgStorageQuotaBytes }

  /**
   * The storage an upload is checked against while it streams: the org of `?orgId=` (the
   * caller's role there checked first), else the caller's own — unless they could also be
   * uploading into an org (a form field comes with the body), when only the turn checks.
   */
  async function streamingQuota(me: Principal, queryOrgId: string | null): Promise<{ remaining: number; error: (n: number) => AppError } | undefined> {
    if (queryOrgId === null && (await store.createsInOrgs(sql, me.userId))) return undefined
    const u = await store.accountUsage(sql, queryOrgId ? { orgId: queryOrgId } : { userId: me.userId }, defaults)
    return { remaining: u.remainingBytes, error: (n) => new store.StorageQuotaError(u.usedBytes, n, u.quotaBytes, queryOrgId !== null) }
  }

  const fileTooLarge = () =>
    new AppError('payload_too_large', `The file is larger than the upload limit of ${humanBytes(maxFileSize)} (MAX_FILE_SIZE)`, {
      status: 413,
      details: [{ field: 'dataset', message: `Must be at most ${maxFileSize} bytes` }],
    })

async function upload(request: Request, set: { status?: number | string }) {
  // A VIEWER is refused (403) before a byte of the body is read.
  const me = await requireAction(deps, request, 'datakit', 'change')
  multipartBoundary(request.headers.get('content-type'))
  const queryOrgId = new URL(request.url).searchParams.get('orgId')
  if (queryOrgId !== null) {
    if (!isUuid(queryOrgId)) throw new ValidationError('Validation failed', [{ field: 'orgId', message: 'Invalid organisation id' }])
    await requireOrgRole(deps, me, queryOrgId, 'MEMBER')
  }
  const quota = await streamingQuota(me, queryOrgId)
  // A declared length that cannot fit is refused before a byte of it is read.
  const declared = Number(request.headers.get('content-length') ?? Number.NaN)
  if (declared > maxFileSize + FORM_OVERHEAD_BYTES) throw fileTooLarge()
  if (quota && declared > quota.remaining + FORM_OVERHEAD_BYTES) throw quota.error(declared - FORM_OVERHEAD_BYTES)
  await mkdir(dir, { recursive: true })
  const received = await receiveUpload(request, {
    dir,
    fileField: 'dataset',
    fields: FIELD_BYTES,
    limits: [{ bytes: maxFileSize, error: fileTooLarge }, ...(quota ? [{ bytes: quota.remaining, error: quota.error }] : [])],
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
    const orgId = fields.orgId ?? queryOrgId
    if (fields.orgId !== undefined && queryOrgId !== null && fields.orgId !== queryOrgId) throw new ValidationError('Validation failed', [{ field: 'orgId', message: 'Differs from ?orgId=' }])
    if (orgId !== null && fields.datakitId !== undefined) throw new ValidationError('Validation failed', [{ field: 'orgId', message: 'A new version stays where its datakit is: move it with PATCH /api/datakits/:id' }])
    if (fields.orgId !== undefined && queryOrgId === null) await requireOrgRole(deps, me, fields.orgId, 'MEMBER')
    // The content decides: a 415 naming the accepted types otherwise.
    const format: DatasetFormat = await detectFormat(file.path)
    // What its ends tell (a gzip's size, a CSV header's width): 413/422 naming the limit now,
    // rather than a FAILED version later (profiling checks the rest).
    await checkDatasetLimits(file.path, format, config.datakits)
    const uploaded = { fileId: file.id, originalName: file.originalName, format, sizeBytes: file.size, sha256: file.sha256, uploadedBy: me.userId }
    const description = fields.description === undefined ? undefined : fields.description === '' ? null : fields.description
    let id: string
    try {
      if (fields.datakitId !== undefined) {
        const { d } = await kits.writable(request, fields.datakitId)
        id = d.id
        await ask(id, { type: 'addVersion', file: uploaded, ...(fields.name !== undefined ? { name: fields.name } : {}), ...(description !== undefined ? { description } : {}) })
      } else {
        id = crypto.randomUUID()
        await ask(id, { type: 'create', ownerId: me.userId, orgId, name: fields.name!, description: description ?? null, file: uploaded })
      }
    } catch (err) {
      // A turn that timed out may still commit: its file must stay (the orphan sweep
      // removes it at boot if no version row ever named it).
      if (err instanceof ActorTimeoutError) keepFile = true
      throw err
    }
    keepFile = true
    const row = (await store.findWithLatest(sql, id))!
    await kits.invalidate(row)
    set.status = 201
    return ok(serializeDetail(row))
  } finally {
    if (!keepFile) await rm(file.path, { force: true })
  }
}

  return new Elysia({ prefix: '/api/datakits' }).post('/upload', ({ request, set }) => upload(request, set), {
        // The body is the route's to stream: this parser claims it without reading it, so
        // Elysia's own (which would buffer the whole form in memory) never runs.
        parse: () => STREAMED,
        response: { 201: Envelope.data(DatakitModel.detail), ...errors(400, 403, 404, 413, 415, 422) },
        detail: {
          summary: 'Upload a dataset as a new datakit, or as a new version of one',
          description:
            `Multipart form: \`dataset\` (the file), \`name\`, \`description\`; with \`datakitId\` it adds version N+1 (\`name\`/\`description\` then optional); with \`orgId\` ` +
            '(a form field, or `?orgId=` to have it checked before the body is read) the datakit is created in that organisation, where you must be MEMBER or above ' +
            '(404 for an org you are not in, 403 for a VIEWER), and its storage counts against the org’s quota. ' +
            `The body is streamed to disk and hashed (sha256); the content decides the type: ${ACCEPTED_TYPES_TEXT} (415 otherwise, whatever the name). ` +
            'The answer (201) is the datakit with status PROCESSING; it is profiled in the background and a `status` event on `datakit:<id>` says READY or FAILED (with the reason). ' +
            "413 past MAX_FILE_SIZE or the storage quota (the uploader's, or the org's) (details: usedBytes, allowedBytes, incomingBytes), or for a gzip file whose trailer says it " +
            'decompresses past DATAKIT_MAX_DECOMPRESSED_BYTES; 422 for a CSV/TSV header with more than DATAKIT_MAX_COLUMNS fields (details: `{field: "limit", message: "NAME=value"}`). ' +
            'What only profiling sees (DATAKIT_MAX_ROWS, the width of JSON or Parquet, a gzip stream past the limit, DATAKIT_PROFILE_TIMEOUT_MS, DATAKIT_PROFILE_MEMORY_MB) ends the version FAILED ' +
            'with a reason naming the limit. 404 for an unknown `datakitId`, 400 for a missing file or name or an unknown field, 403 for a VIEWER (before the body is read).',
          tags: TAGS,
          ...access.collection('datakit', 'change'),
          'x-content-type': 'multipart/form-data',
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
                    orgId: { type: 'string', format: 'uuid', description: 'Create it in this organisation (you must be MEMBER or above there)' },
                  },
                },
                example: { dataset: '(the contents of customers.csv)', name: 'Customer Data', description: 'Customer analytics dataset' },
              },
            },
          },
        },
      })
}
