/**
 * CodeSheets over HTTP, without running cells (those are test/http/codesheets-run.test.ts):
 * creating, listing, reading, editing and deleting sheets and cells; the version every write
 * names (409 with the current one when stale, from the body or If-Match); the limits (413,
 * 422); who may do what (another user's 404, a VIEWER's reads and exports only, an admin);
 * a stopped workstation's 409; .ipynb export checked by nbformat's own validator and import →
 * export → import → export giving the same file; bad notebooks' 422.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { codesheetsFeature } from '../../src/features/codesheets.ts'
import { workstationsFeature } from '../../src/features/workstations.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { multipartBytes } from '../support/datakit-upload.ts'
import { dockerTestEnv, removeContainersOf, until } from '../support/docker.ts'
import { wsClient } from '../support/ws.ts'

const docker = dockerTestEnv(import.meta.file)
type User = Awaited<ReturnType<TestServer['user']>>

/** nbformat's own validator (Debian's python3-nbformat, under /usr/bin/python3): '' when valid, else its complaint. */
async function nbformatProblems(text: string): Promise<string> {
  const p = Bun.spawn(['/usr/bin/python3', '-c', 'import nbformat,sys; nbformat.validate(nbformat.read(sys.stdin, as_version=4))'], { stdin: new TextEncoder().encode(text), stdout: 'pipe', stderr: 'pipe' })
  const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited])
  return code === 0 ? '' : err.trim().split('\n').slice(-3).join('\n') || `exit ${code}`
}

const PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=='
const NOTEBOOK = {
  nbformat: 4,
  nbformat_minor: 5,
  metadata: { kernelspec: { name: 'python3', display_name: 'Python 3 (ipykernel)', language: 'python' }, language_info: { name: 'python', version: '3.11.2' }, custom: { 'a b': [1, null, true] } },
  cells: [
    { id: 'title', cell_type: 'markdown', metadata: {}, source: ['# Churn\n', 'A first look.'], attachments: { 'dot.png': { 'image/png': PNG } } },
    {
      id: 'load',
      cell_type: 'code',
      metadata: { tags: ['setup'], collapsed: false },
      execution_count: 1,
      source: ['import pandas as pd\n', "print('rows', 1000)"],
      outputs: [
        { output_type: 'stream', name: 'stdout', text: ['rows 1000\n'] },
        { output_type: 'stream', name: 'stderr', text: 'warning: é ✓\n' },
      ],
    },
    {
      id: 'plot',
      cell_type: 'code',
      metadata: {},
      execution_count: 2,
      source: 'df.age.hist()',
      outputs: [
        { output_type: 'execute_result', execution_count: 2, data: { 'text/plain': ['<Axes>'] }, metadata: {} },
        { output_type: 'display_data', data: { 'image/png': PNG, 'text/plain': '<Figure>' }, metadata: { 'image/png': { width: 1, height: 1 } } },
      ],
    },
    { id: 'boom', cell_type: 'code', metadata: {}, execution_count: 3, source: '1/0', outputs: [{ output_type: 'error', ename: 'ZeroDivisionError', evalue: 'division by zero', traceback: ['\u001b[0;31mZeroDivisionError\u001b[0m: division by zero'] }] },
    { id: 'notes', cell_type: 'raw', metadata: { format: 'text/plain' }, source: 'raw' },
    { id: 'empty', cell_type: 'code', metadata: {}, execution_count: null, source: '', outputs: [] },
  ],
}

