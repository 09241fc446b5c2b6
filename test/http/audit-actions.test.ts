/**
 * Which action each state-changing route is recorded as (src/http/plugins/audit.ts): the table
 * is generated from the running app's route table, so a new route has an action the day it is
 * added — this test holds every one of them to a good name, a distinct one, and a target.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { auditedRoute, auditedRoutes, outcomeOf, requestAudit, type AuditedRoute } from '../../src/http/plugins/audit.ts'
import { isAction } from '../../src/store/audit-chain.ts'
import { testServer, type TestServer } from '../support/app.ts'

interface Route {
  method: string
  path: string
  hooks: { detail?: Record<string, any> }
}

let t: TestServer
let routes: Route[]
let table: Map<string, AuditedRoute>
beforeAll(async () => {
  t = await testServer()
  routes = (t.server.app.routes as unknown as Route[]).filter((r) => !r.path.includes('*'))
  table = auditedRoutes(routes)
})
afterAll(() => t.stop())

const key = (r: Route) => `${r.method} ${r.path.length > 1 ? r.path.replace(/\/$/, '') : r.path}`
/** POST, PUT, PATCH and DELETE routes that are not declared as reads. */
const changing = () => routes.filter((r) => ['POST', 'PUT', 'PATCH', 'DELETE'].includes(r.method) && r.hooks.detail?.['x-access']?.action !== 'read')

