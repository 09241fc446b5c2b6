/**
 * The streaming multipart parser of uploads (src/http/upload.ts): what it holds back at the
 * end of a chunk, and a file whose bytes keep looking like the delimiter, cut at every edge —
 * then the same kind of file through the real server's upload route, hashed on the hash thread.
 * (The route's limits, errors and clean-up are tested in datakits.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import { THREAD_MIN_BYTES } from '../../src/core/stream-hash.ts'
import { datakitsFeature } from '../../src/features/datakits.ts'
import { parseMultipart, type MultipartEvent } from '../../src/http/upload.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { tempDir } from '../support/datasets.ts'
import { multipartBytes, postUpload } from '../support/datakit-upload.ts'

const enc = new TextEncoder()
const sha256 = (b: Uint8Array | string) => new Bun.CryptoHasher('sha256').update(b).digest('hex')

/** `body` as a stream cut at the given offsets. */
function cutAt(body: Uint8Array, edges: number[]): ReadableStream<Uint8Array> {
  const points = [0, ...edges.filter((e) => e > 0 && e < body.length), body.length]
  let i = 0
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (i + 1 >= points.length) return c.close()
      c.enqueue(body.slice(points[i], points[i + 1]))
      i++
    },
  })
}

/** Every event, with each part's data joined (latin1, byte for byte) and its data events counted. */
async function parse(stream: ReadableStream<Uint8Array>, boundary: string) {
  const parts: { name: string; filename?: string; data: string; events: number }[] = []
  for await (const ev of parseMultipart(stream, boundary) as AsyncIterable<MultipartEvent>) {
    if (ev.type === 'part') parts.push({ name: ev.part.name, filename: ev.part.filename, data: '', events: 0 })
    else if (ev.type === 'data') {
      const p = parts[parts.length - 1]!
      p.data += Buffer.from(ev.bytes).toString('latin1')
      p.events++
    }
  }
  return parts
}

