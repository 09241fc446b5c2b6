/**
 * /api/workstations (the guide's Workstation Management), the compute quota routes, and the
 * `workstations` feature: the actor kind, routes, topics, terminals, reconciliation.
 *
 * Reads are SQL; every change goes to the workstation's actor, which makes the engine calls in
 * its turns. Start, stop and restart answer 202 with the transitional status (STARTING,
 * STOPPING): the outcome arrives as `status` events on `workstation:<id>` and `user:<id>`.
 */
import { existsSync } from 'node:fs'
import { Elysia, t, type TSchema } from 'elysia'
import { ForbiddenError, NotFoundError, ServiceUnavailableError } from '../core/errors.ts'
import type { ContainerEngine, ContainerStats } from '../engines/containers/engine.ts'
import { DockerEngine } from '../engines/containers/docker.ts'
import { ENGINE_UNAVAILABLE } from '../engines/containers/engine.ts'
import { quotaReport, reconcileAtBoot, watchEngine, type ComputeKind, type ComputeSettings } from '../actors/container-lifecycle.ts'
import { WorkstationModel, workstationActor, workstationView } from '../actors/workstation.ts'
import type { ActorSystem } from '../actors/runtime/index.ts'
import type { Feature } from '../features.ts'
import * as quotas from '../store/quotas.ts'
import * as users from '../store/users.ts'
import * as store from '../store/workstations.ts'
import type { ComputeCore } from '../store/workstations.ts'
import type { Db } from '../store/db.ts'
import type { Page } from '../store/pagination.ts'
import type { Principal } from '../auth/sessions.ts'
import { bearer, Envelope, errors, ok, requireRole, requireUser, type AppDeps } from './context.ts'
import { containerSocketRoutes, TerminalSessions } from '../ws/terminal.ts'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

const engines = new WeakMap<AppDeps, ContainerEngine | null>()

/**
 * The server's container engine (one per server, shared by workstations and VMs): DOCKER_HOST,
 * or the local socket when it exists; undefined when there is none (engine-backed endpoints
 * then answer 503 "container engine unavailable").
 */
export function containerEngineFor(deps: AppDeps): ContainerEngine | undefined {
  const known = engines.get(deps)
  if (known !== undefined) return known ?? undefined
  const host = deps.config.dockerHost ?? (existsSync('/var/run/docker.sock') ? 'unix:///var/run/docker.sock' : undefined)
  const images = [...new Set([...deps.config.workstations.images, ...deps.config.vms.images])]
  const engine = host ? new DockerEngine({ host, images }) : undefined
  engines.set(deps, engine ?? null)
  return engine
}

/** /health's `docker` entry when there is no engine at all (with one, the server's own probe pings it). */
export function missingEngineProbes(_engine: ContainerEngine | undefined): Feature['probes'] {
  // The server's own `docker` probe already reports the engine: "disabled" when none is
  // configured (no DOCKER_HOST, no /var/run/docker.sock — issue 2's definition, so a laptop
  // without Docker is healthy), "unhealthy" when a configured engine does not answer.
  return []
}

/**
 * Activity seen at the edge (API calls, terminal input), told to the actor at most a few times
 * per idle period: enough to keep a used entity from being culled, cheap under typing.
 */
export function activityTracker(actors: ActorSystem, kind: ComputeKind, idleTimeoutMs: number): (id: string) => void {
  if (idleTimeoutMs <= 0) return () => {}
  const every = Math.max(200, Math.min(30_000, Math.floor(idleTimeoutMs / 4)))
  const last = new Map<string, number>()
  return (id) => {
    const now = Date.now()
    if (now - (last.get(id) ?? 0) < every) return
    last.set(id, now)
    if (last.size > 10_000) for (const [k, v] of last) if (now - v > every) last.delete(k)
    actors.tell(kind, id, { type: 'touch' })
  }
}

