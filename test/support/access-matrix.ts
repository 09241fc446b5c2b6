/**
 * What the access tests share: the route table read as access declarations
 * (src/auth/route-access.ts), requests filled in from the routes' documented examples, and calls
 * over real HTTP and real WebSockets. test/http/access-orgs.test.ts calls the routes of shared
 * objects as each role of an organisation with these.
 *
 *   const http = accessClient(t.url)
 *   const a = await http.call(route, fill(route.path, id, { version: '1' }) + query(route), token, body)
 */
import type { RouteAccess } from '../../src/auth/route-access.ts'
import { multipartBytes } from './datakit-upload.ts'
import { field } from './datasets.ts'
import { customers } from './tabular.ts'
import { wsClient } from './ws.ts'

export interface Caller {
  id: string
  token: string
}

export interface Answer {
  status: number
  body: unknown
}

/** A route of the route table (`app.routes`), as far as the access tests read it. */
export interface Route {
  method: string
  path: string
  hooks: { detail?: Record<string, any>; body?: any; query?: any }
}

export const accessOf = (r: Route): RouteAccess | undefined => r.hooks.detail?.['x-access']

/** The names of a path's parameters, in order. */
export const params = (path: string) => [...path.matchAll(/:(\w+)/g)].map((m) => m[1]!)

/** `GET /api/models/:id` */
export const routeName = (r: Route) => `${r.method} ${r.path}`

/**
 * The path with its parameters filled: the first with `subject`, the rest from `rest` by name
 * (`x` for a name it does not know). A trailing slash goes (`/api/models/` is `/api/models`).
 */
export function fill(path: string, subject: string, rest: Record<string, string>): string {
  const [first, ...others] = params(path)
  let p = first ? path.replace(`:${first}`, subject) : path
  for (const name of others) p = p.replace(`:${name}`, rest[name] ?? 'x')
  return p.length > 1 ? p.replace(/\/$/, '') : p
}

/** Required query parameters, from their documented examples (or defaults), and `extra`. */
export function query(r: Route, extra: Record<string, string> = {}): string {
  const q = r.hooks.query
  const entries: string[] = []
  for (const name of q?.properties ? (q.required ?? []) : []) {
    if (name in extra) continue
    const s = q.properties[name]
    const v = s.examples?.[0] ?? s.default
    if (v === undefined) throw new Error(`${routeName(r)}: required query parameter ${name} has no example`)
    entries.push(`${name}=${encodeURIComponent(String(v))}`)
  }
  for (const [name, v] of Object.entries(extra)) entries.push(`${name}=${encodeURIComponent(v)}`)
  return entries.length ? `?${entries.join('&')}` : ''
}

/** A multipart/form-data body (sent as is, with its boundary in the content type). */
export class Multipart {
  constructor(
    readonly bytes: Uint8Array,
    readonly contentType: string,
  ) {}
}

const CSV = (() => {
  const rows = customers({ rows: 120, seed: 7 })
  const cols = Object.keys(rows[0]!)
  return [cols.join(','), ...rows.map((r) => cols.map((c) => field(r[c])).join(','))].join('\n') + '\n'
})()

/** A DataKit upload: 120 rows of customers (`purchased` is the target), and the form fields `extra`. */
export async function csvForm(extra: Record<string, string> = {}): Promise<Multipart> {
  const f = await multipartBytes([{ name: 'dataset', filename: 'customers.csv', contentType: 'text/csv', data: CSV }, ...Object.entries(extra).map(([name, value]) => ({ name, value }))])
  return new Multipart(f.body, f.contentType)
}

/** A one-cell .ipynb for the import route, into the caller's workstation (and the form fields `extra`). */
export async function notebookForm(workstationId: string, extra: Record<string, string> = {}): Promise<Multipart> {
  const nb = { nbformat: 4, nbformat_minor: 5, metadata: {}, cells: [{ id: 'a', cell_type: 'code', metadata: {}, source: 'echo hi', execution_count: null, outputs: [] }] }
  const f = await multipartBytes([
    { name: 'file', filename: 'access.ipynb', contentType: 'application/x-ipynb+json', data: JSON.stringify(nb) },
    { name: 'workstationId', value: workstationId },
    ...Object.entries(extra).map(([name, value]) => ({ name, value })),
  ])
  return new Multipart(f.body, f.contentType)
}

/** The fixture pipelines' definition: two `empty` steps, `a` then `b` (`:stepId` is `a`). */
export const PIPELINE = { steps: [{ id: 'a', kind: 'empty' }, { id: 'b', kind: 'empty', needs: ['a'] }] }

/** The objects a request body may have to name: a DataKit to train on, the caller's own workstation. */
export interface BodyObjects {
  datakit: string
  workstation: string
}

