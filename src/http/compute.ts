/**
 * The routes workstations and VMs share: create, list, get, patch, delete, start, stop,
 * restart, logs, stats. Reads are SQL (and the engine for logs and stats); changes are asks
 * to the entity's actor, which replies with the entity's row. Start, stop and restart answer
 * 202 with the transitional status (STARTING, STOPPING): the outcome arrives as `status`
 * events on `<kind>:<id>` and `user:<id>`.
 */
import type { TObject } from '@sinclair/typebox'
import { Elysia, t, type TSchema } from 'elysia'
import { ForbiddenError, NotFoundError } from '../core/errors.ts'
import type { ComputeKind, ComputeMessage } from '../actors/compute/messages.ts'
import type { Replied } from '../actors/runtime/index.ts'
import type { Principal } from '../auth/principal.ts'
import { access } from '../auth/route-access.ts'
import { engineUnavailable, type ContainerEngine } from '../engines/containers/engine.ts'
import type { ComputeCore, ListOptions } from '../store/compute.ts'
import type { Db } from '../store/db.ts'
import type { Page } from '../store/pagination.ts'
import { authorize, Envelope, errors, ok, requireAction, requireOrgRole, type HttpDeps } from './context.ts'
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

/** What the documentation of the shared routes says differently for each kind (Markdown). */
interface ComputeDocs {
  /** The variable listing the images it may run ("WORKSTATION_IMAGES"). */
  images: string
  /** What the create body calls its resources ("resources", "size"). */
  resources: string
  /** Said of a create besides what every kind shares. */
  create?: string
  /** What a PATCH may change, and when. */
  patch: string
  /** Whether a PATCH can be refused for the entity's state (409). */
  patchConflicts: boolean
  /** Said of its owner's reads (idle culling), where it applies. */
  activity?: string
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
  docs: ComputeDocs
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
  // Every kind's entity and create body, with the organisation it counts against.
  const orgIdField = t.Union([t.String({ format: 'uuid' }), t.Null()], {
    description: "The organisation whose compute quota it counts against as well as its owner's (null: personal only). It stays personal: only its owner uses it.",
  })
  const entityOptions = pickOptions(o.entity)
  if (Array.isArray(entityOptions.examples)) entityOptions.examples = entityOptions.examples.map((e: object) => ({ ...e, orgId: null }))
  const entity = t.Composite([o.entity as TObject, t.Object({ orgId: orgIdField })], entityOptions)
  const createBody = t.Composite(
    [o.create as TObject, t.Object({ orgId: t.Optional(t.String({ format: 'uuid', error: 'Invalid organisation id', description: "Start it for this organisation's work (you must be a MEMBER or above)" })) })],
    { ...pickOptions(o.create), additionalProperties: false },
  )
  const view = (row: Replied<R>) => ({ ...(o.view(row) as object), orgId: row.orgId ?? null })
  const one = Envelope.data(entity)
  const idParams = t.Object({ id: t.String({ format: 'uuid', error: `Invalid ${o.label} id` }) })
  const name = o.label === 'VM' ? 'VM' : o.label.toLowerCase()
  const tags = [o.tag]

  // The documentation: what each route does, its events, limits and errors, for this kind.
  const d = o.docs
  const topics = `\`${o.kind}:<id>\` and \`user:<ownerId>\``
  const noEngine = '503 when no container engine is available.'
  const capacity = `checked against what the container engine has (cores, memory, an NVIDIA runtime for \`gpu\`): asking for more is a 422 with one detail per limit (\`resources.cpu\`, \`resources.memory\`, \`resources.gpu\`)`
  const quota =
    `claims the compute quota under a per-user lock: past \`QUOTA_MAX_RUNNING\`, \`QUOTA_MAX_CPU\` or \`QUOTA_MAX_MEMORY_MB\` (or the user's override) it is a 409 \`quota_exceeded\` whose details say what is used, requested and allowed (\`quota.running\`, \`quota.cpu\`, \`quota.memoryMb\`); ` +
    `one started for an organisation's work also claims the organisation's quota (\`GET /api/orgs/:id/quotas\`), past which it is a 409 \`org_quota_exceeded\` (\`orgQuota.running\`, \`orgQuota.cpu\`, \`orgQuota.memoryMb\`)`
  const activity = d.activity ? ` ${d.activity}` : ''

