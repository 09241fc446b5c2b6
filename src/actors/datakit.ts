/**
 * The `datakit` actor: one per dataset, the only writer of its row and its versions.
 *
 * A version is created PROCESSING by `create` (version 1) or `addVersion` (N+1), in the same
 * turn that checks the owner's storage quota under a per-user lock. Profiling then runs as
 * background work (DuckDB: the file is converted to Parquet and summarised), outside the
 * mailbox so renames and deletes are not held up, and reports back with `self.tell`:
 * `profiled` → READY with the profile, `profileFailed` → FAILED with a reason the uploader can
 * act on (the CSV line that broke). A version left PROCESSING by a stopped node is profiled
 * again on `resume` (sent at boot).
 *
 * Every transition is an event on `datakit:<id>` (type `status`, `updated`, `deleted`) and on
 * `user:<ownerId>` (the same with a `datakit.` prefix), all carrying `{ id, … }`.
 *
 * Files live in `<uploadDir>/<fileId>` (the upload) and `<fileId>.parquet` (the read copy).
 * Removing them is idempotent (rm -f), so a redelivered delete or a late `profiled` report
 * for a datakit that is gone just cleans up.
 */
import { rm, stat } from 'node:fs/promises'
import { Type as T, type Static } from '@sinclair/typebox'
import { AppError, ConflictError, NotFoundError } from '../core/errors.ts'
import type { Logger } from '../core/logger.ts'
import type { Db } from '../store/db.ts'
import * as store from '../store/datakits.ts'
import type { DatasetEngine } from '../engines/datasets/engine.ts'
import { DatasetParseError, LimitError } from '../engines/datasets/errors.ts'
import { DATASET_FORMATS, type DatasetFormat } from '../engines/datasets/format.ts'
import type { DatasetProfile } from '../engines/datasets/profile.ts'
import { datakitFiles } from './datakit-files.ts'
import { defineActor, type ActorRef, type TurnContext } from './runtime/index.ts'

export const DATAKIT_KIND = 'datakit'
export const MAX_NAME_CHARS = 200
export const MAX_DESCRIPTION_CHARS = 2000

const Id = T.String({ format: 'uuid' })
const Name = T.String({ minLength: 1, maxLength: MAX_NAME_CHARS })
const Description = T.Union([T.String({ maxLength: MAX_DESCRIPTION_CHARS }), T.Null()])

/** A file the HTTP edge has received and stored under its generated id. */
export const UploadedFile = T.Object({
  fileId: Id,
  originalName: T.String({ minLength: 1, maxLength: 255 }),
  format: T.Union(DATASET_FORMATS.map((f) => T.Literal(f))),
  sizeBytes: T.Integer({ minimum: 0 }),
  sha256: T.String({ pattern: '^[0-9a-f]{64}$' }),
  uploadedBy: Id,
})
export type UploadedFile = Static<typeof UploadedFile>

export const DatakitMessage = T.Union([
  /** `orgId`: created shared in that organisation (the edge checked the creator's role there). */
  T.Object({ type: T.Literal('create'), ownerId: Id, orgId: T.Optional(T.Union([Id, T.Null()])), name: Name, description: Description, file: UploadedFile }),
  /** A new version; name/description, when given, replace the datakit's. */
  T.Object({ type: T.Literal('addVersion'), file: UploadedFile, name: T.Optional(Name), description: T.Optional(Description) }),
  T.Object({ type: T.Literal('update'), name: T.Optional(Name), description: T.Optional(Description) }),
  T.Object({ type: T.Literal('delete') }),
  /** Share it in another organisation, or (null) make it personal again: its storage moves along. */
  T.Object({ type: T.Literal('move'), orgId: T.Union([Id, T.Null()]) }),
  /** Profile versions left PROCESSING (after a restart); a no-op for those being profiled. */
  T.Object({ type: T.Literal('resume') }),
  // Reports of the background profiling (never sent by the HTTP edge).
  T.Object({ type: T.Literal('profiled'), version: T.Integer({ minimum: 1 }), fileId: Id, parquetBytes: T.Integer({ minimum: 0 }), profile: T.Unknown() }),
  T.Object({ type: T.Literal('profileFailed'), version: T.Integer({ minimum: 1 }), fileId: Id, reason: T.String(), line: T.Union([T.Integer(), T.Null()]) }),
])
export type DatakitMessage = Static<typeof DatakitMessage>

/** The datakit row, or null for an id with none (never created, or deleted). */
export type DatakitState = store.DatakitRow | null

const datakitTopic = (id: string) => `datakit:${id}`
const userTopic = (userId: string) => `user:${userId}`

export interface DatakitActorOptions {
  engine: DatasetEngine
  /** Directory of the stored files (UPLOAD_DIR/datakits). */
  dir: string
  /** The storage quota of a user without an admin override. */
  defaultQuotaBytes: number
  /** The storage ceiling of an organisation without one set (ORG_DEFAULT_STORAGE_BYTES). */
  defaultOrgQuotaBytes: number
  logger: Logger
}