/** Bodies that must name the caller's own objects to mean anything (the rest: the documented example). */
const BODY: Record<string, (f: BodyObjects) => unknown> = {
  // The example's email is taken once registered: each caller registers an address of its own.
  'POST /api/auth/register': () => ({ email: `access-${crypto.randomUUID().slice(0, 8)}@example.com`, password: 'SecurePass123!', firstName: 'Ada', lastName: 'Lovelace' }),
  'POST /api/models/:id/train': (f) => ({ datakitId: f.datakit, target: 'purchased', algorithm: 'logistic_regression', params: { epochs: 1 } }),
  'POST /api/models/:id/deploy': () => ({ version: 1 }),
  'PUT /api/models/:id/aliases/:alias': () => ({ version: 1 }),
  'POST /api/models/:id/predict': () => ({ inputs: { age: 35, income: 50000, location: 'urban' } }),
  // Pipeline bodies check their definition in the handler (no body schema on the route to take an example from).
  'POST /api/pipelines': () => ({ name: `pipeline-${crypto.randomUUID().slice(0, 8)}`, definition: PIPELINE }),
  'PATCH /api/pipelines/:id': () => ({ description: 'edited by the access test' }),
  // The examples name params the fixture pipeline does not have.
  'POST /api/pipelines/:id/runs': () => ({}),
  'POST /api/pipelines/:id/schedules': () => ({ cron: '0 3 * * *' }),
  // A sheet goes in a workstation of the caller's own; an import brings a notebook file.
  'POST /api/codesheets': (f) => ({ name: 'access test', workstationId: f.workstation, kernel: 'shell' }),
  'POST /api/codesheets/import': (f) => notebookForm(f.workstation),
}

const normalised = (path: string) => (path.length > 1 ? path.replace(/\/$/, '') : path)

/** The request body for a route: an override from `overrides` or BODY, a CSV upload for a multipart route, else the documented example. */
export async function exampleBody(r: Route, f: BodyObjects, overrides: Record<string, (f: BodyObjects) => unknown> = {}): Promise<unknown> {
  const key = `${r.method} ${normalised(r.path)}`
  const override = overrides[key] ?? BODY[key]
  if (override) return override(f)
  if (r.hooks.detail?.['x-content-type'] === 'multipart/form-data') return csvForm({ name: `kit-${crypto.randomUUID().slice(0, 6)}` })
  const schema = r.hooks.body
  if (!schema) return undefined
  const example = schema.examples?.[0]
  if (example === undefined) throw new Error(`${routeName(r)}: the request body has no documented example`)
  return example
}

/** The statuses the OpenAPI document `doc` lists for the route. */
export function documented(doc: any, r: Route): string[] {
  const path = normalised(r.path).replace(/:(\w+)/g, '{$1}')
  const op = doc.paths?.[path]?.[r.method.toLowerCase()]
  return op ? Object.keys(op.responses ?? {}) : []
}

/** The id in a 201/202 answer (`data.id`), or an error naming `what`. */
export function created(r: Answer, what: string): string {
  if (r.status !== 201 && r.status !== 202) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.body)}`)
  return (r.body as { data: { id: string } }).data.id
}

export interface AccessClient {
  /** An HTTP request over a real socket; the body parsed as JSON when it is JSON. */
  api(method: string, path: string, token: string | undefined, body?: unknown): Promise<Answer>
  /** A route: HTTP, or a WebSocket upgrade (101 when it opens, else the refusal's status and body). */
  call(r: Route, path: string, token: string | undefined, body?: unknown): Promise<Answer>
  /** Subscribe to a topic on /ws: the `ack` or `error` that answers it. */
  subscribe(token: string, topic: string): Promise<any>
}

export function accessClient(baseUrl: string): AccessClient {
  const api: AccessClient['api'] = async (method, path, token, body) => {
    const headers: Record<string, string> = {}
    if (token) headers.authorization = `Bearer ${token}`
    let payload: Uint8Array | string | undefined
    if (body instanceof Multipart) {
      headers['content-type'] = body.contentType
      payload = body.bytes
    } else if (body !== undefined) {
      headers['content-type'] = 'application/json'
      payload = JSON.stringify(body)
    }
    const res = await fetch(baseUrl + path, { method, headers, body: payload })
    const text = await res.text()
    let parsed: unknown = text
    try {
      parsed = text ? JSON.parse(text) : null
    } catch {}
    return { status: res.status, body: parsed }
  }
  const call: AccessClient['call'] = async (r, path, token, body) => {
    if (r.method !== 'WS') return api(r.method, path, token, body)
    try {
      const c = await wsClient(baseUrl, token, { path })
      c.close()
      return { status: 101, body: null }
    } catch {
      const headers: Record<string, string> = { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': btoa('0123456789abcdef') }
      if (token) headers.authorization = `Bearer ${token}`
      const res = await fetch(baseUrl + path, { headers, signal: AbortSignal.timeout(15_000) })
      return { status: res.status, body: await res.json() }
    }
  }
  const subscribe: AccessClient['subscribe'] = async (token, topic) => {
    const ws = await wsClient(baseUrl, token)
    try {
      ws.send({ op: 'subscribe', topic, id: 's' })
      return await ws.next((m) => m.id === 's' && (m.op === 'ack' || m.op === 'error'))
    } finally {
      ws.close()
    }
  }
  return { api, call, subscribe }
}