export namespace ComputeApiModel {
  export const quota = t.Object({ running: t.Integer(), cpu: t.Number(), memoryMb: t.Integer() })
  export const quotaReport = t.Object({ used: quota, allowed: quota, source: t.Union([t.Literal('default'), t.Literal('override')]) })
  export const quotaOverride = t.Object(
    {
      running: t.Optional(t.Union([t.Integer({ minimum: 0, maximum: 10_000 }), t.Null()])),
      cpu: t.Optional(t.Union([t.Number({ minimum: 0, maximum: 100_000 }), t.Null()])),
      memoryMb: t.Optional(t.Union([t.Integer({ minimum: 0, maximum: 1024 * 1024 * 1024 }), t.Null()])),
    },
    { additionalProperties: false, minProperties: 1, error: 'Provide at least one of running, cpu, memoryMb (null = back to the default)' },
  )
  export const stats = t.Object({
    running: t.Boolean(),
    cpuPercent: t.Number(),
    cpuLimit: t.Number(),
    memoryUsedBytes: t.Number(),
    memoryLimitBytes: t.Number(),
    memoryPercent: t.Number(),
    pids: t.Integer(),
    at: t.String(),
  })
  export const logs = t.Object({ lines: t.Array(t.Object({ stream: t.Union([t.Literal('stdout'), t.Literal('stderr')]), line: t.String(), at: t.Union([t.String(), t.Null()]) })) })
  export const deleted = t.Object({ id: t.String(), deleted: t.Literal(true) })
  export const logsQuery = t.Object({ tail: t.Optional(t.Integer({ minimum: 0, maximum: 10_000, default: 100 })) })
}

export function statsView(s: ContainerStats) {
  return { ...s, at: s.at.toISOString() }
}

/** Lines of a container's log; none when it has no container yet. */
export async function readLogs(engine: ContainerEngine, kind: ComputeKind, id: string, tail: number) {
  try {
    const lines = await engine.logs({ kind, entityId: id }, { tail })
    return lines.map((l) => ({ stream: l.stream, line: l.line, at: l.at ? l.at.toISOString() : null }))
  } catch (err) {
    if (err instanceof NotFoundError) return []
    throw err
  }
}

/** Live stats; a container that does not exist is simply not running. */
export async function readStats(engine: ContainerEngine, kind: ComputeKind, id: string, memoryMb: number) {
  try {
    return statsView(await engine.stats({ kind, entityId: id }))
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err
    return { running: false, cpuPercent: 0, cpuLimit: 0, memoryUsedBytes: 0, memoryLimitBytes: memoryMb * 1024 * 1024, memoryPercent: 0, pids: 0, at: new Date().toISOString() }
  }
}

export const statusQuery = t.Union([t.Literal('CREATING'), t.Literal('STOPPED'), t.Literal('STARTING'), t.Literal('RUNNING'), t.Literal('STOPPING'), t.Literal('ERROR')])
const tag = ['Workstations']

/** The quota routes: the caller's (or, for an admin, anyone's) usage, and admins' overrides. */
export function quotaRoutes(deps: AppDeps) {
  const report = (userId: string) => quotaReport(deps.sql, userId, deps.config.quota)
  return new Elysia()
    .get(
      '/api/workstations/quota',
      async ({ request, query }) => {
        const me = await requireUser(deps, request)
        const userId = query.userId ?? me.userId
        if (userId !== me.userId && me.role !== 'ADMIN') throw new NotFoundError('User')
        return ok(await report(userId))
      },
      {
        query: t.Object({ userId: t.Optional(t.String({ format: 'uuid', error: 'Invalid user id' })) }),
        response: { 200: Envelope.data(ComputeApiModel.quotaReport), ...errors(400, 401, 404) },
        detail: {
          summary: 'Compute quota: what running workstations and VMs use, and what is allowed (admins: ?userId=)',
          tags: tag,
          security: bearer,
        },
      },
    )
    .get(
      '/api/admin/quotas/:userId',
      async ({ request, params }) => {
        await requireRole(deps, request, 'ADMIN')
        if (!(await users.findById(deps.sql, params.userId))) throw new NotFoundError('User')
        return ok(await report(params.userId))
      },
      {
        params: t.Object({ userId: t.String({ format: 'uuid', error: 'Invalid user id' }) }),
        response: { 200: Envelope.data(ComputeApiModel.quotaReport), ...errors(400, 401, 403, 404) },
        detail: { summary: "A user's compute quota and usage (admin)", tags: ['System'], security: bearer },
      },
    )
    .put(
      '/api/admin/quotas/:userId',
      async ({ request, params, body }) => {
        const me = await requireRole(deps, request, 'ADMIN')
        if (!(await users.findById(deps.sql, params.userId))) throw new NotFoundError('User')
        const current = await quotas.getOverride(deps.sql, params.userId)
        const pick = <K extends 'running' | 'cpu' | 'memoryMb'>(k: K) => (body[k] !== undefined ? body[k]! : (current?.[k] ?? null))
        await quotas.setOverride(deps.sql, params.userId, { running: pick('running'), cpu: pick('cpu'), memoryMb: pick('memoryMb') }, me.userId)
        return ok(await report(params.userId))
      },
      {
        params: t.Object({ userId: t.String({ format: 'uuid', error: 'Invalid user id' }) }),
        body: ComputeApiModel.quotaOverride,
        response: { 200: Envelope.data(ComputeApiModel.quotaReport), ...errors(400, 401, 403, 404) },
        detail: { summary: "Override a user's compute quota (admin; null = back to the default)", tags: ['System'], security: bearer },
      },
    )
    .delete(
      '/api/admin/quotas/:userId',
      async ({ request, params }) => {
        await requireRole(deps, request, 'ADMIN')
        if (!(await users.findById(deps.sql, params.userId))) throw new NotFoundError('User')
        await quotas.removeOverride(deps.sql, params.userId)
        return ok(await report(params.userId))
      },
      {
        params: t.Object({ userId: t.String({ format: 'uuid', error: 'Invalid user id' }) }),
        response: { 200: Envelope.data(ComputeApiModel.quotaReport), ...errors(400, 401, 403, 404) },
        detail: { summary: "Remove a user's quota override (admin)", tags: ['System'], security: bearer },
      },
    )
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
  view(row: R): unknown
  findById(sql: Db, id: string): Promise<R | undefined>
  list(sql: Db, opts: store.ListOptions): Promise<Page<R>>
  engine: ContainerEngine | undefined
  /** An API call on the entity by its owner: activity. */
  touch: (id: string) => void
}