/**
 * Define the `datakit` kind. One definition per actor system: the profiles running in this
 * process (their abort handles) are kept in this closure.
 */
export function datakitActor(opts: DatakitActorOptions) {
  const log = opts.logger.child({ component: 'datakit' })
  const quotas: store.StorageDefaults = { userBytes: opts.defaultQuotaBytes, orgBytes: opts.defaultOrgQuotaBytes }
  /** Profiling in progress in this process, by `<datakitId>:<version>`. */
  const inflight = new Map<string, AbortController>()

  const existing = (state: DatakitState): store.DatakitRow => {
    if (!state) throw new NotFoundError('DataKit')
    return state
  }

  /** The same event on the datakit's topic and, prefixed, on its owner's. */
  const emit = (ctx: TurnContext<DatakitMessage>, d: { id: string; ownerId: string }, type: string, data: Record<string, unknown>) => {
    ctx.emit(datakitTopic(d.id), type, { id: d.id, ...data })
    ctx.emit(userTopic(d.ownerId), `datakit.${type}`, { id: d.id, ...data })
  }

  /** Record a new PROCESSING version and start profiling it once the turn commits. */
  async function addVersion(ctx: TurnContext<DatakitMessage>, d: store.DatakitRow, version: number, file: UploadedFile): Promise<void> {
    await store.reserveStorage(ctx.tx, store.storageAccount(d), file.sizeBytes, quotas)
    await store.insertVersion(ctx.tx, {
      datakitId: d.id,
      version,
      ownerId: d.ownerId,
      uploadedBy: file.uploadedBy,
      format: file.format,
      originalName: file.originalName,
      fileId: file.fileId,
      sizeBytes: file.sizeBytes,
      sha256: file.sha256,
    })
    emit(ctx, d, 'status', { version, status: 'PROCESSING', error: null, errorLine: null })
    profileLater(ctx, d, version, file.fileId, file.format)
  }

  function profileLater(ctx: TurnContext<DatakitMessage>, d: { id: string; ownerId: string }, version: number, fileId: string, format: DatasetFormat): void {
    const self = ctx.self
    ctx.background((systemSignal) => profile(self, d, version, fileId, format, systemSignal))
  }

  /**
   * The background work of one version, in the owner's share of the profiling slots (so one
   * user's uploads never hold another's back). Reports with `self.tell`; never throws.
   */
  async function profile(
    self: ActorRef<DatakitMessage>,
    { id, ownerId }: { id: string; ownerId: string },
    version: number,
    fileId: string,
    format: DatasetFormat,
    systemSignal: AbortSignal,
  ): Promise<void> {
    const key = `${id}:${version}`
    // Background tasks start right after their turn commits, before the actor's next turn, so
    // registering here (before the first await) lets a later delete or resume find this one.
    if (inflight.has(key)) return
    const ac = new AbortController()
    inflight.set(key, ac)
    const signal = AbortSignal.any([ac.signal, systemSignal])
    const files = datakitFiles(opts.dir, fileId)
    const started = performance.now()
    try {
      const p: DatasetProfile = await opts.engine.profile(files.original, format, { user: ownerId, parquetPath: files.parquet, signal })
      const parquetBytes = (await stat(files.parquet)).size
      log.info({ datakit: id, version, rows: p.rowCount, columns: p.columns.length, ms: Math.round(performance.now() - started) }, 'dataset profiled')
      self.tell({ type: 'profiled', version, fileId, parquetBytes, profile: p }, { messageId: `${id}:${version}:profiled` })
    } catch (err) {
      // Deleted, or the node is stopping (the version stays PROCESSING and is resumed at boot).
      if (signal.aborted) return
      const exposed = err instanceof AppError && err.expose
      if (!exposed) log.error({ err, datakit: id, version }, 'profiling failed')
      else if (err instanceof LimitError) log.warn({ datakit: id, version, ownerId, code: err.code }, 'profiling stopped at a limit')
      const reason = exposed ? err.message : 'The dataset could not be profiled because of a server error. Try uploading it again; if it keeps failing, tell an administrator.'
      const line = err instanceof DatasetParseError && err.line !== undefined ? err.line : null
      self.tell({ type: 'profileFailed', version, fileId, reason, line }, { messageId: `${id}:${version}:failed` })
    } finally {
      inflight.delete(key)
    }
  }

  /** Stop profiling of `id` in this process (it is being deleted). */
  function abortProfiles(id: string): void {
    for (const [key, ac] of inflight) if (key.startsWith(`${id}:`)) ac.abort()
  }

  async function removeFiles(fileIds: string[]): Promise<void> {
    for (const fileId of fileIds) {
      const f = datakitFiles(opts.dir, fileId)
      await Promise.all([rm(f.original, { force: true }), rm(f.parquet, { force: true })])
    }
  }

  return defineActor({
    kind: DATAKIT_KIND,
    messages: DatakitMessage,
    async load(sql: Db, id: string): Promise<DatakitState> {
      return (await store.findDatakit(sql, id)) ?? null
    },
    persist: (tx: Db, id: string, state: DatakitState) => (state ? store.saveDatakit(tx, state) : store.deleteDatakit(tx, id)),
    async handle(ctx, state, msg) {
      switch (msg.type) {
        case 'create': {
          if (state) throw new ConflictError('A datakit with this id already exists')
          const now = new Date()
          const d: store.DatakitRow = {
            id: ctx.id,
            ownerId: msg.ownerId,
            orgId: msg.orgId ?? null,
            name: msg.name,
            description: msg.description,
            status: 'PROCESSING',
            currentVersion: 1,
            createdAt: now,
            updatedAt: now,
          }
          await addVersion(ctx, d, 1, msg.file)
          return { state: d, reply: { id: d.id, version: 1 } }
        }
        case 'addVersion': {
          const d = existing(state)
          const version = d.currentVersion + 1
          const next: store.DatakitRow = {
            ...d,
            name: msg.name ?? d.name,
            description: msg.description !== undefined ? msg.description : d.description,
            status: 'PROCESSING',
            currentVersion: version,
            updatedAt: new Date(),
          }
          await addVersion(ctx, next, version, msg.file)
          if (next.name !== d.name || next.description !== d.description) emit(ctx, next, 'updated', { name: next.name, description: next.description })
          return { state: next, reply: { id: d.id, version } }
        }
        case 'update': {
          const d = existing(state)
          const next = {
            ...d,
            name: msg.name ?? d.name,
            description: msg.description !== undefined ? msg.description : d.description,
            updatedAt: new Date(),
          }
          emit(ctx, next, 'updated', { name: next.name, description: next.description })
          return { state: next, reply: { id: d.id } }
        }
        case 'delete': {
          const d = existing(state)
          const fileIds = await store.versionFiles(ctx.tx, d.id)
          // After commit: a turn that rolls back must not have stopped or removed anything. A
          // profile that finishes in between reports to a datakit that is gone and cleans up.
          ctx.background(async () => {
            abortProfiles(d.id)
            await removeFiles(fileIds)
          })
          emit(ctx, d, 'deleted', {})
          return { state: null, reply: { id: d.id } }
        }
        case 'move': {
          const d = existing(state)
          if (d.orgId === msg.orgId) return { reply: { id: d.id, orgId: d.orgId } }
          const next = { ...d, orgId: msg.orgId, updatedAt: new Date() }
          // Its bytes now count against the account it moves to, which must have room for them.
          await store.reserveStorage(ctx.tx, store.storageAccount(next), await store.datakitBytes(ctx.tx, d.id), quotas)
          emit(ctx, next, 'moved', { orgId: next.orgId })
          return { state: next, reply: { id: d.id, orgId: next.orgId } }
        }
        case 'resume': {
          if (!state) return
          for (const v of await store.processingVersions(ctx.tx, state.id)) {
            profileLater(ctx, state, v.version, v.fileId, v.format as DatasetFormat)
          }
          return
        }
        case 'profiled': {
          const p = msg.profile as DatasetProfile
          const applied =
            state !== null &&
            (await store.markReady(ctx.tx, state.id, msg.version, { rowCount: p.rowCount, columnCount: p.columns.length, parquetBytes: msg.parquetBytes, profile: p }))
          if (!applied) {
            // The datakit (or this version) was deleted while it was being profiled.
            if (!state || !(await store.versionExists(ctx.tx, state.id, msg.version))) ctx.background(() => removeFiles([msg.fileId]))
            return
          }
          const next = msg.version === state.currentVersion ? { ...state, status: 'READY' as const, updatedAt: new Date() } : state
          emit(ctx, state, 'status', { version: msg.version, status: 'READY', error: null, errorLine: null, rowCount: p.rowCount, columnCount: p.columns.length })
          return next === state ? undefined : { state: next }
        }
        case 'profileFailed': {
          const applied = state !== null && (await store.markFailed(ctx.tx, state.id, msg.version, msg.reason, msg.line))
          if (!applied) {
            if (!state || !(await store.versionExists(ctx.tx, state.id, msg.version))) ctx.background(() => removeFiles([msg.fileId]))
            return
          }
          const next = msg.version === state.currentVersion ? { ...state, status: 'FAILED' as const, updatedAt: new Date() } : state
          emit(ctx, state, 'status', { version: msg.version, status: 'FAILED', error: msg.reason, errorLine: msg.line })
          return next === state ? undefined : { state: next }
        }
        default: {
          const unhandled: never = msg
          throw new Error(`unhandled datakit message ${JSON.stringify(unhandled)}`)
        }
      }
    },
  })
}