describe('the action table', () => {
  test('every state-changing route has an action: a dotted name, its own, with a target', () => {
    const missing = changing().filter((r) => !table.has(key(r))).map(key)
    expect(missing).toEqual([])
    const bad = [...table].filter(([, a]) => !isAction(a.action) || !a.targetType).map(([k, a]) => `${k} → ${a.action} (${a.targetType})`)
    expect(bad).toEqual([])
    const byAction = new Map<string, string[]>()
    for (const [k, a] of table) byAction.set(a.action, [...(byAction.get(a.action) ?? []), k])
    expect([...byAction].filter(([, ks]) => ks.length > 1)).toEqual([])
    expect(table.size).toBe(changing().length)
  })

  test("while a request runs, its URL alone finds its route's action and target (what a turn it sets off records): every audited route", async () => {
    const trail = requestAudit({ auth: t.server.http.auth, audit: t.server.http.audit })
    trail.learn(routes)
    const wrong: string[] = []
    for (const [k, a] of table) {
      const [method, pattern] = k.split(' ') as [string, string]
      const ids = new Map<string, string>()
      const path = pattern.replace(/:(\w+)/g, (_, name: string) => {
        const id = crypto.randomUUID()
        ids.set(name, id)
        return id
      })
      const request = new Request(`http://localhost${path}?userId=${crypto.randomUUID()}`, { method })
      // The frame enters the scope in the request's own context.
      const expected = await Promise.resolve().then(() => trail.started(request, 'r', '192.0.2.1')!.expected!('the-actor'))
      const target = typeof a.target === 'object' && 'segment' in a.target ? path.split('/')[a.target.segment + 1] : a.target === 'created' ? 'the-actor' : undefined
      if (expected?.action !== a.action || expected.targetType !== a.targetType || (target !== undefined && expected.targetId !== target)) wrong.push(`${k}: ${JSON.stringify(expected)}`)
    }
    expect(wrong).toEqual([])
  })

  test('reads are not recorded, whatever their method: GETs, predictions, queries and query exports', () => {
    for (const r of routes.filter((r) => r.method === 'GET' || r.hooks.detail?.['x-access']?.action === 'read')) expect(table.has(key(r))).toBe(false)
    expect(table.has('POST /api/models/:id/predict')).toBe(false)
    expect(table.has('POST /api/datakits/:id/query')).toBe(false)
  })

  test('the names the issue gives, and targets taken from the path, the query, the answer or the caller', () => {
    const expected: Record<string, Omit<AuditedRoute, 'target'> & { target: AuditedRoute['target'] }> = {
      'POST /api/workstations/:id/start': { action: 'workstation.start', targetType: 'workstation', target: { segment: 2 } },
      'POST /api/workstations': { action: 'workstation.create', targetType: 'workstation', target: 'created' },
      'POST /api/models/:id/deploy': { action: 'model.deploy', targetType: 'model', target: { segment: 2 } },
      'PATCH /api/models/:id': { action: 'model.update', targetType: 'model', target: { segment: 2 } },
      'DELETE /api/datakits/:id': { action: 'datakit.delete', targetType: 'datakit', target: { segment: 2 } },
      'POST /api/datakits/upload': { action: 'datakit.upload', targetType: 'datakit', target: 'created' },
      'PUT /api/models/:id/aliases/:alias': { action: 'model.alias_set', targetType: 'model', target: { segment: 2 } },
      'POST /api/pipelines/:id/runs': { action: 'pipeline.run_create', targetType: 'pipeline', target: { segment: 2 } },
      'PATCH /api/pipelines/:id/schedules/:scheduleId': { action: 'pipeline.schedule_update', targetType: 'pipeline', target: { segment: 2 } },
      'POST /api/pipeline-runs/:id/retry': { action: 'pipeline_run.retry', targetType: 'pipeline_run', target: { segment: 2 } },
      'POST /api/ai/sessions/:id/messages': { action: 'chat.message_create', targetType: 'chat', target: { segment: 3 } },
      'PATCH /api/users/:id': { action: 'user.update', targetType: 'user', target: { segment: 2 } },
      'DELETE /api/users/:id': { action: 'user.deactivate', targetType: 'user', target: { segment: 2 } },
      'PUT /api/admin/quotas/:userId': { action: 'quota.set', targetType: 'user', target: { segment: 3 } },
      'PUT /api/datakits/storage': { action: 'datakit.storage_quota_set', targetType: 'user', target: { query: 'userId' } },
      'POST /api/auth/login': { action: 'auth.login', targetType: 'user', target: 'self' },
      'POST /api/auth/change-password': { action: 'auth.change_password', targetType: 'user', target: 'self' },
    }
    expect(Object.fromEntries(Object.keys(expected).map((k) => [k, table.get(k)]))).toEqual(expected)
  })

  test('routes still to come get names by the same rule', () => {
    expect(auditedRoute('POST', '/api/orgs', { resource: 'user', action: 'change', object: false })?.action).toBe('org.create')
    expect(auditedRoute('PATCH', '/api/orgs/:id/pins/:pinId', undefined)).toMatchObject({ action: 'org.pin_update', targetType: 'org', target: { segment: 2 }, org: { segment: 2 } })
    expect(auditedRoute('PATCH', '/api/orgs/:id/members/:userId', undefined)).toEqual({ action: 'org.member_role_changed', targetType: 'user', target: { segment: 4 }, org: { segment: 2 } })
    expect(auditedRoute('POST', '/api/invitations/:token/accept', 'signed-in')).toEqual({ action: 'org.member_added', targetType: 'user', target: 'self', org: { answer: 'orgId' } })
    expect(auditedRoute('POST', '/api/auth/reset-password', 'public')?.action).toBe('auth.reset_password')
    expect(auditedRoute('POST', '/api/codesheets/:id/cells/:cellId/run', undefined)).toMatchObject({ action: 'codesheet.cell_run', target: { segment: 2 } })
    expect(auditedRoute('PATCH', '/api/users/me/notifications', 'signed-in')).toEqual({ action: 'user.notifications_update', targetType: 'user', target: 'self' })
    expect(auditedRoute('GET', '/api/orgs', undefined)).toBeUndefined()
  })

  test('outcomes: success below 400; refused (401, 403, 404, 429) is denied; any other error failed', () => {
    expect([200, 201, 202, 204, 304, 400, 401, 403, 404, 409, 413, 422, 429, 500, 503].map(outcomeOf)).toEqual([
      'success', 'success', 'success', 'success', 'success', 'failed', 'denied', 'denied', 'denied', 'failed', 'failed', 'failed', 'denied', 'failed', 'failed',
    ])
  })
})
