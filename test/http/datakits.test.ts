/**
 * DataKits through the real server: streamed multipart uploads, type detection, limits,
 * background profiling (awaited over /ws), preview, download, export, sandboxed query,
 * versions and diff, ownership and roles, quota, and the server's peak RSS while a large
 * body streams in.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, readdirSync, rmSync, utimesSync } from 'node:fs'
import { join } from 'node:path'
import { datakitsFeature } from '../../src/features/datakits.ts'
import { parseMultipart, sanitizeFilename, type MultipartEvent } from '../../src/http/upload.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { wsClient, type WsClient } from '../support/ws.ts'
import { gzipFile, NOT_DATASETS, sampleRows, tempDir, toDelimited, writeCsv, writeJsonArray, writeNdjson, writeParquet, writeTsv } from '../support/datasets.ts'
import { THREAD_MIN_BYTES } from '../../src/core/stream-hash.ts'
import { generatedCsv, multipartBytes, multipartStream, postUpload, type FormPart } from '../support/datakit-upload.ts'
import { heldGrowth } from '../support/memory.ts'
import { until } from '../support/until.ts'

type Account = Awaited<ReturnType<TestServer['user']>>

const dir = tempDir('quadrax-datakits-test-')
const uploadDir = join(dir.path, 'uploads')
const datakitDir = join(uploadDir, 'datakits')
const ROWS = sampleRows(200)
/** ROWS as CSV with too many fields on line 51. */
const BROKEN_CSV = (() => {
  const lines = toDelimited(ROWS).split('\n')
  lines[50] = '50,user 50,Lima,75,2024-01-23,false,note,extra,fields'
  return lines.join('\n')
})()

let t: TestServer
/** A second server with a tiny MAX_FILE_SIZE, for the limit at its exact edge. */
let small: TestServer
const SMALL_LIMIT = 64 * 1024
let alice: Account
let bob: Account
let aliceWs: WsClient

beforeAll(async () => {
  ;[t, small] = await Promise.all([
    testServer({ UPLOAD_DIR: uploadDir, MAX_FILE_SIZE: '1GB', DATAKIT_QUERY_TIMEOUT_MS: '5000' }, { features: [datakitsFeature] }),
    testServer({ UPLOAD_DIR: join(dir.path, 'small-uploads'), MAX_FILE_SIZE: String(SMALL_LIMIT) }, { features: [datakitsFeature] }),
  ])
  ;[alice, bob] = await Promise.all([t.user(), t.user()])
  aliceWs = await wsClient(t.url, alice.token)
  aliceWs.send({ op: 'subscribe', topic: `user:${alice.id}`, since: 0, id: 'alice' })
  await aliceWs.next((m) => m.op === 'ack' && m.id === 'alice')
}, 60_000)

afterAll(async () => {
  aliceWs?.close()
  await Promise.all([t?.stop(), small?.stop()])
  dir[Symbol.dispose]()
})

/** Files currently in a datakit directory. */
const stored = (d = datakitDir) => (existsSync(d) ? readdirSync(d).filter((n) => n !== 'exports') : [])
/** Uploaded files only, named by their UUID (Parquet copies, and their temporaries, come and go with profiling). */
const uploads = (d = datakitDir) => stored(d).filter((n) => /^[0-9a-f-]{36}$/.test(n))

const filePart = (filename: string, data: Uint8Array | string | (() => AsyncIterable<Uint8Array>), contentType = 'text/csv'): FormPart => ({
  name: 'dataset',
  filename,
  contentType,
  data,
})

async function upload(token: string, parts: FormPart[], server: TestServer = t) {
  return postUpload(server.url, token, await multipartBytes(parts))
}