  return new Elysia({ prefix: o.prefix })
    .post(
      '/',
      async ({ request, body, set }) => {
        const me = await requireAction(deps, request, o.kind, 'change')
        const { orgId, ...fields } = body as { orgId?: string }
        if (orgId) await requireOrgRole(deps, me, orgId, 'MEMBER')
        engine()
        const created = await ask(crypto.randomUUID(), { type: 'create', ownerId: me.userId, orgId: orgId ?? null, fields })
        set.status = 201
        return ok(view(created))
      },
      {
        body: createBody,
        response: { 201: one, ...errors(400, 403, 404, 422, 503) },
        detail: {
          summary: `Create a ${name}`,
          description:
            `Creates a ${name} and answers 201 with it in status CREATING. Its actor then creates the container (with a home volume) on the container engine: ` +
            `STOPPED follows, or ERROR with a reason (e.g. the image is missing on the engine), as a \`status\` event on ${topics}; start it with \`POST ${o.prefix}/:id/start\`.\n\n` +
            `\`image\` must be one of \`${d.images}\` (default: the first); another is a 422. \`${d.resources}\` is ${capacity}, and nothing is recorded.${d.create ? ` ${d.create}` : ''} ` +
            `The compute quota applies when it starts, not here. With \`orgId\` it is started for that organisation's work (you must be a MEMBER or above there: 404 for an org ` +
            `you are not in, 403 for a VIEWER): it stays yours alone, but while it runs it counts against the organisation's compute quota as well as yours. ${noEngine}`,
          tags,
          ...access.collection(o.kind, 'change'),
        },
      },
    )
    .get(
      '/',
      async ({ request, query }) => {
        const me = await requireAction(deps, request, o.kind, 'read')
        if (query.ownerId && query.ownerId !== me.userId && me.role !== 'ADMIN') throw new ForbiddenError(`Only an admin can list other users' ${name}s`)
        const limit = query.limit ?? 20
        const page = await o.list(sql, { ownerId: query.ownerId ?? me.userId, status: query.status, limit, cursor: query.cursor })
        return ok(page.items.map((r) => view(r as Replied<R>)), { nextCursor: page.nextCursor, limit })
      },
      {
        query: t.Object({
          ...Envelope.pageQuery,
          status: t.Optional(computeStatus),
          ownerId: t.Optional(t.String({ format: 'uuid', error: 'Invalid owner id', description: "Admins: another user's (default: your own)" })),
        }),
        response: { 200: Envelope.list(entity), ...errors(400, 403) },
        detail: {
          summary: `List your ${name}s`,
          description:
            `Your ${name}s, oldest first, a page at a time (\`limit\`, and \`cursor\` from the previous page's \`meta.nextCursor\`), optionally only those in one \`status\`. ` +
            `Read from the database: it answers without a container engine. Admins list another user's with \`ownerId\`; anyone else naming another user is refused with 403.`,
          tags,
          ...access.collection(o.kind, 'read'),
        },
      },
    )
    .get(
      '/:id',
      async ({ request, params }) => {
        const { me, row } = await visibleEntity(deps, o, request, params.id)
        if (row.ownerId === me.userId) o.touch(row.id)
        return ok(view(row))
      },
      {
        params: idParams,
        response: { 200: one, ...errors(400, 404) },
        detail: {
          summary: `Get a ${name}`,
          description:
            `The ${name}: its status, \`statusReason\` (why it is in ERROR, or stopped on its own), resources, image, container and times. ` +
            `Read from the database: it answers without a container engine.${activity} Follow its changes live on the topic \`${o.kind}:<id>\` (WebSocket \`/ws\`).`,
          tags,
          ...access.object(o.kind, 'read'),
        },
      },
    )
    .patch(
      '/:id',
      async ({ request, params, body }) => {
        await changeableEntity(deps, o, request, params.id)
        return ok(view(await ask(params.id, { type: 'update', patch: body })))
      },
      {
        params: idParams,
        body: o.patch,
        response: { 200: one, ...(d.patchConflicts ? errors(400, 403, 404, 409, 422, 503) : errors(400, 403, 404, 422, 503)) },
        detail: {
          summary: `Change a ${name}`,
          description:
            `${d.patch} Answers the ${name} as changed, and an \`updated\` event \`{kind, id, name, changes, at}\` goes to ${topics}. ` +
            `Any change is a 422 while the image (the new one, or its own) is not on \`${d.images}\`. ${noEngine}`,
          tags,
          ...access.object(o.kind, 'change'),
        },
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
        response: { 200: Envelope.data(ComputeApiModel.deleted), ...errors(400, 403, 404, 503) },
        detail: {
          summary: `Delete a ${name} with its container and home volume`,
          description:
            `Deletes the ${name} in any status: its container (killed if running) and its home volume are removed — the files in it are gone — and then its record. ` +
            `A \`deleted\` event \`{kind, id, name, at}\` goes to ${topics}. 503 when no container engine is available (nothing is deleted).`,
          tags,
          ...access.object(o.kind, 'change'),
        },
      },
    )
    .post(
      '/:id/start',
      async ({ request, params, set }) => {
        await changeableEntity(deps, o, request, params.id)
        const row = await ask(params.id, { type: 'start' })
        set.status = row.status === 'RUNNING' ? 200 : 202
        return ok(view(row))
      },
      {
        params: idParams,
        response: { 200: one, 202: one, ...errors(400, 403, 404, 409, 422, 503) },
        detail: {
          summary: `Start a ${name}`,
          description:
            `Starts a STOPPED (or CREATING, or ERROR) ${name}. Its resources are checked again against what the container engine has, which may have changed since it was created: ` +
            `more than it has is a 422 naming each limit (\`resources.cpu\`, \`resources.memory\`, \`resources.gpu\`). Then it ${quota}. ` +
            `Answers 202 with status STARTING; RUNNING, or ERROR with a reason, follows as a \`status\` event on ${topics}. ` +
            `Already RUNNING: 200, unchanged (STARTING: 202, unchanged). 409 while it is STOPPING. ${noEngine}`,
          tags,
          ...access.object(o.kind, 'change'),
        },
      },
    )
    .post(
      '/:id/stop',
      async ({ request, params, set }) => {
        await changeableEntity(deps, o, request, params.id)
        const row = await ask(params.id, { type: 'stop' })
        set.status = row.status === 'STOPPING' ? 202 : 200
        return ok(view(row))
      },
      {
        params: idParams,
        response: { 200: one, 202: one, ...errors(400, 403, 404, 503) },
        detail: {
          summary: `Stop a ${name}`,
          description:
            `Stops a RUNNING, STARTING or ERROR ${name}: 202 with status STOPPING; STOPPED (or ERROR, if the engine fails) follows as a \`status\` event on ${topics}, and its compute quota is released. ` +
            `Already STOPPED or CREATING: 200, unchanged. Stopping during a restart${o.kind === 'vm' ? ' or resize' : ''} cancels the start that was to follow. ` +
            `Its home volume is kept. ${noEngine}`,
          tags,
          ...access.object(o.kind, 'change'),
        },
      },
    )
    .post(
      '/:id/restart',
      async ({ request, params, set }) => {
        await changeableEntity(deps, o, request, params.id)
        const row = await ask(params.id, { type: 'restart' })
        set.status = 202
        return ok(view(row))
      },
      {
        params: idParams,
        response: { 202: one, ...errors(400, 403, 404, 409, 422, 503) },
        detail: {
          summary: `Restart a ${name}`,
          description:
            `A RUNNING ${name} is stopped and started again, keeping its quota: 202 with status STOPPING, then \`status\` events STOPPED, STARTING and RUNNING on ${topics}. ` +
            `A STOPPED, CREATING or ERROR one is started as by \`POST ${o.prefix}/:id/start\` (capacity 422, quota 409) and answers 202 STARTING; ` +
            `one that is STOPPING starts again once stopped, and one that is STARTING is left as it is (202). ${noEngine}`,
          tags,
          ...access.object(o.kind, 'change'),
        },
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
        response: { 200: Envelope.data(ComputeApiModel.logs), ...errors(400, 404, 503) },
        detail: {
          summary: `Read a ${name}'s recent output`,
          description:
            `The last \`tail\` lines (default 100, at most 10000) the container wrote to stdout and stderr, within the newest \`CONTAINER_LOG_TAIL_MAX_BYTES\` of its output: ` +
            `\`droppedBytes\` counts the older output left out, and a line longer than \`CONTAINER_LOG_LINE_MAX_BYTES\` comes in pieces marked \`partial\`. ` +
            `No lines before its container exists. To follow the output live, open the WebSocket \`${o.wsPrefix}/:id/logs\`.${activity} ${noEngine}`,
          tags,
          ...access.object(o.kind, 'read'),
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
        response: { 200: Envelope.data(ComputeApiModel.stats), ...errors(400, 404, 503) },
        detail: {
          summary: `Read a ${name}'s live resource use`,
          description:
            `A sample from the container engine: CPU use in percent of one core (\`cpuPercent\`, 200 = two cores busy) against the \`cpuLimit\` cores it may use, ` +
            `memory used and its limit in bytes, and the number of processes. Without a running container: \`running: false\` and zeros (the memory limit from its resources).${activity} ${noEngine}`,
          tags,
          ...access.object(o.kind, 'read'),
        },
      },
    )
}

/** The documentation options of a schema (title, description, examples) for a schema built around it. */
function pickOptions(schema: TSchema): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const k of ['title', 'description', 'examples', 'error'] as const) if (schema[k] !== undefined) out[k] = schema[k]
  return out
}
