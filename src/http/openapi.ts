/**
 * The OpenAPI document (served at /swagger/json): the route table as `@elysiajs/openapi`
 * reads it (paths, parameters, request and response schemas from the routes' TypeBox
 * schemas), finished here with what the table does not say on its own:
 *
 * - request bodies in the one content type the route reads (`application/json`, or the
 *   route's `detail['x-content-type']`), not every type Elysia could parse — those answer 415;
 * - every error response the route can give, each described, with an example envelope:
 *   the ones the route declares (`errors(404, 409)`), and those every route of its kind can
 *   give (401 without a valid token, 413/415 for a body, 429, 500);
 * - who may call it, from the route's access declaration (`x-access`, src/auth/route-access.ts),
 *   as the security requirement and an "Access" paragraph;
 * - examples on the media types, from the schemas' own `examples` (so `redocly lint` checks
 *   each example against its schema);
 * - OpenAPI 3.1 (JSON Schema 2020-12, which TypeBox speaks: `const`, `type: 'null'`,
 *   `patternProperties`), Elysia's `error` message keywords removed, paths without a
 *   trailing slash.
 *
 * `redocly lint` (recommended rules and those in redocly.yaml) passes with 0 errors and
 * 0 warnings (test/http/openapi.test.ts); WebSocket routes are left to the AsyncAPI document.
 */
import { toOpenAPISchema } from '@elysiajs/openapi/openapi'
import { OptionalKind } from '@sinclair/typebox'
import type { AnyElysia } from 'elysia'
import type { RouteAccess } from '../auth/route-access.ts'

export interface OpenApiInfo {
  title: string
  version: string
  /** Markdown: the document's introduction. */
  description: string
}

type Json = Record<string, any>

/** What an error status means, said once for every route that can answer it. */
const STATUS: Record<number, { description: string; error: string; details?: Array<{ field: string; message: string }> }> = {
  400: { description: 'Validation failed: one detail per bad field (unknown fields are refused, never applied)', error: 'Validation failed', details: [{ field: 'name', message: 'Expected string length greater or equal to 3' }] },
  401: { description: 'No token, or a token that is invalid, expired or revoked', error: 'Authentication required' },
  403: { description: "The caller's role may not do this", error: 'A VIEWER is read-only: this needs the USER or ADMIN role' },
  404: { description: 'Not found — also what another user gets for an object that is not theirs', error: 'Not found' },
  409: { description: 'Conflicts with the current state (e.g. a name in use, a state that does not allow it, a quota)', error: 'Conflict' },
  413: { description: 'The body (or an upload) is over its limit; the message names the limit', error: 'Request body too large: the limit is 1048576 bytes' },
  415: { description: 'The body is not in the content type this operation reads', error: 'Content-Type must be application/json' },
  422: { description: 'Well-formed, but cannot be done as asked (the message says why)', error: 'Unprocessable' },
  429: { description: 'Too many requests (`RATE_LIMIT_*`, or this route\'s own budget): see `Retry-After` and `RateLimit-*`', error: 'Too many requests, please try again later' },
  500: { description: 'Unexpected server error: `requestId` finds it in the server log (no internals are returned)', error: 'Internal server error' },
  502: { description: 'The container engine answered with an error (the message says what it was)', error: 'Container engine error' },
  503: { description: 'A service this operation needs (the container engine, the AI provider…) is not available', error: 'Service unavailable' },
  504: { description: 'The object did not answer in time (its actor is busy or its node is unreachable); try again', error: 'Timed out' },
}

const ERROR_SCHEMA = {
  type: 'object',
  description: 'The error envelope every failed request answers with.',
  required: ['success', 'error', 'details'],
  additionalProperties: false,
  properties: {
    success: { const: false, type: 'boolean' },
    error: { type: 'string', description: 'What went wrong, for people' },
    details: {
      type: 'array',
      description: 'One entry per field that was wrong (empty when no field is to blame)',
      items: { type: 'object', required: ['field', 'message'], additionalProperties: false, properties: { field: { type: 'string' }, message: { type: 'string' } } },
    },
    requestId: { type: 'string', description: 'On 500s: the `X-Request-Id` to find the error in the server log' },
  },
}

const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace'] as const