describe.skipIf(!docker)('CodeSheets over HTTP (no cells run)', () => {
  let t: TestServer
  let alice: User
  let bob: User
  let vera: User
  let admin: Awaited<ReturnType<TestServer['admin']>>
  let ws: string
  let veraWs: string

  const LIMITS = { maxCells: 6, maxSourceBytes: 2048, maxImportBytes: 64 * 1024, maxOutputBytes: 8192 }

  beforeAll(async () => {
    t = await testServer(
      {
        DOCKER_HOST: docker!.host,
        WORKSTATION_IDLE_TIMEOUT: '0',
        CODESHEET_MAX_CELLS: String(LIMITS.maxCells),
        CODESHEET_MAX_SOURCE_BYTES: String(LIMITS.maxSourceBytes),
        CODESHEET_MAX_IMPORT_BYTES: String(LIMITS.maxImportBytes),
        CODESHEET_MAX_OUTPUT_BYTES: String(LIMITS.maxOutputBytes),
      },
      { features: [workstationsFeature, codesheetsFeature] },
    )
    ;[alice, bob, vera] = await Promise.all([t.user(), t.user(), t.user()])
    admin = await t.admin()
    ws = await workstation(alice)
    veraWs = await workstation(vera)
    await t.db.sql`update users set role = 'VIEWER' where id = ${vera.id}`
    await t.server.http.auth.registry.invalidateUser(vera.id)
  }, 60_000)
  afterAll(async () => {
    if (t) {
      await removeContainersOf(docker!.raw, t.db.sql)
      await t.stop()
    }
  })

  async function workstation(u: User): Promise<string> {
    const r = await t.json('POST', '/api/workstations', { token: u.token, body: { name: `ws-${crypto.randomUUID().slice(0, 6)}`, description: 'A workstation for sheets', function: 'DEVELOPMENT', resources: { cpu: 0.5, memory: 64 } } })
    expect(r.status).toBe(201)
    const id = r.body.data.id as string
    await until(async () => (await t.json('GET', `/api/workstations/${id}`, { token: u.token })).body.data.status === 'STOPPED', `workstation ${id} STOPPED`)
    return id
  }

  const create = async (u: User = alice, over: Record<string, unknown> = {}) => {
    const r = await t.json('POST', '/api/codesheets', { token: u.token, body: { name: 'exploration', workstationId: ws, ...over } })
    if (r.status !== 201) throw new Error(`create: ${r.status} ${JSON.stringify(r.body)}`)
    return r.body.data
  }
  const get = async (id: string, u: User | { token: string } = alice) => t.json('GET', `/api/codesheets/${id}`, { token: u.token })
  const addCell = (id: string, body: Record<string, unknown>, u: { token: string } = alice, headers: Record<string, string> = {}) => t.json('POST', `/api/codesheets/${id}/cells`, { token: u.token, body, headers })

  async function importNotebook(text: string, fields: Record<string, string> = { workstationId: ws }, u: { token: string } = alice, filename = 'churn.ipynb') {
    const form = await multipartBytes([{ name: 'file', filename, contentType: 'application/x-ipynb+json', data: text }, ...Object.entries(fields).map(([name, value]) => ({ name, value }))])
    const res = await fetch(`${t.url}/api/codesheets/import`, { method: 'POST', headers: { authorization: `Bearer ${u.token}`, 'content-type': form.contentType }, body: form.body })
    return { status: res.status, body: (await res.json()) as any }
  }
  const exportText = async (id: string, u: { token: string } = alice) => {
    const res = await t.call('GET', `/api/codesheets/${id}/export`, { token: u.token })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe('application/x-ipynb+json')
    return { text: await res.text(), disposition: res.headers.get('content-disposition') }
  }

  test('create: 201 with the whole sheet (no cells, version 1, no kernel yet, python3 by default); bad bodies 400; another user’s workstation 404', async () => {
    const s = await create()
    expect(s).toEqual({
      id: expect.any(String),
      ownerId: alice.id,
      orgId: null,
      name: 'exploration',
      workstationId: ws,
      kernel: 'python3',
      kernelState: 'none',
      version: 1,
      cellCount: 0,
      createdAt: expect.any(String),
      updatedAt: expect.any(String),
      metadata: {},
      cells: [],
      executions: [],
      eventSeq: 0,
    })
    expect((await create(alice, { kernel: 'shell' })).kernel).toBe('shell')
    const bad = await t.json('POST', '/api/codesheets', { token: alice.token, body: { name: '', workstationId: 'nope', kernel: 'ruby' } })
    expect(bad.status).toBe(400)
    expect(bad.body.details.map((d: any) => d.field).sort()).toEqual(['kernel', 'name', 'workstationId'])
    const theirs = await t.json('POST', '/api/codesheets', { token: bob.token, body: { name: 'x', workstationId: ws } })
    expect(theirs.status).toBe(404)
    expect(theirs.body.error).toBe('Workstation not found')
  })

  test('cells: added at the end or at an index, edited, moved and deleted; each write bumps the version and is in GET', async () => {
    const s = await create()
    const a = await addCell(s.id, { version: 1, type: 'code', source: 'echo a' })
    expect(a.status).toBe(201)
    expect(a.body.data).toEqual({ cell: { id: expect.any(String), type: 'code', source: 'echo a', metadata: {}, attachments: null, executionCount: null }, index: 0, version: 2 })
    const b = await addCell(s.id, { version: 2, type: 'markdown', source: '# b', index: 0, metadata: { tag: 1 } })
    expect(b.body.data.index).toBe(0)
    const c = await addCell(s.id, { type: 'code', source: 'echo c' }, alice, { 'if-match': '"3"' })
    expect(c.status).toBe(201)
    expect(c.body.data).toMatchObject({ index: 2, version: 4 })
    const [aId, bId, cId] = [a.body.data.cell.id, b.body.data.cell.id, c.body.data.cell.id]
    expect((await get(s.id)).body.data.cells.map((x: any) => x.id)).toEqual([bId, aId, cId])

    const edited = await t.json('PATCH', `/api/codesheets/${s.id}/cells/${aId}`, { token: alice.token, body: { version: 4, source: 'echo A', index: 2 } })
    expect(edited.status).toBe(200)
    expect(edited.body.data).toEqual({ cell: { id: aId, type: 'code', source: 'echo A', metadata: {}, attachments: null, executionCount: null }, index: 2, version: 5 })
    const del = await t.json('DELETE', `/api/codesheets/${s.id}/cells/${bId}`, { token: alice.token, headers: { 'if-match': '5' } })
    expect(del.status).toBe(200)
    expect(del.body.data).toEqual({ id: bId, deleted: true, version: 6 })
    const read = (await get(s.id)).body.data
    expect(read.version).toBe(6)
    expect(read.cellCount).toBe(2)
    expect(read.cells.map((x: any) => [x.id, x.source, x.outputs, x.execution])).toEqual([
      [cId, 'echo c', [], null],
      [aId, 'echo A', [], null],
    ])
    // Moving past the end, a cell the sheet does not have, a bad cell id.
    expect((await t.json('PATCH', `/api/codesheets/${s.id}/cells/${aId}`, { token: alice.token, body: { version: 6, index: 2 } })).status).toBe(422)
    expect((await t.json('PATCH', `/api/codesheets/${s.id}/cells/nope`, { token: alice.token, body: { version: 6, source: 'x' } })).status).toBe(404)
    expect((await t.json('PATCH', `/api/codesheets/${s.id}/cells/no%20pe`, { token: alice.token, body: { version: 6, source: 'x' } })).status).toBe(400)
    expect((await addCell(s.id, { version: 6, type: 'code', source: 'x', index: 5 })).status).toBe(422)
    expect((await get(s.id)).body.data.version).toBe(6)
  })

  test('a stale version is a 409 naming the current one, and changes nothing; no version is a 400; body and If-Match must agree', async () => {
    const s = await create()
    expect((await addCell(s.id, { version: 1, type: 'code', source: 'first tab' })).status).toBe(201)
    const stale = await addCell(s.id, { version: 1, type: 'code', source: 'second tab' })
    expect(stale.status).toBe(409)
    expect(stale.body).toEqual({
      success: false,
      error: 'The sheet was changed since version 1: it is at version 2; reload it and make your change again',
      details: [{ field: 'version', message: 'current version: 2' }],
    })
    const viaHeader = await t.json('PATCH', `/api/codesheets/${s.id}`, { token: alice.token, body: { name: 'renamed' }, headers: { 'if-match': 'W/"1"' } })
    expect(viaHeader.status).toBe(409)
    const none = await addCell(s.id, { type: 'code', source: 'x' })
    expect(none.status).toBe(400)
    expect(none.body.details).toEqual([{ field: 'version', message: "Required: the sheet's version your change is made against (in the body, or If-Match)" }])
    expect((await addCell(s.id, { version: 2, type: 'code', source: 'x' }, alice, { 'if-match': '"3"' })).status).toBe(400)
    expect((await addCell(s.id, { type: 'code', source: 'x' }, alice, { 'if-match': 'abc' })).status).toBe(400)
    expect((await t.json('DELETE', `/api/codesheets/${s.id}`, { token: alice.token, body: { version: 1 } })).status).toBe(409)
    const read = (await get(s.id)).body.data
    expect(read.version).toBe(2)
    expect(read.cells.map((c: any) => c.source)).toEqual(['first tab'])
    expect(read.name).toBe('exploration')
  })

  test('rename and kernel change (PATCH) with the version; the metadata’s kernelspec goes with the old kernel', async () => {
    const s = await create()
    const r = await t.json('PATCH', `/api/codesheets/${s.id}`, { token: alice.token, body: { version: 1, name: 'churn', metadata: { kernelspec: { name: 'python3' }, note: 'x' } } })
    expect(r.status).toBe(200)
    expect(r.body.data).toMatchObject({ name: 'churn', version: 2, kernel: 'python3', cellCount: 0 })
    await t.json('PATCH', `/api/codesheets/${s.id}`, { token: alice.token, body: { version: 2, kernel: 'shell' } })
    const read = (await get(s.id)).body.data
    expect(read).toMatchObject({ kernel: 'shell', version: 3, metadata: { note: 'x' } })
    expect(read.metadata).not.toHaveProperty('kernelspec')
  })

  test('limits: CODESHEET_MAX_SOURCE_BYTES is a 413, CODESHEET_MAX_CELLS a 422, each naming the limit', async () => {
    const s = await create()
    const big = await addCell(s.id, { version: 1, type: 'code', source: 'é'.repeat(LIMITS.maxSourceBytes / 2 + 1) })
    expect(big.status).toBe(413)
    expect(big.body.error).toContain('CODESHEET_MAX_SOURCE_BYTES')
    expect(big.body.details).toEqual([{ field: 'source', message: `Must be at most ${LIMITS.maxSourceBytes} bytes` }])
    let version = 1
    for (let i = 0; i < LIMITS.maxCells; i++) version = (await addCell(s.id, { version, type: 'code', source: `echo ${i}` })).body.data.version
    const over = await addCell(s.id, { version, type: 'code', source: 'one more' })
    expect(over.status).toBe(422)
    expect(over.body.error).toContain('CODESHEET_MAX_CELLS')
    const cells = (await get(s.id)).body.data.cells
    expect(cells).toHaveLength(LIMITS.maxCells)
    const tooBigEdit = await t.json('PATCH', `/api/codesheets/${s.id}/cells/${cells[0].id}`, { token: alice.token, body: { version, source: 'x'.repeat(LIMITS.maxSourceBytes + 1) } })
    expect(tooBigEdit.status).toBe(413)
  })

  test('run on a stopped workstation: 409 naming its status; a markdown cell is 422; nothing is queued', async () => {
    const s = await create(alice, { kernel: 'shell' })
    const code = (await addCell(s.id, { version: 1, type: 'code', source: 'echo hi' })).body.data.cell.id
    const md = (await addCell(s.id, { version: 2, type: 'markdown', source: '# hi' })).body.data.cell.id
    const r = await t.json('POST', `/api/codesheets/${s.id}/cells/${code}/run`, { token: alice.token })
    expect(r.status).toBe(409)
    expect(r.body.error).toBe(`The workstation is STOPPED: start it first (POST /api/workstations/${ws}/start) to run cells`)
    expect((await t.json('POST', `/api/codesheets/${s.id}/run-all`, { token: alice.token, body: {} })).status).toBe(409)
    expect((await t.json('POST', `/api/codesheets/${s.id}/cells/${md}/run`, { token: alice.token })).status).toBe(422)
    expect((await t.json('POST', `/api/codesheets/${s.id}/cells/${code}/run`, { token: alice.token, body: { version: 1 } })).status).toBe(409)
    const read = (await get(s.id)).body.data
    expect(read.executions).toEqual([])
    expect(read.cells.map((c: any) => c.execution)).toEqual([null, null])
    // Interrupt and restart with nothing running change nothing.
    expect((await t.json('POST', `/api/codesheets/${s.id}/interrupt`, { token: alice.token })).body.data).toEqual({ interrupted: null, cancelled: [] })
    const restart = await t.json('POST', `/api/codesheets/${s.id}/restart`, { token: alice.token })
    expect(restart.status).toBe(202)
    expect(restart.body.data).toEqual({ kernelState: 'none' })
  })

  test('list: your own sheets, oldest first, by page, optionally one workstation’s', async () => {
    const u = await t.user()
    const w1 = await workstation(u)
    const w2 = await workstation(u)
    const ids: string[] = []
    for (const w of [w1, w2, w1]) ids.push((await create(u, { workstationId: w })).id)
    const all = await t.json('GET', '/api/codesheets?limit=2', { token: u.token })
    expect(all.status).toBe(200)
    expect(all.body.data.map((s: any) => s.id)).toEqual(ids.slice(0, 2))
    const next = await t.json('GET', `/api/codesheets?limit=2&cursor=${all.body.meta.nextCursor}`, { token: u.token })
    expect(next.body.data.map((s: any) => s.id)).toEqual([ids[2]])
    expect(next.body.meta.nextCursor).toBeNull()
    const one = await t.json('GET', `/api/codesheets?workstationId=${w1}`, { token: u.token })
    expect(one.body.data.map((s: any) => s.id)).toEqual([ids[0], ids[2]])
    expect(one.body.data[0]).toEqual({ id: ids[0], ownerId: u.id, orgId: null, name: 'exploration', workstationId: w1, kernel: 'python3', kernelState: 'none', version: 1, cellCount: 0, createdAt: expect.any(String), updatedAt: expect.any(String) })
    expect((await t.json('GET', '/api/codesheets', { token: bob.token })).body.data).toEqual([])
  })

  test('another user: 404 on every route, as for a sheet that does not exist; their subscribe is refused', async () => {
    const s = await create()
    const cell = (await addCell(s.id, { version: 1, type: 'code', source: 'x' })).body.data.cell.id
    const missing = crypto.randomUUID()
    const calls: Array<[string, (id: string) => string, unknown?]> = [
      ['GET', (id) => `/api/codesheets/${id}`],
      ['PATCH', (id) => `/api/codesheets/${id}`, { version: 2, name: 'mine' }],
      ['DELETE', (id) => `/api/codesheets/${id}`, { version: 2 }],
      ['POST', (id) => `/api/codesheets/${id}/cells`, { version: 2, type: 'code', source: 'x' }],
      ['PATCH', (id) => `/api/codesheets/${id}/cells/${cell}`, { version: 2, source: 'y' }],
      ['DELETE', (id) => `/api/codesheets/${id}/cells/${cell}`, { version: 2 }],
      ['POST', (id) => `/api/codesheets/${id}/cells/${cell}/run`, {}],
      ['POST', (id) => `/api/codesheets/${id}/run-all`, {}],
      ['POST', (id) => `/api/codesheets/${id}/interrupt`],
      ['POST', (id) => `/api/codesheets/${id}/restart`],
      ['GET', (id) => `/api/codesheets/${id}/export`],
    ]
    for (const [method, path, body] of calls) {
      const theirs = await t.json(method, path(s.id), { token: bob.token, body })
      const none = await t.json(method, path(missing), { token: bob.token, body })
      expect([method, path('…'), theirs.status], JSON.stringify(theirs.body)).toEqual([method, path('…'), 404])
      expect(theirs.body).toEqual(none.body)
    }
    expect((await get(s.id)).body.data.version).toBe(2)
    const c = await wsClient(t.url, bob.token)
    try {
      c.send({ op: 'subscribe', topic: `codesheet:${s.id}`, id: 's' })
      expect(await c.next((m) => m.id === 's')).toMatchObject({ op: 'error', code: 'forbidden' })
    } finally {
      c.close()
    }
  })

  test('a VIEWER reads and exports their own sheets, and every change is 403; an admin may act on anyone’s', async () => {
    // Made while vera was a USER: her sheet, by an admin acting on her workstation.
    const made = await t.json('POST', '/api/codesheets', { token: admin.token, body: { name: 'vera’s', workstationId: veraWs } })
    expect(made.status).toBe(201)
    const id = made.body.data.id
    expect((await get(id, vera)).status).toBe(200)
    expect((await t.call('GET', `/api/codesheets/${id}/export`, { token: vera.token })).status).toBe(200)
    expect((await t.json('GET', '/api/codesheets', { token: vera.token })).body.data.map((s: any) => s.id)).toEqual([id])
    for (const [method, path, body] of [
      ['POST', '/api/codesheets', { name: 'x', workstationId: veraWs }],
      ['PATCH', `/api/codesheets/${id}`, { version: 1, name: 'x' }],
      ['POST', `/api/codesheets/${id}/cells`, { version: 1, type: 'code', source: 'x' }],
      ['POST', `/api/codesheets/${id}/run-all`, {}],
      ['POST', `/api/codesheets/${id}/interrupt`, undefined],
      ['DELETE', `/api/codesheets/${id}`, { version: 1 }],
    ] as const) {
      const r = await t.json(method, path, { token: vera.token, body })
      expect([method, path, r.status]).toEqual([method, path, 403])
    }
    expect((await importNotebook(JSON.stringify(NOTEBOOK), { workstationId: veraWs }, vera)).status).toBe(403)
    const byAdmin = await t.json('POST', `/api/codesheets/${id}/cells`, { token: admin.token, body: { version: 1, type: 'markdown', source: 'admin was here' } })
    expect(byAdmin.status).toBe(201)
    expect((await t.json('DELETE', `/api/codesheets/${id}`, { token: admin.token, body: { version: 2 } })).status).toBe(200)
    expect((await get(id, vera)).status).toBe(404)
  })

  test('export: nbformat 4.5 that nbformat’s own validator accepts; import → export → import → export gives the same file, cells, ids, outputs and metadata kept', async () => {
    const imported = await importNotebook(JSON.stringify(NOTEBOOK))
    expect(imported.status).toBe(201)
    const sheet = imported.body.data
    expect(sheet).toMatchObject({ name: 'churn', kernel: 'python3', version: 1, cellCount: 6, workstationId: ws })
    expect(sheet.cells.map((c: any) => [c.id, c.type, c.executionCount, c.outputs.length])).toEqual([
      ['title', 'markdown', null, 0],
      ['load', 'code', 1, 2],
      ['plot', 'code', 2, 2],
      ['boom', 'code', 3, 1],
      ['notes', 'raw', null, 0],
      ['empty', 'code', null, 0],
    ])
    expect(sheet.cells[1].source).toBe("import pandas as pd\nprint('rows', 1000)")
    expect(sheet.cells[2].outputs[1]).toEqual(NOTEBOOK.cells[2]!.outputs![1])
    const first = await exportText(sheet.id)
    expect(first.disposition).toContain('filename="churn.ipynb"')
    expect(await nbformatProblems(first.text)).toBe('')
    const nb = JSON.parse(first.text)
    expect(nb).toMatchObject({ nbformat: 4, nbformat_minor: 5 })
    expect(nb.metadata).toEqual(NOTEBOOK.metadata)
    expect(nb.cells.map((c: any) => c.id)).toEqual(NOTEBOOK.cells.map((c) => c.id))
    expect(nb.cells[0].attachments).toEqual(NOTEBOOK.cells[0]!.attachments)
    expect(nb.cells[3].outputs).toEqual(NOTEBOOK.cells[3]!.outputs)

    const again = await importNotebook(first.text, { workstationId: ws, name: 'round trip' })
    expect(again.status).toBe(201)
    const second = await exportText(again.body.data.id)
    expect(second.text).toBe(first.text)

    // A sheet made here, edited, exports valid too (with the kernelspec of its kernel).
    const s = await create(alice, { kernel: 'shell' })
    await addCell(s.id, { version: 1, type: 'code', source: 'echo hi' })
    await addCell(s.id, { version: 2, type: 'markdown', source: '*notes*' })
    const made = await exportText(s.id)
    expect(await nbformatProblems(made.text)).toBe('')
    expect(JSON.parse(made.text).metadata.kernelspec.name).toBe('shell')
    // The check can fail: a cell without its source is not nbformat.
    const broken = JSON.parse(made.text)
    delete broken.cells[0].source
    expect(await nbformatProblems(JSON.stringify(broken))).not.toBe('')
  })

  test('import refuses what it cannot keep: not a notebook (422 with paths), too many cells (422), too large (413), outputs past the cap (413), bad fields (400), another user’s workstation (404)', async () => {
    const sheets = async () => (await t.db.sql<{ n: number }[]>`select count(*)::int as n from codesheets`)[0]!.n
    const before = await sheets()
    const notJson = await importNotebook('{"cells": [')
    expect(notJson.status).toBe(422)
    expect(notJson.body.details[0].field).toBe('file')
    const wrong = await importNotebook(JSON.stringify({ ...NOTEBOOK, cells: [{ ...NOTEBOOK.cells[1], outputs: [{ output_type: 'stream', name: 'stdin', text: 'x' }] }, { id: 'x', cell_type: 'heading', metadata: {}, source: '' }] }))
    expect(wrong.status).toBe(422)
    expect(wrong.body.error).toBe('The file is not a valid nbformat 4 notebook')
    expect(wrong.body.details.map((d: any) => d.field)).toEqual(['cells[0].outputs[0].name', 'cells[1].cell_type'])
    const many = Array.from({ length: LIMITS.maxCells + 1 }, (_, i) => ({ id: `c${i}`, cell_type: 'markdown', metadata: {}, source: '' }))
    const tooMany = await importNotebook(JSON.stringify({ ...NOTEBOOK, cells: many }))
    expect(tooMany.status).toBe(422)
    expect(tooMany.body.error).toContain('CODESHEET_MAX_CELLS')
    const huge = await importNotebook(JSON.stringify({ ...NOTEBOOK, metadata: { pad: 'x'.repeat(LIMITS.maxImportBytes) } }))
    expect(huge.status).toBe(413)
    expect(huge.body.error).toContain('CODESHEET_MAX_IMPORT_BYTES')
    const loud = { ...NOTEBOOK, cells: [{ ...NOTEBOOK.cells[1], outputs: [{ output_type: 'stream', name: 'stdout', text: 'y'.repeat(LIMITS.maxOutputBytes) }] }] }
    const tooLoud = await importNotebook(JSON.stringify(loud))
    expect(tooLoud.status).toBe(413)
    expect(tooLoud.body.details).toEqual([{ field: 'cells[0].outputs', message: `Must be at most ${LIMITS.maxOutputBytes} bytes` }])
    expect((await importNotebook(JSON.stringify(NOTEBOOK), {})).body.details).toEqual([{ field: 'workstationId', message: 'Required' }])
    expect((await importNotebook(JSON.stringify(NOTEBOOK), { workstationId: ws, color: 'red' })).status).toBe(400)
    expect((await importNotebook(JSON.stringify(NOTEBOOK), { workstationId: ws }, bob)).status).toBe(404)
    // Nothing was made by any of them.
    expect(await sheets()).toBe(before)
  })

  test('delete: the sheet, its cells and outputs go; then 404', async () => {
    const imported = (await importNotebook(JSON.stringify(NOTEBOOK))).body.data
    const r = await t.json('DELETE', `/api/codesheets/${imported.id}`, { token: alice.token, headers: { 'if-match': '"1"' } })
    expect(r.status).toBe(200)
    expect(r.body.data).toEqual({ id: imported.id, deleted: true })
    expect((await get(imported.id)).status).toBe(404)
    const rows = await t.db.sql<{ n: number }[]>`select count(*)::int as n from codesheet_outputs where sheet_id = ${imported.id}`
    expect(rows[0]!.n).toBe(0)
  })
})
