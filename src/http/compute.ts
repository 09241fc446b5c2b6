/**
 * The routes workstations and VMs share: create, list, get, patch, delete, start, stop,
 * restart, logs, stats. Reads are SQL (and the engine for logs and stats); changes are asks
 * to the entity's actor, which replies with the entity's row. Start, stop and restart answer
 * 202 with the transitional status (STARTING, STOPPING): the outcome arrives as `status`
 * events on `<kind>:<id>` and `user:<id>`.
 */
import { Elysia, t, type TSchema } from 'elysia'
import { ForbiddenError, NotFoundError } from '../core/errors.ts'
import type { ComputeKind, ComputeMessage } from '../actors/compute/messages.ts'
import type { Replied } from '../actors/runtime/index.ts'
import type { Principal } from '../auth/principal.ts'
import { engineUnavailable, type ContainerEngine } from '../engines/containers/engine.ts'
import type { ComputeCore, ListOptions } from '../store/compute.ts'
import type { Db } from '../store/db.ts'
import type { Page } from '../store/pagination.ts'
import { authorize, bearer, Envelope, errors, ok, requireAction, type HttpDeps } from './context.ts'
import { ComputeApiModel, computeStatus, statsView } from './views/compute.ts'

/** What the edge sends a compute actor (the kind's own payloads are checked by its schema). */
type ComputeRequest = Extract<ComputeMessage, { type: 'create' | 'update' | 'start' | 'stop' | 'restart' | 'resize' | 'delete' }>

/**
 * Lines of a container's log, the newest within CONTAINER_LOG_TAIL_MAX_BYTES (the engine's tail
 * budget; what it left out is `droppedBytes`); none when it has no container yet.
 */
async function readLogs(engine: ContainerEngine, kind: ComputeKind, id: string, tail: number) {
  try {
    const { lines, droppedBytes } = await engine.logs({ kind, entityId: id }, { tail })
    return { lines: lines.map((l) => ({ stream: l.stream, line: l.line, at: l.at ? l.at.toISOString() : null, ...(l.partial ? { partial: true as const } : {}) })), droppedBytes }
  } catch (err) {
    if (err instanceof NotFoundError) return { lines: [], droppedBytes: 0 }
    throw err
  }
}

/** Live stats; a container that does not exist is simply not running. */
async function readStats(engine: ContainerEngine, kind: ComputeKind, id: string, memoryMb: number) {
  try {
    return statsView(await engine.stats({ kind, entityId: id }))
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err
    return { running: false, cpuPercent: 0, cpuLimit: 0, memoryUsedBytes: 0, memoryLimitBytes: memoryMb * 1024 * 1024, memoryPercent: 0, pids: 0, at: new Date().toISOString() }
  }
}

/** What the shared routes of a compute kind need to know about it. */
export interface ComputeRouteOptions<R extends ComputeCore> {
  kind: ComputeKind
  /** "Workstation", "VM". */
  label: string
  /** "/api/workstations". */
  prefix: string
  /** "/ws/workstations": where the logs are followed. */
  wsPrefix: string
  tag: string
  create: TSchema
  patch: TSchema
  /** The entity as the API shows it. */
  entity: TSchema
  view(row: Replied<R>): unknown
  findById(sql: Db, id: string): Promise<R | undefined>
  list(sql: Db, opts: ListOptions): Promise<Page<R>>
  engine: ContainerEngine | undefined
  /** An API call on the entity by its owner: activity. */
  touch: (id: string) => void
}

/** The entity if the caller may see it (the access policy: its owner or an admin; a stranger gets 404). */
async function visibleEntity<R extends ComputeCore>(deps: HttpDeps, o: Pick<ComputeRouteOptions<R>, 'findById' | 'label' | 'kind'>, request: Request, id: string): Promise<{ me: Principal; row: R }> {
  const { me, obj } = await authorize(deps, request, { resource: o.kind, action: 'read', label: o.label, load: () => o.findById(deps.sql, id) })
  return { me, row: obj }
}

/**
 * A change to an entity, as the access policy allows it: VIEWERs are read-only (403),
 * strangers get 404, and without an engine it is a 503. Returns the entity as it was.
 */
export async function changeableEntity<R extends ComputeCore>(deps: HttpDeps, o: ComputeRouteOptions<R>, request: Request, id: string): Promise<R> {
  const { obj } = await authorize(deps, request, { resource: o.kind, action: 'change', label: o.label, load: () => o.findById(deps.sql, id) })
  if (!o.engine) throw engineUnavailable()
  o.touch(id)
  return obj
}

/**
 * The routes workstations and VMs share: create, list, get, patch, delete, start, stop,
 * restart, logs, stats. Reads are SQL (and the engine for logs and stats); changes are asks
 * to the entity's actor.
 */