/** The document for `app`'s HTTP routes. Built once per app (routes do not change after start). */
export function openApiDocument(app: AnyElysia, info: OpenApiInfo): Json {
  const all = (app as unknown as { getGlobalRoutes(): Json[] }).getGlobalRoutes().filter((r) => r.method !== 'WS')
  // Bodies declared `t.Optional(…)` may be left out (the generator marks every body required).
  const optionalBody = new Set(all.filter((r) => r.hooks?.body?.[OptionalKind] === 'Optional').map((r) => `${String(r.method).toLowerCase()} ${openApiPath(r.path)}`))
  const routes = all
    // The content type the route reads: Elysia's generator lists every parser it knows for a
    // route without a named parser, and nothing for one with a parser function of its own.
    .map((r) => ({ ...r, hooks: { ...r.hooks, parse: [{ fn: (r.hooks?.detail?.['x-content-type'] as string | undefined) ?? 'application/json' }] } }))
  const shim = { getGlobalRoutes: () => routes, getGlobalDefinitions: () => (app as Json).getGlobalDefinitions?.() } as unknown as AnyElysia
  // A copy: the generator hands back the routes' own schema objects, which validate requests
  // (and whose `error` messages are removed below). JSON drops functions and TypeBox's symbols.
  const generated = JSON.parse(JSON.stringify(toOpenAPISchema(shim, { methods: ['options'] }, undefined, undefined, '3.1.0'))) as Json

  const paths: Json = {}
  for (const [rawPath, item] of Object.entries(generated.paths as Json) as Array<[string, Json]>) {
    const path = openApiPath(rawPath)
    paths[path] = { ...(paths[path] ?? {}), ...item }
    for (const method of METHODS) {
      const op = paths[path][method]
      if (!op) continue
      finishOperation(op)
      if (op.requestBody && optionalBody.has(`${method} ${path}`)) op.requestBody.required = false
    }
  }
  const schemas: Json = { ...(generated.components?.schemas ?? {}), Error: ERROR_SCHEMA }
  for (const s of Object.values(schemas)) cleanSchema(s)
  return {
    openapi: '3.1.0',
    info: { title: info.title, version: info.version, description: info.description },
    servers: [{ url: '/', description: 'This server' }],
    tags: collectTags(paths),
    paths,
    components: { schemas, securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'The `token` from `POST /api/auth/login` (15 minutes; renew with `POST /api/auth/refresh`)' } } },
  }
}

/** `/api/users/` → `/api/users`, `:id` → `{id}`. */
function openApiPath(path: string): string {
  const p = path.replace(/:(\w+)/g, '{$1}')
  return p.length > 1 ? p.replace(/\/$/, '') : p
}

function finishOperation(op: Json): void {
  const acc = op['x-access'] as RouteAccess | undefined
  if (acc !== undefined) {
    op.security = acc === 'public' ? [] : [{ bearerAuth: [] }]
    op.description = [op.description, `**Access:** ${describeAccess(acc)}`].filter(Boolean).join('\n\n')
  }
  for (const p of (op.parameters as Json[] | undefined) ?? []) {
    cleanSchema(p.schema)
    if (!p.description && p.schema?.description) p.description = p.schema.description
  }
  const body = op.requestBody as Json | undefined
  if (body) {
    for (const media of Object.values((body.content ?? {}) as Json)) finishMedia(media)
    if (!body.description) delete body.description
  }
  const responses: Json = (op.responses ??= {})
  // Every route of its kind can answer these, whether or not it says so.
  const implied = [acc === 'public' ? undefined : 401, body ? 413 : undefined, body && body.content?.['application/json'] ? 415 : undefined, 429, 500]
  for (const status of implied) if (status !== undefined && !responses[status]) responses[status] = {}
  for (const [status, res] of Object.entries(responses)) {
    const code = Number(status)
    if (code >= 400) responses[status] = errorResponse(code, acc, res as Json)
    else {
      const r = res as Json
      if (!r.description || /^Response for status/.test(r.description)) r.description = code === 202 ? 'Accepted: the work goes on; its outcome arrives as events' : code === 201 ? 'Created' : code === 204 ? 'No content' : 'OK'
      for (const media of Object.values((r.content ?? {}) as Json)) finishMedia(media)
    }
  }
}