/** Upload `data` as a new datakit and return its id (201 expected). */
async function create(token: string, name: string, filename: string, data: Uint8Array | string): Promise<string> {
  const r = await upload(token, [filePart(filename, data), { name: 'name', value: name }])
  if (r.status !== 201) throw new Error(`upload failed: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body.data.id
}

/** The first status event of `id` that is not PROCESSING (alice's own socket; other users bring theirs). */
async function settled(id: string, ws: WsClient = aliceWs, version?: number): Promise<any> {
  const ev = await ws.next(
    (m) => m.op === 'event' && m.type === 'datakit.status' && m.data.id === id && m.data.status !== 'PROCESSING' && (version === undefined || m.data.version === version),
    30_000,
  )
  return ev.data
}

async function ready(token: string, filename: string, data: Uint8Array | string, name = `kit ${filename}`, ws: WsClient = aliceWs): Promise<string> {
  const id = await create(token, name, filename, data)
  const s = await settled(id, ws)
  if (s.status !== 'READY') throw new Error(`datakit ${id} ${s.status}: ${s.error}`)
  return id
}


const bytesOf = async (path: string) => new Uint8Array(await Bun.file(path).arrayBuffer())
const sha256 = (b: Uint8Array | string) => new Bun.CryptoHasher('sha256').update(b).digest('hex')

describe('multipart parser', () => {
  async function events(body: Uint8Array, boundary: string, chunkSizes: (i: number) => number) {
    let pos = 0
    let i = 0
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        if (pos >= body.length) return c.close()
        const n = Math.max(1, chunkSizes(i++))
        c.enqueue(body.slice(pos, pos + n))
        pos += n
      },
    })
    const out: { name: string; filename?: string; data: string }[] = []
    for await (const ev of parseMultipart(stream, boundary) as AsyncIterable<MultipartEvent>) {
      if (ev.type === 'part') out.push({ name: ev.part.name, filename: ev.part.filename, data: '' })
      else if (ev.type === 'data') out[out.length - 1]!.data += Buffer.from(ev.bytes).toString('latin1')
    }
    return out
  }

  test('finds every delimiter whatever the chunk edges (1 byte, primes, random)', async () => {
    const boundary = 'XyZ-boundary'
    // The file holds things that look like the delimiter without being it.
    const tricky = 'a,b\r\n--XyZ-boundar\r\n\r\n--XyZ\r\n' + 'x'.repeat(5000) + '\r\n-'
    const { body } = await multipartBytes(
      [
        { name: 'dataset', filename: 'f.csv', contentType: 'text/csv', data: tricky },
        { name: 'name', value: 'Näme ✓' },
        { name: 'description', value: '' },
      ],
      boundary,
    )
    const expected = [
      { name: 'dataset', filename: 'f.csv', data: tricky },
      { name: 'name', filename: undefined, data: Buffer.from('Näme ✓').toString('latin1') },
      { name: 'description', filename: undefined, data: '' },
    ]
    let seed = 7
    const random = () => (seed = (seed * 48271) % 2147483647) % 97
    for (const sizes of [() => 1, () => 13, () => 4096, random, (i: number) => (i % 2 ? 1 : 31)]) {
      expect(await events(body, boundary, sizes)).toEqual(expected)
    }
  })

  test('a body cut short, garbage after a boundary or an unclosed header section is a 400', async () => {
    const { body } = await multipartBytes([{ name: 'name', value: 'x' }], 'bnd')
    const cut = body.slice(0, body.length - 8)
    await expect(events(cut, 'bnd', () => 7)).rejects.toMatchObject({ status: 400 })
    const garbage = new TextEncoder().encode('--bndJUNK\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n--bnd--')
    await expect(events(garbage, 'bnd', () => 3)).rejects.toMatchObject({ status: 400 })
    const headers = new TextEncoder().encode('--bnd\r\nContent-Disposition: form-data; name="a"' + 'x'.repeat(20_000))
    await expect(events(headers, 'bnd', () => 1000)).rejects.toMatchObject({ status: 400 })
  })

  test('file names are reduced to a safe last segment', () => {
    expect(sanitizeFilename('../../etc/passwd')).toBe('passwd')
    expect(sanitizeFilename('/tmp/abs.csv')).toBe('abs.csv')
    expect(sanitizeFilename('..\\..\\windows\\win.ini')).toBe('win.ini')
    expect(sanitizeFilename('C:evil.csv')).toBe('evil.csv')
    expect(sanitizeFilename('..')).toBe('dataset')
    expect(sanitizeFilename('a\u0000b\r\n.csv')).toBe('ab.csv')
    expect(sanitizeFilename('x'.repeat(300) + '.csv')).toHaveLength(255)
  })
})

describe('documentation', () => {
  test('every DataKit route is in the OpenAPI document, the upload as multipart/form-data', async () => {
    const doc = await t.json('GET', '/swagger/json')
    expect(doc.status).toBe(200)
    const paths = Object.keys(doc.body.paths).filter((p) => p.startsWith('/api/datakits'))
    expect(paths.sort()).toEqual(
      [
        '/api/datakits',
        '/api/datakits/upload',
        '/api/datakits/storage',
        '/api/datakits/{id}',
        '/api/datakits/{id}/preview',
        '/api/datakits/{id}/download',
        '/api/datakits/{id}/export',
        '/api/datakits/{id}/query',
        '/api/datakits/{id}/query/export',
        '/api/datakits/{id}/versions',
        '/api/datakits/{id}/versions/{n}/diff',
      ].sort(),
    )
    const upload = doc.body.paths['/api/datakits/upload'].post
    expect(Object.keys(upload.requestBody.content)).toEqual(['multipart/form-data'])
    expect(upload.requestBody.content['multipart/form-data'].schema.properties.dataset).toEqual({ type: 'string', format: 'binary' })
    expect(upload.security).toEqual([{ bearerAuth: [] }])
  })
})

describe('upload', () => {
  test("the guide's curl command works unchanged", async () => {
    using work = tempDir('quadrax-curl-')
    await writeCsv(work.file('dataset.csv'), ROWS)
    const proc = Bun.spawn(
      [
        'curl', '-s', '-X', 'POST',
        '-H', `Authorization: Bearer ${alice.token}`,
        '-F', 'dataset=@dataset.csv',
        '-F', 'name=Customer Data',
        '-F', 'description=Customer analytics dataset',
        `${t.url}/api/datakits/upload`,
      ],
      { cwd: work.path, stdout: 'pipe', stderr: 'pipe' },
    )
    const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited])
    expect(code).toBe(0)
    const body = JSON.parse(out)
    expect(body.success).toBe(true)
    const d = body.data
    expect(d).toMatchObject({ name: 'Customer Data', description: 'Customer analytics dataset', status: 'PROCESSING', ownerId: alice.id, currentVersion: 1, profile: null })
    expect(d.latestVersion).toMatchObject({ version: 1, status: 'PROCESSING', format: 'csv', originalName: 'dataset.csv', sizeBytes: Bun.file(work.file('dataset.csv')).size })
    expect(d.latestVersion.sha256).toBe(sha256(await bytesOf(work.file('dataset.csv'))))

    const s = await settled(d.id)
    expect(s).toMatchObject({ id: d.id, version: 1, status: 'READY', rowCount: 200, columnCount: 7 })
    const got = await t.json('GET', `/api/datakits/${d.id}`, { token: alice.token })
    expect(got.status).toBe(200)
    expect(got.body.data.status).toBe('READY')
    const profile = got.body.data.profile
    expect(profile.rowCount).toBe(200)
    expect(profile.columns.map((c: any) => [c.name, c.kind])).toEqual([
      ['id', 'number'],
      ['name', 'text'],
      ['city', 'text'],
      ['amount', 'number'],
      ['joined', 'temporal'],
      ['active', 'boolean'],
      ['note', 'text'],
    ])
    const id = profile.columns[0]
    expect(id).toMatchObject({ min: 1, max: 200, mean: 100.5, nullPercent: 0 })
    const city = profile.columns[2]
    expect(city.topValues).toEqual([
      { value: 'Kyoto', count: 50 },
      { value: 'Lima', count: 50 },
      { value: 'Lisbon', count: 50 },
      { value: 'Oslo', count: 50 },
    ])
    expect(profile.columns[6].nullPercent).toBe(20)
  })

  test('every accepted type is detected from its content and profiled', async () => {
    using work = tempDir('quadrax-types-')
    const files: [string, string, string][] = [
      [await writeCsv(work.file('a.csv'), ROWS), 'csv', 'a.csv'],
      [await writeTsv(work.file('a.tsv'), ROWS), 'tsv', 'a.tsv'],
      [await writeJsonArray(work.file('a.json'), ROWS), 'json', 'a.json'],
      [await writeNdjson(work.file('a.ndjson'), ROWS), 'ndjson', 'a.ndjson'],
      [await writeParquet(work.file('a.parquet'), ROWS), 'parquet', 'a.parquet'],
      [await gzipFile(work.file('a.csv'), work.file('a.csv.gz')), 'csv.gz', 'a.csv.gz'],
      [await gzipFile(work.file('a.ndjson'), work.file('a.ndjson.gz')), 'ndjson.gz', 'a.ndjson.gz'],
      // The name says nothing: a TSV called .csv is still a TSV.
      [work.file('a.tsv'), 'tsv', 'misnamed.csv'],
    ]
    await Promise.all(
      files.map(async ([path, format, name]) => {
        const id = await ready(alice.token, name, await bytesOf(path))
        const d = (await t.json('GET', `/api/datakits/${id}`, { token: alice.token })).body.data
        expect({ name, format: d.latestVersion.format, rows: d.profile.rowCount, columns: d.profile.columns.map((c: any) => c.name) }).toEqual({
          name,
          format,
          rows: 200,
          columns: ['id', 'name', 'city', 'amount', 'joined', 'active', 'note'],
        })
      }),
    )
  })

  test('a malformed CSV ends FAILED with the line where it broke', async () => {
    const id = await create(alice.token, 'broken', 'broken.csv', BROKEN_CSV)
    const s = await settled(id)
    expect(s.status).toBe('FAILED')
    expect(s.errorLine).toBe(51)
    expect(s.error).toContain('line 51')
    const d = (await t.json('GET', `/api/datakits/${id}`, { token: alice.token })).body.data
    expect(d).toMatchObject({ status: 'FAILED', error: s.error, profile: null })
    expect(d.latestVersion).toMatchObject({ status: 'FAILED', errorLine: 51 })
    // Nothing to read from a version that never became READY.
    const p = await t.json('GET', `/api/datakits/${id}/preview`, { token: alice.token })
    expect(p.status).toBe(409)
    expect(p.body.error).toContain('line 51')
  })

  test('a file that is not a dataset is a 415 naming the accepted types, whatever its name, and is not kept', async () => {
    const before = uploads()
    for (const [name, bytes] of [
      ['data.csv', NOT_DATASETS.png],
      ['data.csv', NOT_DATASETS.zip],
      ['data.json', NOT_DATASETS.elf],
      ['data.tsv', NOT_DATASETS.random],
    ] as const) {
      const r = await upload(alice.token, [filePart(name, bytes, 'text/csv'), { name: 'name', value: 'disguised' }])
      expect(r.status).toBe(415)
      expect(r.body.success).toBe(false)
      expect(r.body.error).toContain('Accepted types: CSV, TSV, JSON')
    }
    expect(uploads()).toEqual(before)
  })

  test('a body that is not multipart/form-data is a 415; a missing file or name, or an unknown field, a 400', async () => {
    const json = await fetch(`${t.url}/api/datakits/upload`, { method: 'POST', headers: { authorization: `Bearer ${alice.token}`, 'content-type': 'application/json' }, body: '{}' })
    expect(json.status).toBe(415)
    expect(((await json.json()) as { error: string }).error).toBe('Content-Type must be multipart/form-data')
    const noFile = await upload(alice.token, [{ name: 'name', value: 'x' }])
    expect(noFile.status).toBe(400)
    expect(noFile.body.details[0].field).toBe('dataset')
    const noName = await upload(alice.token, [filePart('a.csv', 'a,b\n1,2\n')])
    expect(noName).toMatchObject({ status: 400, body: { details: [{ field: 'name', message: 'Required' }] } })
    const unknown = await upload(alice.token, [filePart('a.csv', 'a,b\n1,2\n'), { name: 'name', value: 'x' }, { name: 'ownerId', value: bob.id }])
    expect(unknown).toMatchObject({ status: 400, body: { details: [{ field: 'ownerId', message: 'Unknown field' }] } })
    const unauth = await postUpload(t.url, undefined, await multipartBytes([filePart('a.csv', 'a,b\n1,2\n'), { name: 'name', value: 'x' }]))
    expect(unauth.status).toBe(401)
  })

  test('MAX_FILE_SIZE: exactly the limit is accepted, one byte more is a 413 and leaves no file', async () => {
    const user = await small.user()
    const smallDir = join(dir.path, 'small-uploads', 'datakits')
    const line = 'x,y\n'
    const exact = 'a,b\n' + line.repeat((SMALL_LIMIT - 4) / line.length)
    expect(exact.length).toBe(SMALL_LIMIT)
    const ok = await upload(user.token, [filePart('exact.csv', exact), { name: 'name', value: 'exact' }], small)
    expect(ok.status).toBe(201)
    expect(ok.body.data.latestVersion.sizeBytes).toBe(SMALL_LIMIT)
    const before = uploads(smallDir)
    // With a Content-Length (within the framing allowance, so the bytes are counted as they stream)…
    const over = await upload(user.token, [filePart('over.csv', exact + '\n'), { name: 'name', value: 'over' }], small)
    expect(over.status).toBe(413)
    expect(over.body.error).toContain('MAX_FILE_SIZE')
    expect(over.body.details[0]).toEqual({ field: 'dataset', message: `Must be at most ${SMALL_LIMIT} bytes` })
    // …and chunked, with no length announced at all.
    const chunked = await postUpload(small.url, user.token, multipartStream([filePart('big.csv', generatedCsv(10 * SMALL_LIMIT)), { name: 'name', value: 'big' }]))
    expect(chunked.status).toBe(413)
    // A declared length far past the limit is refused before the body is read.
    const declared = await fetch(`${small.url}/api/datakits/upload`, {
      method: 'POST',
      headers: { authorization: `Bearer ${user.token}`, 'content-type': 'multipart/form-data; boundary=b', 'content-length': String(10 * 1024 * 1024) },
      body: new Uint8Array(10 * 1024 * 1024),
    })
    expect(declared.status).toBe(413)
    expect(uploads(smallDir)).toEqual(before)
    const list = await small.json('GET', '/api/datakits', { token: user.token })
    expect(list.body.data.map((d: any) => d.name)).toEqual(['exact'])
  })

  test('a client that goes away mid-upload leaves no file and no datakit', async () => {
    const before = new Set(uploads())
    const ac = new AbortController()
    let sent = 0
    const source = async function* () {
      yield new TextEncoder().encode('a,b\n')
      for (;;) {
        const chunk = new TextEncoder().encode('1,2\n'.repeat(16 * 1024))
        sent += chunk.byteLength
        if (sent > 4 * 1024 * 1024) ac.abort()
        yield chunk
      }
    }
    const form = multipartStream([filePart('gone.csv', source), { name: 'name', value: 'Gone' }])
    const res = fetch(`${t.url}/api/datakits/upload`, {
      method: 'POST',
      headers: { authorization: `Bearer ${alice.token}`, 'content-type': form.contentType },
      body: form.body,
      signal: ac.signal,
      duplex: 'half',
    } as RequestInit)
    await expect(res).rejects.toThrow()
    // The server notices the body ended early, removes the partial file and records nothing.
    await until(() => uploads().every((n) => before.has(n)), 'the partial upload to be removed', 10_000)
    const [n] = await t.db.sql<{ n: number }[]>`select count(*)::int as n from datakits where name = 'Gone'`
    expect(n!.n).toBe(0)
  })

  test('a file name with ../ or an absolute path never escapes UPLOAD_DIR and is kept only as sanitised metadata', async () => {
    const names = ['../../../../tmp/qx-escape.csv', '/tmp/qx-absolute.csv', '..\\..\\qx-win.csv', '../' + 'datakits/../x.csv']
    const before = new Set(stored())
    for (const filename of names) {
      const r = await upload(alice.token, [filePart(filename, 'a,b\n1,2\n'), { name: 'name', value: 'traversal' }])
      expect(r.status).toBe(201)
      const v = r.body.data.latestVersion
      expect(v.originalName).toBe(sanitizeFilename(filename))
      expect(v.originalName).not.toContain('/')
      expect(v.originalName).not.toContain('\\')
      const added = stored().filter((n) => !before.has(n))
      // The only new files are ours, named by UUID (plus the Parquet copy, written under a temporary name first).
      for (const n of added) expect(n).toMatch(/^[0-9a-f-]{36}(\.parquet(\.tmp-[0-9a-f-]{36})?)?$/)
      for (const n of added) before.add(n)
      const dl = await fetch(`${t.url}/api/datakits/${r.body.data.id}/download`, { headers: { authorization: `Bearer ${alice.token}` } })
      expect(dl.status).toBe(200)
      expect(dl.headers.get('content-disposition')).toBe(`attachment; filename="${v.originalName}"; filename*=UTF-8''${encodeURIComponent(v.originalName)}`)
      expect(await dl.text()).toBe('a,b\n1,2\n')
    }
    expect(existsSync('/tmp/qx-escape.csv')).toBe(false)
    expect(existsSync('/tmp/qx-absolute.csv')).toBe(false)
    expect(existsSync(join(uploadDir, 'qx-win.csv'))).toBe(false)
    expect(existsSync(join(dir.path, 'qx-win.csv'))).toBe(false)
  })
})

describe('reading', () => {
  let id: string
  beforeAll(async () => {
    id = await ready(alice.token, 'people.csv', toDelimited(ROWS), 'People')
  }, 30_000)

  test('preview pages through rows in file order', async () => {
    const r = await t.json('GET', `/api/datakits/${id}/preview?limit=3&offset=10`, { token: alice.token })
    expect(r.status).toBe(200)
    expect(r.body.data).toMatchObject({ version: 1, offset: 10, limit: 3, totalRows: 200 })
    expect(r.body.data.rows.map((x: any) => x.id)).toEqual([11, 12, 13])
    expect(r.body.data.columns[0]).toEqual({ name: 'id', type: 'BIGINT' })
    const bad = await t.json('GET', `/api/datakits/${id}/preview?limit=5000`, { token: alice.token })
    expect(bad.status).toBe(400)
  })

  test('download streams the original bytes with a Content-Disposition and the checksum', async () => {
    const res = await fetch(`${t.url}/api/datakits/${id}/download`, { headers: { authorization: `Bearer ${alice.token}` } })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toStartWith('text/csv')
    expect(res.headers.get('content-disposition')).toBe(`attachment; filename="people.csv"; filename*=UTF-8''people.csv`)
    expect(res.headers.get('x-content-type-options')).toBe('nosniff')
    const body = await res.text()
    expect(body).toBe(toDelimited(ROWS))
    expect(res.headers.get('x-content-sha256')).toBe(sha256(body))
  })

  test('export as CSV neutralises formula cells; JSON and Parquet export too', async () => {
    const rows = [
      { id: 1, label: '=HYPERLINK("http://evil.example/x","click")', amount: -5 },
      { id: 2, label: '+1+2', amount: 3.5 },
      { id: 3, label: '@SUM(A1)', amount: 0 },
      { id: 4, label: 'plain', amount: 1 },
    ]
    const kit = await ready(alice.token, 'formulas.csv', toDelimited(rows), 'Formulas')
    const csv = await fetch(`${t.url}/api/datakits/${kit}/export?format=csv`, { headers: { authorization: `Bearer ${alice.token}` } })
    expect(csv.status).toBe(200)
    expect(csv.headers.get('content-disposition')).toContain('filename="Formulas-v1.csv"')
    const text = await csv.text()
    expect(text.split('\n').slice(0, 5)).toEqual([
      'id,label,amount',
      `1,"'=HYPERLINK(""http://evil.example/x"",""click"")",-5.0`,
      "2,'+1+2,3.5",
      "3,'@SUM(A1),0.0",
      '4,plain,1.0',
    ])
    const json = await fetch(`${t.url}/api/datakits/${kit}/export?format=json`, { headers: { authorization: `Bearer ${alice.token}` } })
    expect(json.headers.get('content-type')).toStartWith('application/json')
    expect(JSON.parse(await json.text())[0]).toEqual({ id: 1, label: rows[0]!.label, amount: -5 })
    const pq = await fetch(`${t.url}/api/datakits/${kit}/export?format=parquet`, { headers: { authorization: `Bearer ${alice.token}` } })
    const bytes = new Uint8Array(await pq.arrayBuffer())
    expect(new TextDecoder().decode(bytes.slice(0, 4))).toBe('PAR1')
    expect(bytes.length).toBeGreaterThan(100)
    // Export files are removed once sent (sendfile: as soon as the server holds them open).
    await until(() => readdirSync(join(datakitDir, 'exports')).length === 0, 'the export files to be removed')
  })

  test('query runs read-only SQL over `data`', async () => {
    const r = await t.json('POST', `/api/datakits/${id}/query`, { token: alice.token, body: { sql: 'SELECT city, count(*) AS n, sum(amount) AS total FROM data GROUP BY city ORDER BY city' } })
    expect(r.status).toBe(200)
    expect(r.body.data).toMatchObject({ version: 1, rowCount: 4, truncated: false })
    expect(r.body.data.rows[0]).toEqual({ city: 'Kyoto', n: 50, total: ROWS.filter((x) => x.city === 'Kyoto').reduce((s, x) => s + x.amount, 0) })
  })

  test('queries reaching outside the dataset are refused with 422 and DuckDB’s message', async () => {
    const attempts = [
      "SELECT * FROM read_csv('/etc/passwd')",
      "SELECT * FROM '/etc/passwd'",
      "COPY (SELECT * FROM data) TO '/tmp/qx-stolen.csv'",
      "ATTACH '/tmp/qx-attach.db' AS x",
      'INSTALL httpfs',
      'LOAD httpfs',
      "SELECT * FROM read_csv('https://example.com/data.csv')",
      "SELECT * FROM 'http://127.0.0.1:1/x.parquet'",
      'SELECT 1; SELECT 2',
      "SET enable_external_access = true",
      'CREATE TABLE t AS SELECT 1',
    ]
    for (const sql of attempts) {
      const r = await t.json('POST', `/api/datakits/${id}/query`, { token: alice.token, body: { sql } })
      expect({ sql, status: r.status }).toEqual({ sql, status: 422 })
      expect(r.body.error.length).toBeGreaterThan(0)
      expect(r.body.error).not.toContain(datakitDir)
    }
    expect(existsSync('/tmp/qx-stolen.csv')).toBe(false)
    expect(existsSync('/tmp/qx-attach.db')).toBe(false)
    const syntax = await t.json('POST', `/api/datakits/${id}/query`, { token: alice.token, body: { sql: 'SELEKT 1' } })
    expect(syntax.status).toBe(422)
    expect(syntax.body.error).toContain('syntax error')
  })

  test('list: search by name, filter by status, cursor pagination, cache with ETag', async () => {
    const user = await t.user()
    const ws = await wsClient(t.url, user.token)
    ws.send({ op: 'subscribe', topic: `user:${user.id}`, since: 0 })
    try {
      const ids: string[] = []
      for (const name of ['Sales 2023', 'Sales 2024', 'Inventory', 'sales archive']) ids.push(await ready(user.token, 'x.csv', 'a,b\n1,2\n', name, ws))
      const broken = await create(user.token, 'Sales broken', 'y.csv', BROKEN_CSV)
      expect((await settled(broken, ws)).status).toBe('FAILED')

      const all = await t.json('GET', '/api/datakits?limit=2', { token: user.token })
      expect(all.body.data.map((d: any) => d.name)).toEqual(['Sales 2023', 'Sales 2024'])
      const page2 = await t.json('GET', `/api/datakits?limit=2&cursor=${all.body.meta.nextCursor}`, { token: user.token })
      expect(page2.body.data.map((d: any) => d.name)).toEqual(['Inventory', 'sales archive'])
      const page3 = await t.json('GET', `/api/datakits?limit=2&cursor=${page2.body.meta.nextCursor}`, { token: user.token })
      expect(page3.body.data.map((d: any) => d.name)).toEqual(['Sales broken'])
      expect(page3.body.meta.nextCursor).toBeNull()

      const sales = await t.json('GET', '/api/datakits?search=sales', { token: user.token })
      expect(sales.body.data.map((d: any) => d.name)).toEqual(['Sales 2023', 'Sales 2024', 'sales archive', 'Sales broken'])
      const failed = await t.json('GET', '/api/datakits?status=FAILED', { token: user.token })
      expect(failed.body.data.map((d: any) => d.id)).toEqual([broken])
      const readyOnes = await t.json('GET', '/api/datakits?status=READY&search=SALES', { token: user.token })
      expect(readyOnes.body.data.map((d: any) => d.name)).toEqual(['Sales 2023', 'Sales 2024', 'sales archive'])

      const first = await t.call('GET', '/api/datakits', { token: user.token })
      const etag = first.headers.get('etag')!
      expect(first.headers.get('x-cache')).toBe('MISS')
      const again = await t.call('GET', '/api/datakits', { token: user.token, headers: { 'if-none-match': etag } })
      expect(again.status).toBe(304)
      // A write drops the cached list.
      await t.json('PATCH', `/api/datakits/${ids[2]}`, { token: user.token, body: { name: 'Inventory Q1' } })
      const after = await t.json('GET', '/api/datakits', { token: user.token })
      expect(after.headers.get('x-cache')).toBe('MISS')
      expect(after.body.data.map((d: any) => d.name)).toContain('Inventory Q1')
    } finally {
      ws.close()
    }
  })
})

describe('changes and versions', () => {
  test('PATCH changes name and description; unknown fields are refused', async () => {
    const id = await create(alice.token, 'Old name', 'p.csv', 'a,b\n1,2\n')
    const r = await t.json('PATCH', `/api/datakits/${id}`, { token: alice.token, body: { name: 'New name', description: 'Now described' } })
    expect(r.status).toBe(200)
    expect(r.body.data).toMatchObject({ id, name: 'New name', description: 'Now described' })
    const ev = await aliceWs.next((m) => m.op === 'event' && m.type === 'datakit.updated' && m.data.id === id)
    expect(ev.data).toEqual({ id, name: 'New name', description: 'Now described' })
    expect((await t.json('GET', `/api/datakits/${id}`, { token: alice.token })).body.data.name).toBe('New name')
    const bad = await t.json('PATCH', `/api/datakits/${id}`, { token: alice.token, body: { ownerId: bob.id } })
    expect(bad.status).toBe(400)
    const empty = await t.json('PATCH', `/api/datakits/${id}`, { token: alice.token, body: {} })
    expect(empty.status).toBe(400)
  })

  test('DELETE removes the datakit, its versions and their files', async () => {
    const id = await ready(alice.token, 'd.csv', toDelimited(ROWS), 'to delete')
    const v2 = await upload(alice.token, [filePart('d2.csv', toDelimited(ROWS.slice(0, 10))), { name: 'datakitId', value: id }])
    expect(v2.status).toBe(201)
    await settled(id, aliceWs, 2)
    const rows = await t.db.sql<{ fileId: string }[]>`select file_id as "fileId" from datakit_versions where datakit_id = ${id}`
    const fileIds = new Set(rows.map((r) => r.fileId))
    expect(fileIds.size).toBe(2)
    for (const f of fileIds) {
      expect(existsSync(join(datakitDir, f))).toBe(true)
      expect(existsSync(join(datakitDir, `${f}.parquet`))).toBe(true)
    }
    const r = await t.json('DELETE', `/api/datakits/${id}`, { token: alice.token })
    expect(r).toMatchObject({ status: 200, body: { success: true, data: { id } } })
    await aliceWs.next((m) => m.op === 'event' && m.type === 'datakit.deleted' && m.data.id === id)
    expect((await t.json('GET', `/api/datakits/${id}`, { token: alice.token })).status).toBe(404)
    // Files go in the delete's background work: await their removal (bounded).
    const left = () => stored().filter((n) => fileIds.has(n.replace(/\.parquet$/, '')))
    await until(() => left().length === 0, 'the files to be removed', 10_000)
    expect(left()).toEqual([])
  })

  test('a new version with datakitId gets its own profile; the diff shows added, removed and retyped columns', async () => {
    const v1rows = ROWS.map(({ id, name, city, amount }) => ({ id, name, city, amount }))
    const id = await ready(alice.token, 'v1.csv', toDelimited(v1rows), 'Versioned')
    const v2rows = ROWS.slice(0, 150).map(({ id, name, amount, active }) => ({ id, name, amount: `${amount} EUR`, active }))
    const r = await upload(alice.token, [filePart('v2.csv', toDelimited(v2rows)), { name: 'datakitId', value: id }, { name: 'description', value: 'second cut' }])
    expect(r.status).toBe(201)
    expect(r.body.data).toMatchObject({ id, name: 'Versioned', description: 'second cut', currentVersion: 2, status: 'PROCESSING' })
    const s = await settled(id, aliceWs, 2)
    expect(s).toMatchObject({ version: 2, status: 'READY', rowCount: 150 })

    const versions = await t.json('GET', `/api/datakits/${id}/versions`, { token: alice.token })
    expect(versions.body.data.map((v: any) => [v.version, v.status, v.rowCount, v.originalName])).toEqual([
      [2, 'READY', 150, 'v2.csv'],
      [1, 'READY', 200, 'v1.csv'],
    ])
    const diff = await t.json('GET', `/api/datakits/${id}/versions/2/diff`, { token: alice.token })
    expect(diff.status).toBe(200)
    expect(diff.body.data).toEqual({
      from: 1,
      to: 2,
      added: [{ name: 'active', type: 'BOOLEAN' }],
      removed: [{ name: 'city', type: 'VARCHAR' }],
      retyped: [{ name: 'amount', from: 'DOUBLE', to: 'VARCHAR' }],
      rowCount: { from: 200, to: 150, change: -50 },
    })
    // Older versions stay readable.
    const old = await t.json('GET', `/api/datakits/${id}/preview?version=1&limit=1`, { token: alice.token })
    expect(old.body.data.rows).toEqual([{ id: 1, name: 'user 1', city: 'Lisbon', amount: 1.5 }])
    const latest = await t.json('GET', `/api/datakits/${id}/preview?limit=1`, { token: alice.token })
    expect(latest.body.data).toMatchObject({ version: 2, rows: [{ id: 1, name: 'user 1', amount: '1.5 EUR', active: true }] })
    expect((await t.json('GET', `/api/datakits/${id}/versions/1/diff`, { token: alice.token })).status).toBe(400)
    expect((await t.json('GET', `/api/datakits/${id}/versions/9/diff`, { token: alice.token })).status).toBe(404)
    const reverse = await t.json('GET', `/api/datakits/${id}/versions/1/diff?against=2`, { token: alice.token })
    expect(reverse.body.data.rowCount).toEqual({ from: 150, to: 200, change: 50 })
  })

  test('a failed new version leaves the previous one readable', async () => {
    const id = await ready(alice.token, 'ok.csv', 'a,b\n1,2\n3,4\n', 'Keeps v1')
    const r = await upload(alice.token, [filePart('bad.csv', BROKEN_CSV), { name: 'datakitId', value: id }])
    expect(r.status).toBe(201)
    expect((await settled(id, aliceWs, 2)).status).toBe('FAILED')
    const d = (await t.json('GET', `/api/datakits/${id}`, { token: alice.token })).body.data
    expect(d).toMatchObject({ status: 'FAILED', currentVersion: 2 })
    const p = await t.json('GET', `/api/datakits/${id}/preview`, { token: alice.token })
    expect(p.body.data).toMatchObject({ version: 1, totalRows: 2 })
    expect((await t.json('GET', `/api/datakits/${id}/preview?version=2`, { token: alice.token })).status).toBe(409)
  })
})

describe('access', () => {
  let id: string
  beforeAll(async () => {
    id = await ready(alice.token, 'private.csv', toDelimited(ROWS.slice(0, 20)), 'Private')
  }, 30_000)

  test('another user gets 404 on every route, and cannot watch its topic', async () => {
    const tries: [string, string, unknown?][] = [
      ['GET', `/api/datakits/${id}`],
      ['PATCH', `/api/datakits/${id}`, { name: 'mine now' }],
      ['DELETE', `/api/datakits/${id}`],
      ['GET', `/api/datakits/${id}/preview`],
      ['GET', `/api/datakits/${id}/download`],
      ['GET', `/api/datakits/${id}/export?format=csv`],
      ['POST', `/api/datakits/${id}/query`, { sql: 'SELECT 1' }],
      ['POST', `/api/datakits/${id}/query/export`, { sql: 'SELECT 1' }],
      ['GET', `/api/datakits/${id}/versions`],
      ['GET', `/api/datakits/${id}/versions/1/diff?against=1`],
    ]
    for (const [method, path, body] of tries) {
      const r = await t.json(method, path, { token: bob.token, body })
      expect({ method, path, status: r.status, error: r.body?.error }).toEqual({ method, path, status: 404, error: 'DataKit not found' })
    }
    const version = await upload(bob.token, [filePart('x.csv', 'a,b\n1,2\n'), { name: 'datakitId', value: id }])
    expect(version.status).toBe(404)
    const list = await t.json('GET', '/api/datakits', { token: bob.token })
    expect(list.body.data.map((d: any) => d.id)).not.toContain(id)
    const storage = await t.json('GET', `/api/datakits/storage?userId=${alice.id}`, { token: bob.token })
    expect(storage.status).toBe(404)

    const ws = await wsClient(t.url, bob.token)
    try {
      ws.send({ op: 'subscribe', topic: `datakit:${id}`, id: 'x' })
      const answer = await ws.next((m) => m.id === 'x' || m.op === 'error')
      expect(answer.op).toBe('error')
    } finally {
      ws.close()
    }
    // Nothing changed.
    expect((await t.json('GET', `/api/datakits/${id}`, { token: alice.token })).body.data.name).toBe('Private')
  })

  test('an admin may read every datakit', async () => {
    const admin = await t.admin()
    const r = await t.json('GET', `/api/datakits/${id}`, { token: admin.token })
    expect(r.status).toBe(200)
    const list = await t.json('GET', `/api/datakits?ownerId=${alice.id}&search=Private`, { token: admin.token })
    expect(list.body.data.map((d: any) => d.id)).toEqual([id])
  })

  test('a VIEWER cannot upload, change or delete, but reads their own', async () => {
    const viewer = await t.user()
    const ws = await wsClient(t.url, viewer.token)
    ws.send({ op: 'subscribe', topic: `user:${viewer.id}`, since: 0 })
    try {
      const own = await ready(viewer.token, 'v.csv', 'a,b\n1,2\n', 'Viewer kit', ws)
      await t.db.sql`update users set role = 'VIEWER' where id = ${viewer.id}`
      await t.server.http.auth.registry.invalidateUser(viewer.id)
      const before = uploads()
      const r = await upload(viewer.token, [filePart('x.csv', 'a,b\n1,2\n'), { name: 'name', value: 'nope' }])
      expect(r).toMatchObject({ status: 403, body: { success: false, error: 'A VIEWER is read-only: this needs the USER or ADMIN role' } })
      expect(uploads()).toEqual(before)
      expect((await t.json('PATCH', `/api/datakits/${own}`, { token: viewer.token, body: { name: 'x' } })).status).toBe(403)
      expect((await t.json('DELETE', `/api/datakits/${own}`, { token: viewer.token })).status).toBe(403)
      expect((await t.json('GET', `/api/datakits/${own}`, { token: viewer.token })).status).toBe(200)
      expect((await t.json('GET', `/api/datakits/${own}/preview`, { token: viewer.token })).status).toBe(200)
      expect((await t.json('POST', `/api/datakits/${own}/query`, { token: viewer.token, body: { sql: 'SELECT count(*) AS n FROM data' } })).body.data.rows).toEqual([{ n: 1 }])
    } finally {
      ws.close()
    }
  })
})

describe('storage quota', () => {
  test('an upload past the quota is a 413 with used and allowed bytes, and leaves no file', async () => {
    const user = await t.user()
    const admin = await t.admin()
    const ws = await wsClient(t.url, user.token)
    ws.send({ op: 'subscribe', topic: `user:${user.id}`, since: 0 })
    try {
      await ready(user.token, 'q.csv', toDelimited(ROWS), 'Quota 1', ws)
      const usage = (await t.json('GET', '/api/datakits/storage', { token: user.token })).body.data
      expect(usage.usedBytes).toBeGreaterThan(toDelimited(ROWS).length) // upload + Parquet copy
      expect(usage).toMatchObject({ userId: user.id, quotaBytes: t.config.datakits.storageQuotaBytes, overridden: false })

      const set = await t.json('PUT', `/api/datakits/storage?userId=${user.id}`, { token: admin.token, body: { quotaBytes: usage.usedBytes + 1000 } })
      expect(set.body.data).toMatchObject({ quotaBytes: usage.usedBytes + 1000, remainingBytes: 1000, overridden: true })
      expect((await t.json('PUT', `/api/datakits/storage?userId=${user.id}`, { token: user.token, body: { quotaBytes: 1e12 } })).status).toBe(403)

      const before = uploads()
      const fits = await upload(user.token, [filePart('small.csv', 'a\n' + '1\n'.repeat(400)), { name: 'name', value: 'fits' }])
      expect(fits.status).toBe(201)
      const over = await upload(user.token, [filePart('big.csv', 'a\n' + '1\n'.repeat(400)), { name: 'name', value: 'over' }])
      expect(over.status).toBe(413)
      expect(over.body.error).toStartWith('Storage quota exceeded')
      const details = Object.fromEntries(over.body.details.map((d: any) => [d.field, Number(d.message)]))
      expect(details.allowedBytes).toBe(usage.usedBytes + 1000)
      expect(details.usedBytes).toBeGreaterThanOrEqual(usage.usedBytes + 802)
      // The streamed one, without Content-Length, is stopped while it streams.
      const streamed = await postUpload(t.url, user.token, multipartStream([filePart('s.csv', generatedCsv(1 << 20)), { name: 'name', value: 's' }]))
      expect(streamed.status).toBe(413)
      expect(uploads().filter((n) => !before.includes(n))).toHaveLength(1) // only "fits"

      await t.json('PUT', `/api/datakits/storage?userId=${user.id}`, { token: admin.token, body: { quotaBytes: null } })
      expect((await t.json('GET', `/api/datakits/storage?userId=${user.id}`, { token: admin.token })).body.data.overridden).toBe(false)
    } finally {
      ws.close()
    }
  })
})

describe('boot', () => {
  test('versions left PROCESSING are profiled again, and old orphaned files are swept', async () => {
    // What a node that stopped mid-profile leaves behind: a PROCESSING version with its file.
    const id = crypto.randomUUID()
    const fileId = crypto.randomUUID()
    await Bun.write(join(datakitDir, fileId), toDelimited(ROWS))
    await t.db.sql.begin(async (tx) => {
      await tx`insert into datakits (id, owner_id, name, status, current_version) values (${id}, ${alice.id}, 'Interrupted', 'PROCESSING', 1)`
      await tx`insert into datakit_versions (datakit_id, version, owner_id, uploaded_by, status, format, original_name, file_id, size_bytes, sha256)
               values (${id}, 1, ${alice.id}, ${alice.id}, 'PROCESSING', 'csv', 'i.csv', ${fileId}, ${toDelimited(ROWS).length}, ${sha256(toDelimited(ROWS))})`
    })
    // Files no version names: one old (a crash long ago), one fresh (an upload in progress).
    const old = join(datakitDir, crypto.randomUUID())
    const oldTmp = join(datakitDir, `${crypto.randomUUID()}.parquet.tmp-${crypto.randomUUID()}`)
    const fresh = join(datakitDir, crypto.randomUUID())
    await Bun.write(old, 'x')
    await Bun.write(oldTmp, 'x')
    await Bun.write(fresh, 'y')
    const twoHoursAgo = new Date(Date.now() - 2 * 3600_000)
    utimesSync(old, twoHoursAgo, twoHoursAgo)
    utimesSync(oldTmp, twoHoursAgo, twoHoursAgo)

    // What the server does at boot (a second instance of the feature over the same system).
    const feature = datakitsFeature(t.server.context)
    await feature.start!()
    await feature.stop!()
    const s = await settled(id)
    expect(s).toMatchObject({ version: 1, status: 'READY', rowCount: 200 })
    expect(existsSync(join(datakitDir, `${fileId}.parquet`))).toBe(true)
    expect(existsSync(old)).toBe(false)
    expect(existsSync(oldTmp)).toBe(false)
    expect(existsSync(fresh)).toBe(true)
    rmSync(fresh)
  })
})

describe('hash thread', () => {
  test('a declared body of several MB (hashed on a hash thread when one is free): the stored sha256 is the bytes sent', async () => {
    const lines = ['id,value']
    for (let i = 0; lines.length < 400_000; i++) lines.push(`${i},${(i * 7919) % 100_003}`)
    const csv = new TextEncoder().encode(lines.join('\n') + '\n')
    expect(csv.length).toBeGreaterThan(THREAD_MIN_BYTES)
    const id = await create(alice.token, 'hashed', 'h.csv', csv)
    const d = await t.json('GET', `/api/datakits/${id}`, { token: alice.token })
    expect(d.body.data.latestVersion).toMatchObject({ sizeBytes: csv.length, sha256: sha256(csv) })
  })
})

describe('memory', () => {
  test('a 512 MB upload streams to disk: the server’s peak RSS grows by far less than the file', async () => {
    // The upload path holds a few MB (the chunk being parsed, one write batch in flight, one
    // filling); what RSS shows on top is body chunks already written that the collector has
    // not reclaimed yet — tens of MB, more with a bigger heap, but not growing with the file.
    const size = 512 * 1024 * 1024
    // The client is another process, so this process's RSS is the server's alone.
    const { result: [out, code], growth, baseline, peak } = await heldGrowth(() => {
      const proc = Bun.spawn([process.execPath, join(import.meta.dir, '../support/datakit-stream-client.ts'), t.url, alice.token, String(size), 'Large'], { stdout: 'pipe', stderr: 'inherit' })
      return Promise.all([new Response(proc.stdout).text(), proc.exited])
    })
    expect(code).toBe(0)
    const r = JSON.parse(out)
    expect(r.status).toBe(201)
    expect(r.body.data.latestVersion).toMatchObject({ sizeBytes: r.bytes, sha256: r.sha256, format: 'csv' })
    expect(r.bytes).toBeGreaterThanOrEqual(size)
    // What reached the disk is what was sent.
    const [row] = await t.db.sql<{ fileId: string }[]>`select file_id as "fileId" from datakit_versions where datakit_id = ${r.body.data.id}`
    const onDisk = Bun.file(join(datakitDir, row!.fileId))
    expect(onDisk.size).toBe(r.bytes)
    console.log(`512 MB upload: server RSS ${Math.round(baseline / 1048576)} MB before, peak ${Math.round(peak / 1048576)} MB (+${Math.round(growth / 1048576)} MB)`)
    // Half the file: a buffered upload would need all of it (and more).
    expect(growth).toBeLessThan(size / 2)
    // Deleting it stops its profiling (DuckDB is interrupted) and removes its files.
    expect((await t.json('DELETE', `/api/datakits/${r.body.data.id}`, { token: alice.token })).status).toBe(200)
    const gone = () => !existsSync(join(datakitDir, row!.fileId)) && !existsSync(join(datakitDir, `${row!.fileId}.parquet`))
    await until(gone, 'the file to be removed', 10_000)
  }, 120_000)
})