/** Who may see an entity: its owner or an admin; a stranger gets a 404 (not even its existence). */
export async function visibleEntity<R extends ComputeCore>(deps: AppDeps, o: Pick<ComputeRouteOptions<R>, 'findById' | 'label'>, me: Principal, id: string): Promise<R> {
  const row = await o.findById(deps.sql, id)
  if (!row || (row.ownerId !== me.userId && me.role !== 'ADMIN')) throw new NotFoundError(o.label)
  return row
}

/**
 * A change to an entity: VIEWERs are read-only (403), strangers get 404, and without an engine
 * it is a 503. Returns the entity as it was.
 */
export async function changeableEntity<R extends ComputeCore>(deps: AppDeps, o: ComputeRouteOptions<R>, request: Request, id: string): Promise<R> {
  const me = await requireRole(deps, request, 'ADMIN', 'USER')
  const row = await visibleEntity(deps, o, me, id)
  if (!o.engine) throw new ServiceUnavailableError(ENGINE_UNAVAILABLE)
  o.touch(id)
  return row
}

/**
 * The routes workstations and VMs share: create, list, get, patch, delete, start, stop,
 * restart, logs, stats. Reads are SQL (and the engine for logs and stats); changes are asks
 * to the entity's actor.
 */
export function computeRoutes<R extends ComputeCore>(deps: AppDeps, o: ComputeRouteOptions<R>) {
  const { actors, sql } = deps
  const ask = (id: string, message: unknown) => actors.ask(o.kind, id, message) as Promise<{ status: store.ComputeStatus }>
  const engine = () => {
    if (!o.engine) throw new ServiceUnavailableError(ENGINE_UNAVAILABLE)
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
        const me = await requireRole(deps, request, 'ADMIN', 'USER')
        engine()
        const created = await actors.ask(o.kind, crypto.randomUUID(), { type: 'create', ownerId: me.userId, fields: body })
        set.status = 201
        return ok(created)
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
        const me = await requireUser(deps, request)
        if (query.ownerId && query.ownerId !== me.userId && me.role !== 'ADMIN') throw new ForbiddenError(`Only an admin can list other users' ${name}s`)
        const limit = query.limit ?? 20
        const page = await o.list(sql, { ownerId: query.ownerId ?? me.userId, status: query.status, limit, cursor: query.cursor })
        return ok(page.items.map((r) => o.view(r)), { nextCursor: page.nextCursor, limit })
      },
      {
        query: t.Object({ ...Envelope.pageQuery, status: t.Optional(statusQuery), ownerId: t.Optional(t.String({ format: 'uuid', error: 'Invalid owner id' })) }),
        response: { 200: Envelope.list(o.entity), ...errors(400, 401, 403) },
        detail: { summary: `Your ${name}s (status filter, cursor pagination; admins: ?ownerId=)`, tags, security: bearer },
      },
    )
    .get(
      '/:id',
      async ({ request, params }) => {
        const me = await requireUser(deps, request)
        const row = await visibleEntity(deps, o, me, params.id)
        if (row.ownerId === me.userId) o.touch(row.id)
        return ok(o.view(row))
      },
      { params: idParams, response: { 200: one, ...errors(400, 401, 404) }, detail: { summary: `A ${name}`, tags, security: bearer } },
    )
    .patch(
      '/:id',
      async ({ request, params, body }) => {
        await changeableEntity(deps, o, request, params.id)
        return ok(await ask(params.id, { type: 'update', patch: body }))
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
        return ok((await actors.ask(o.kind, params.id, { type: 'delete' })) as { id: string; deleted: true })
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
        return ok(row)
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
        return ok(row)
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
        return ok(row)
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
        const me = await requireUser(deps, request)
        const row = await visibleEntity(deps, o, me, params.id)
        if (row.ownerId === me.userId) o.touch(row.id)
        return ok({ lines: await readLogs(engine(), o.kind, row.id, query.tail ?? 100) })
      },
      {
        params: idParams,
        query: ComputeApiModel.logsQuery,
        response: { 200: Envelope.data(ComputeApiModel.logs), ...errors(400, 401, 404, 503) },
        detail: { summary: `The last \`tail\` lines of the container's output (follow them over WS ${o.wsPrefix}/:id/logs)`, tags, security: bearer },
      },
    )
    .get(
      '/:id/stats',
      async ({ request, params }) => {
        const me = await requireUser(deps, request)
        const row = await visibleEntity(deps, o, me, params.id)
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

export function workstationRoutes(deps: AppDeps, ctx: { engine: ContainerEngine | undefined; touch: (id: string) => void }) {
  return computeRoutes<store.WorkstationRow>(deps, {
    kind: 'workstation',
    label: 'Workstation',
    prefix: '/api/workstations',
    wsPrefix: '/ws/workstations',
    tag: 'Workstations',
    create: WorkstationModel.create,
    patch: WorkstationModel.patch,
    entity: WorkstationModel.workstation,
    view: workstationView,
    findById: store.findById,
    list: store.list,
    ...ctx,
  })
}

/** The workstations feature (one line in src/features.ts). */
export function workstationsFeature(deps: AppDeps): Feature {
  const engine = containerEngineFor(deps)
  const c = deps.config
  const settings: ComputeSettings = {
    engine,
    images: c.workstations.images,
    idleTimeoutMs: c.workstations.idleTimeoutSeconds * 1000,
    idleCpuPercent: c.workstations.idleCpuPercent,
    quota: c.quota,
  }
  const touch = activityTracker(deps.actors, 'workstation', settings.idleTimeoutMs)
  const sessions = engine ? new TerminalSessions({ engine, graceMs: c.terminal.reattachGraceMs, logger: deps.logger, onActivity: (target) => touch(target.id) }) : undefined
  const stopping = new AbortController()
  const existing = (ids: string[]) => store.existing(deps.sql, ids)
  return {
    name: 'workstations',
    actors: [workstationActor(settings)],
    routes: [
      workstationRoutes(deps, { engine, touch }),
      quotaRoutes(deps),
      containerSocketRoutes(deps, {
        kind: 'workstation',
        prefix: '/ws/workstations',
        label: 'Workstation',
        engine,
        sessions,
        onActivity: (target) => touch(target.id),
        find: async (id) => {
          const w = await store.findById(deps.sql, id)
          return w && { ownerId: w.ownerId, status: w.status }
        },
      }),
    ],
    topics: { workstation: async (p, id) => UUID.test(id) && (await store.ownerOf(deps.sql, id)) === p.userId },
    probes: missingEngineProbes(engine),
    async start() {
      if (!engine) return
      void watchEngine({ kind: 'workstation', engine, actors: deps.actors, existing, logger: deps.logger, signal: stopping.signal })
      // In the background: an engine that is slow to answer must not hold up the node's boot.
      void reconcileAtBoot({ kind: 'workstation', sql: deps.sql, engine, actors: deps.actors, activeIds: store.activeIds, existing }).then(
        (n) => n > 0 && deps.logger.info({ workstations: n }, 'reconciling workstations with the container engine'),
        // The engine is away at boot: each actor reconciles at its first turn instead.
        (err) => deps.logger.warn({ err }, 'workstation reconciliation at boot failed'),
      )
    },
    async stop() {
      stopping.abort()
      sessions?.closeAll()
    },
  }
}