function errorResponse(status: number, acc: RouteAccess | undefined, declared: Json): Json {
  const s = STATUS[status] ?? { description: 'Error', error: 'Error' }
  // A route whose failure answers a body of its own (GET /health's 503 is the health report)
  // keeps it; every other error is the envelope.
  const own = declared.content?.['application/json']
  if (own?.schema && own.schema.title !== 'Error' && own.schema.$ref !== '#/components/schemas/Error') {
    finishMedia(own)
    return { ...declared, description: declared.description && !/^Response for status/.test(declared.description) ? declared.description : s.description }
  }
  let description = s.description
  let error = s.error
  if (status === 403 && typeof acc === 'object' && acc.resource === 'platform') {
    description = 'Only admins may do this'
    error = 'This action requires the ADMIN role'
  }
  const example: Json = { success: false, error, details: s.details ?? [] }
  if (status === 500) example.requestId = 'k3J9x2Qa-lq2v8f1'
  return {
    description: declared.description && !/^Response for status/.test(declared.description) && declared.description !== 'Error' ? declared.description : description,
    ...(status === 429 ? { headers: { 'Retry-After': { description: 'Seconds to wait', schema: { type: 'integer' } } } } : {}),
    content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' }, example } },
  }
}

function describeAccess(a: RouteAccess): string {
  if (a === 'public') return 'anyone; no token needed.'
  if (a === 'signed-in') return 'any signed-in user, on their own account or session.'
  const { resource, action, object } = a
  if (resource === 'platform') return 'admins only (403 for other roles).'
  const viewer = action === 'read' ? 'VIEWERs too' : action === 'chat' ? 'VIEWERs too (chat is not a change)' : 'not VIEWERs, who are read-only (403)'
  if (!object) return `any signed-in user, on their own ${resource}s; ${viewer}.`
  if (resource === 'user') return `the user themselves or an admin; anyone else gets 404; ${viewer}.`
  const who = action === 'chat' ? 'the owner only (an admin may read a conversation, not talk in it)' : 'the owner or an admin'
  return `${who}; another user gets 404, exactly as for an id that does not exist; ${viewer}.`
}

/** The media type's example: its own, else the schema's first `examples` entry. */
function finishMedia(media: Json): void {
  cleanSchema(media.schema)
  const examples = media.schema?.examples as unknown[] | undefined
  if (media.example === undefined && media.examples === undefined && Array.isArray(examples) && examples.length > 0) media.example = examples[0]
}

/** Remove what is not JSON Schema: Elysia's custom `error` messages (strings or functions). */
function cleanSchema(s: Json | undefined): void {
  if (!s || typeof s !== 'object') return
  if (typeof s.error === 'string' || typeof s.error === 'function') delete s.error
  for (const key of ['items', 'not', 'additionalProperties', 'contains', 'if', 'then', 'else']) if (s[key] && typeof s[key] === 'object') cleanSchema(s[key])
  for (const key of ['anyOf', 'oneOf', 'allOf', 'prefixItems']) if (Array.isArray(s[key])) for (const x of s[key]) cleanSchema(x)
  for (const key of ['properties', 'patternProperties', '$defs']) if (s[key] && typeof s[key] === 'object') for (const x of Object.values(s[key] as Json)) cleanSchema(x as Json)
}

function collectTags(paths: Json): Array<{ name: string; description: string }> {
  const names = new Set<string>()
  for (const item of Object.values(paths)) for (const m of METHODS) for (const tag of (item[m]?.tags as string[] | undefined) ?? []) names.add(tag)
  return [...names].map((name) => ({ name, description: TAG_DESCRIPTIONS[name] ?? name }))
}

const TAG_DESCRIPTIONS: Record<string, string> = {
  Auth: 'Accounts, logins and tokens',
  Users: 'User management',
  System: 'Health, metrics, quotas and cluster state',
  Live: 'WebSocket live sessions: see the AsyncAPI document at /asyncapi.json',
  Workstations: 'Development containers with terminals, logs and live stats',
  VMs: 'Isolated machines under a sandboxed runtime (gVisor)',
  Models: 'Models, training runs, a registry of versions with aliases, and serving',
  Runs: 'Training runs: status, metrics, cancel',
  AI: 'Chat sessions with the AI assistant',
  DataKits: 'Datasets: uploads, versions, profiles, previews, exports and SQL queries',
  Pipelines: 'Pipelines: versioned DAG definitions, runs with live progress, step logs, retries, caching and cron schedules',
  Organisations: 'Teams that share DataKits, models, pipelines and CodeSheets: members, roles, invitations and their audit log',
}