describe('multipart parser', () => {
  test('a chunk whose end cannot begin a delimiter is passed on whole: one data event per chunk', async () => {
    // Rows ending in LF: no chunk ends in a CR, so nothing needs holding back. (The parser used to
    // hold back the last 73 bytes of every chunk and send them as a second event of their own —
    // twice the writes and hash hand-offs for the same bytes.)
    const chunk = 64 * 1024
    const csv = 'id,value\n' + Array.from({ length: 40_000 }, (_, i) => `${i},${(i * 7919) % 100_003}`).join('\n') + '\n'
    const { body } = await multipartBytes([{ name: 'dataset', filename: 'f.csv', contentType: 'text/csv', data: csv }, { name: 'name', value: 'x' }], 'bnd-42')
    const edges = Array.from({ length: Math.ceil(body.length / chunk) }, (_, i) => (i + 1) * chunk)
    const [file, name] = await parse(cutAt(body, edges), 'bnd-42')
    expect(file!.data).toBe(csv)
    expect(name).toEqual({ name: 'name', filename: undefined, data: 'x', events: 1 })
    // The file spans this many chunks (it starts in the first); each gives one event.
    const fileEnd = Buffer.from(body).indexOf('\r\n\r\n') + 4 + csv.length
    expect(file!.events).toBe(Math.ceil(fileEnd / chunk))
  })

  test('a file that keeps looking like the delimiter is found intact, cut at every offset', async () => {
    const boundary = 'qx-7f3a'
    // Every proper prefix of CRLF--boundary, then what follows each one is not the rest of it.
    const delimiter = `\r\n--${boundary}`
    const near = Array.from({ length: delimiter.length - 1 }, (_, k) => delimiter.slice(0, k + 1) + 'Z').join('') + '\r'
    const { body } = await multipartBytes([{ name: 'dataset', filename: 'near.bin', data: near }, { name: 'description', value: near }], boundary)
    const expected = [
      { name: 'dataset', filename: 'near.bin', data: near },
      { name: 'description', filename: undefined, data: near },
    ]
    // Two chunks split at every offset, then three chunks split at every pair around the first delimiter.
    for (let at = 0; at <= body.length; at++) {
      const got = await parse(cutAt(body, [at]), boundary)
      expect(got.map(({ events: _, ...p }) => p)).toEqual(expected)
    }
    const first = Buffer.from(body).indexOf(`\r\n--${boundary}\r\n`, 10)
    expect(first).toBeGreaterThan(near.length)
    for (let a = first - 4; a < first + delimiter.length + 4; a++) {
      for (let b = a + 1; b < first + delimiter.length + 6; b++) {
        const got = await parse(cutAt(body, [a, b]), boundary)
        expect(got.map(({ events: _, ...p }) => p)).toEqual(expected)
      }
    }
  })

  // What @fastify/busboy 3.2.6 did differently when bench:datakits ran it through the upload path
  // (README.md, "Uploads"): it parsed each of these bodies without an error, dropped the part
  // behind `--bndJUNK` and the part without Content-Disposition, kept a 20 KB header section,
  // and gave `x.csv` and `a%22b.csv` as the file names.
  const refusal = async (body: string) => {
    try {
      await parse(cutAt(enc.encode(body), [7, 40]), 'bnd')
      return 'accepted'
    } catch (err) {
      return err as { status: number; details: unknown }
    }
  }
  const part = (headers: string, value: string) => `--bnd\r\n${headers}\r\n\r\n${value}\r\n`

  test('a malformed part is a 400 naming what is wrong, never skipped', async () => {
    const body = (message: string) => ({ status: 400, details: [{ field: 'body', message }] })
    expect(await refusal(part('Content-Disposition: form-data; name="a"', 'x') + '--bndJUNK\r\nContent-Disposition: form-data; name="b"\r\n\r\ny\r\n--bnd--\r\n')).toMatchObject(
      body('garbage after a boundary'),
    )
    expect(await refusal(part('Content-Type: text/plain', 'x') + part('Content-Disposition: form-data; name="a"', 'y') + '--bnd--\r\n')).toMatchObject(
      body('every part needs Content-Disposition: form-data'),
    )
    // A complete header section, but past the 16 KB limit.
    expect(await refusal(part(`Content-Disposition: form-data; name="a"; x="${'x'.repeat(20_000)}"`, 'v') + '--bnd--\r\n')).toMatchObject(
      body('part headers exceed 16384 bytes'),
    )
  })

  test('file names: filename* (RFC 8187) over filename, and the HTML standard’s %22 unescaped', async () => {
    const body =
      part(`Content-Disposition: form-data; name="dataset"; filename="x.csv"; filename*=UTF-8''%E2%82%AC%20data.csv`, 'a') +
      part('Content-Disposition: form-data; name="other"; filename="a%22b.csv"', 'b') +
      '--bnd--\r\n'
    const got = await parse(cutAt(enc.encode(body), [5, 60, 61]), 'bnd')
    expect(got.map((p) => p.filename)).toEqual(['€ data.csv', 'a"b.csv'])
  })
})

describe('through the upload route', () => {
  const dir = tempDir('quadrax-upload-test-')
  let t: TestServer
  beforeAll(async () => {
    t = await testServer({ UPLOAD_DIR: join(dir.path, 'uploads'), MAX_FILE_SIZE: '64MB' }, { features: [datakitsFeature] })
  }, 60_000)
  afterAll(async () => {
    await t?.stop()
    dir[Symbol.dispose]()
  })

  test('a CSV full of CRLFs and near-delimiters, declared large enough for the hash thread, is stored byte for byte', async () => {
    const user = await t.user()
    const boundary = `----qx${crypto.randomUUID()}`
    // Windows line ends, and a column whose text is the delimiter cut short: wherever the
    // socket cuts the body, chunk ends keep falling on CRs and partial delimiters.
    const rows = ['id,text']
    for (let i = 0, size = 0; size < THREAD_MIN_BYTES + 1024 * 1024; i++) {
      const row = `${i},--${boundary.slice(0, i % boundary.length)}`
      rows.push(row)
      size += row.length + 2
    }
    const csv = enc.encode(rows.join('\r\n') + '\r\n')
    const r = await postUpload(t.url, user.token, await multipartBytes([{ name: 'dataset', filename: 'near.csv', contentType: 'text/csv', data: csv }, { name: 'name', value: 'near' }], boundary))
    expect(r.status).toBe(201)
    expect(r.body.data.latestVersion).toMatchObject({ format: 'csv', sizeBytes: csv.length, sha256: sha256(csv) })
    const [row] = await t.db.sql<{ fileId: string }[]>`select file_id as "fileId" from datakit_versions where datakit_id = ${r.body.data.id}`
    expect(sha256(await Bun.file(join(dir.path, 'uploads', 'datakits', row!.fileId)).bytes())).toBe(sha256(csv))
  }, 60_000)
})
