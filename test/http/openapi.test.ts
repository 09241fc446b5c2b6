/**
 * The OpenAPI document, as a running server serves it (every feature installed): `redocly
 * lint` with the recommended rules and ours (redocly.yaml) finds no error, and every operation
 * is documented the way a user of the API needs — a summary, a description with who may call
 * it, an example of each JSON body it takes and of each success it answers, and every error
 * described with an example of the envelope.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { testServer, type TestServer } from '../support/app.ts'

let t: TestServer
let doc: any
let dir: string
const METHODS = ['get', 'put', 'post', 'delete', 'patch']

beforeAll(async () => {
  t = await testServer()
  const r = await t.json('GET', '/swagger/json')
  expect(r.status).toBe(200)
  doc = r.body
  dir = await mkdtemp(join(tmpdir(), 'quadrax-openapi-'))
})
afterAll(async () => {
  await t.stop()
  await rm(dir, { recursive: true, force: true })
})

const operations = (): Array<{ id: string; op: any }> =>
  Object.entries(doc.paths as Record<string, any>).flatMap(([path, item]) => METHODS.filter((m) => item[m]).map((m) => ({ id: `${m.toUpperCase()} ${path}`, op: item[m] })))

describe('the OpenAPI document', () => {
  test('redocly lint (recommended rules and redocly.yaml): no errors, no warnings', async () => {
    const file = join(dir, 'openapi.json')
    await writeFile(file, JSON.stringify(doc))
    const root = join(import.meta.dir, '../..')
    // Redocly's CLI is a Node program: run it as one.
    const proc = Bun.spawn(['node', join(root, 'node_modules/@redocly/cli/bin/cli.js'), 'lint', file, '--config', join(root, 'redocly.yaml'), '--format=json', '--max-problems=1000'], {
      cwd: dir,
      stdout: 'pipe',
      stderr: 'pipe',
      env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true' },
    })
    const [out] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited])
    const report = JSON.parse(out.slice(out.indexOf('{'))) as { problems: Array<{ ruleId: string; severity: string; message: string; location: Array<{ pointer: string }> }> }
    const problems = report.problems.map((p) => `${p.severity} ${p.ruleId}: ${p.message} at ${p.location[0]?.pointer}`)
    expect(problems).toEqual([])
  }, 60_000)

  test('OpenAPI 3.1, bearer auth, and a pointer to the live protocol', () => {
    expect(doc.openapi).toBe('3.1.0')
    expect(doc.components.securitySchemes.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer' })
    expect(doc.info.description).toContain('/asyncapi.json')
  })

  test('every operation: a summary, a description that says who may call it, and its access declaration', () => {
    const missing = operations()
      .filter(({ op }) => !op.summary || !op.description || !op['x-access'] || !/\*\*Access:\*\*/.test(op.description))
      .map(({ id }) => id)
    expect(missing).toEqual([])
  })

  test('every JSON request body and every JSON success has an example', () => {
    const missing: string[] = []
    for (const { id, op } of operations()) {
      for (const [type, media] of Object.entries((op.requestBody?.content ?? {}) as Record<string, any>)) {
        if (media.example === undefined && media.examples === undefined) missing.push(`${id} request ${type}`)
      }
      for (const [status, res] of Object.entries(op.responses as Record<string, any>)) {
        const json = res.content?.['application/json']
        if (Number(status) < 300 && json && json.example === undefined && json.examples === undefined) missing.push(`${id} ${status}`)
      }
    }
    expect(missing).toEqual([])
  })

  test('every error is described, in the envelope, with an example; JSON operations take JSON only', () => {
    for (const { id, op } of operations()) {
      for (const [status, res] of Object.entries(op.responses as Record<string, any>)) {
        if (Number(status) < 400) continue
        expect(res.description, `${id} ${status}`).toBeTruthy()
        const json = res.content['application/json']
        expect(json.example, `${id} ${status}`).toBeDefined()
        // The envelope, except where a failure answers a body of its own: /health's 503 is the health report.
        if (id === 'GET /health' && status === '503') expect(json.example.status).toBe('unhealthy')
        else {
          expect(json.schema.$ref, `${id} ${status}`).toBe('#/components/schemas/Error')
          expect(json.example.success, `${id} ${status}`).toBe(false)
        }
      }
      const types = Object.keys(op.requestBody?.content ?? {})
      expect(types.length <= 1, `${id} takes ${types.join(', ')}`).toBe(true)
      if (op.security?.length) expect(op.responses['401'], `${id} 401`).toBeDefined()
    }
  })

  test('WebSocket upgrades are not operations (the AsyncAPI document describes them)', () => {
    for (const item of Object.values(doc.paths as Record<string, any>)) expect(Object.keys(item)).not.toContain('ws')
    expect(Object.keys(doc.paths).some((p) => p.startsWith('/ws'))).toBe(false)
  })
})