export function computeRoutes<R extends ComputeCore>(deps: HttpDeps, o: ComputeRouteOptions<R>) {
  const { actors, sql } = deps
  /** Ask the entity's actor; it replies with the entity's row. */
  const ask = async (id: string, message: ComputeRequest) => (await actors.ask(o.kind, id, message)) as Replied<R>
  const engine = () => {
    if (!o.engine) throw engineUnavailable()
    return o.engine
  }
  const one = Envelope.data(o.entity)
  const idParams = t.Object({ id: t.String({ format: 'uuid', error: `Invalid ${o.label} id` }) })
  const name = o.label === 'VM' ? 'VM' : o.label.toLowerCase()
  const tags = [o.tag]

  return new Elysia({ prefix: o.prefix })
    .post(
      '/',
      async ({ request, body, set }) => {
        const me = await requireAction(deps, request, o.kind, 'change')
        engine()
        const created = await ask(crypto.randomUUID(), { type: 'create', ownerId: me.userId, fields: body })
        set.status = 201
        return ok(o.view(created))
      },
      {
        body: o.create,
        response: { 201: one, ...errors(400, 401, 403, 422, 503) },
        detail: { summary: `Create a ${name} (status CREATING, then STOPPED once its container exists); image from the allow-list`, tags, security: bearer },
      },
    )
    .get(
      '/',
      async ({ request, query }) => {
        const me = await requireAction(deps, request, o.kind, 'read')
        if (query.ownerId && query.ownerId !== me.userId && me.role !== 'ADMIN') throw new ForbiddenError(`Only an admin can list other users' ${name}s`)
        const limit = query.limit ?? 20
        const page = await o.list(sql, { ownerId: query.ownerId ?? me.userId, status: query.status, limit, cursor: query.cursor })
        return ok(page.items.map((r) => o.view(r)), { nextCursor: page.nextCursor, limit })
      },
      {
        query: t.Object({ ...Envelope.pageQuery, status: t.Optional(computeStatus), ownerId: t.Optional(t.String({ format: 'uuid', error: 'Invalid owner id' })) }),
        response: { 200: Envelope.list(o.entity), ...errors(400, 401, 403) },
        detail: { summary: `Your ${name}s (status filter, cursor pagination; admins: ?ownerId=)`, tags, security: bearer },
      },
    )
    .get(
      '/:id',
      async ({ request, params }) => {
        const { me, row } = await visibleEntity(deps, o, request, params.id)
        if (row.ownerId === me.userId) o.touch(row.id)
        return ok(o.view(row))
      },
      { params: idParams, response: { 200: one, ...errors(400, 401, 404) }, detail: { summary: `A ${name}`, tags, security: bearer } },
    )
    .patch(
      '/:id',
      async ({ request, params, body }) => {
        await changeableEntity(deps, o, request, params.id)
        return ok(o.view(await ask(params.id, { type: 'update', patch: body })))
      },
      {
        params: idParams,
        body: o.patch,
        response: { 200: one, ...errors(400, 401, 403, 404, 409, 422, 503) },
        detail: { summary: `Change a ${name}`, tags, security: bearer },
      },
    )
    .delete(
      '/:id',
      async ({ request, params }) => {
        await changeableEntity(deps, o, request, params.id)
        return ok((await actors.ask(o.kind, params.id, { type: 'delete' } satisfies ComputeRequest)) as { id: string; deleted: true })
      },
      {
        params: idParams,
        response: { 200: Envelope.data(ComputeApiModel.deleted), ...errors(400, 401, 403, 404, 503) },
        detail: { summary: `Delete a ${name}, its container and its home volume`, tags, security: bearer },
      },
    )
    .post(
      '/:id/start',
      async ({ request, params, set }) => {
        await changeableEntity(deps, o, request, params.id)
        const row = await ask(params.id, { type: 'start' })
        set.status = row.status === 'RUNNING' ? 200 : 202
        return ok(o.view(row))
      },
      {
        params: idParams,
        response: { 200: one, 202: one, ...errors(400, 401, 403, 404, 409, 422, 503) },
        detail: { summary: 'Start (202 STARTING; RUNNING or ERROR follows as a `status` event); 409 past the quota', tags, security: bearer },
      },
    )
    .post(
      '/:id/stop',
      async ({ request, params, set }) => {
        await changeableEntity(deps, o, request, params.id)
        const row = await ask(params.id, { type: 'stop' })
        set.status = row.status === 'STOPPING' ? 202 : 200
        return ok(o.view(row))
      },
      {
        params: idParams,
        response: { 200: one, 202: one, ...errors(400, 401, 403, 404, 503) },
        detail: { summary: 'Stop (202 STOPPING; STOPPED follows as a `status` event)', tags, security: bearer },
      },
    )
    .post(
      '/:id/restart',
      async ({ request, params, set }) => {
        await changeableEntity(deps, o, request, params.id)
        const row = await ask(params.id, { type: 'restart' })
        set.status = 202
        return ok(o.view(row))
      },
      {
        params: idParams,
        response: { 202: one, ...errors(400, 401, 403, 404, 409, 422, 503) },
        detail: { summary: 'Restart: stop, then start (events STOPPING, STOPPED, STARTING, RUNNING)', tags, security: bearer },
      },
    )
    .get(
      '/:id/logs',
      async ({ request, params, query }) => {
        const { me, row } = await visibleEntity(deps, o, request, params.id)
        if (row.ownerId === me.userId) o.touch(row.id)
        return ok(await readLogs(engine(), o.kind, row.id, query.tail ?? 100))
      },
      {
        params: idParams,
        query: ComputeApiModel.logsQuery,
        response: { 200: Envelope.data(ComputeApiModel.logs), ...errors(400, 401, 404, 503) },
        detail: {
          summary: `The last \`tail\` lines of the container's output, the newest CONTAINER_LOG_TAIL_MAX_BYTES at most (follow them over WS ${o.wsPrefix}/:id/logs)`,
          tags,
          security: bearer,
        },
      },
    )
    .get(
      '/:id/stats',
      async ({ request, params }) => {
        const { me, row } = await visibleEntity(deps, o, request, params.id)
        if (row.ownerId === me.userId) o.touch(row.id)
        return ok(await readStats(engine(), o.kind, row.id, row.resources.memory))
      },
      {
        params: idParams,
        response: { 200: Envelope.data(ComputeApiModel.stats), ...errors(400, 401, 404, 503) },
        detail: { summary: 'Live CPU %, memory used/limit and PIDs from the engine', tags, security: bearer },
      },
    )
}

