/**
 * Oversized bodies, over a real socket: every refusal is a 413 in the API's envelope naming
 * the limit, whatever the declared Content-Length (Bun's own cap answered a bare 413 before
 * the app saw the request), and it closes the connection so the client stops sending.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { connect } from 'node:net'
import { testServer, type TestServer } from '../support/app.ts'

const MAX_FILE_SIZE = 2 * 1024 * 1024
const JSON_LIMIT = 1024 * 1024
const GB = 1024 ** 3

let t: TestServer
let token: string
beforeAll(async () => {
  t = await testServer({ MAX_FILE_SIZE: String(MAX_FILE_SIZE) })
  token = (await t.user()).token
})
afterAll(() => t.stop())

/**
 * A body that never ends: it stops one byte short of the length it declares and waits there,
 * so the server must answer from the declared length alone. (It used to go on past it: a fast
 * client then reached its own declared length first and fetch failed with
 * ERR_HTTP_CONTENT_LENGTH_MISMATCH before the server's 413 arrived.)
 */
function endless(declared: number): ReadableStream<Uint8Array> {
  let sent = 0
  return new ReadableStream<Uint8Array>({
    pull: (c) => {
      const n = Math.min(64 * 1024, declared - 1 - sent)
      if (n <= 0) return new Promise<void>(() => {})
      sent += n
      c.enqueue(new Uint8Array(n))
    },
  })
}

/** fetch against the listening server with `length` declared and a body that would go on forever. */
async function declare(method: string, path: string, length: number, type: string, auth = true): Promise<{ status: number; body: unknown; connection: string | null }> {
  const headers: Record<string, string> = { 'content-length': String(length), 'content-type': type }
  if (auth) headers.authorization = `Bearer ${token}`
  const res = await fetch(t.url + path, { method, headers, body: endless(length), duplex: 'half' } as RequestInit)
  return { status: res.status, body: await res.json().catch(() => 'not JSON'), connection: res.headers.get('connection') }
}

const JSON_TOO_LARGE = {
  success: false,
  error: `The request body is larger than the JSON body limit of 1 MB (${JSON_LIMIT} bytes)`,
  details: [{ field: 'body', message: `Must be at most ${JSON_LIMIT} bytes` }],
}
const FILE_TOO_LARGE = {
  success: false,
  error: 'The file is larger than the upload limit of 2 MB (MAX_FILE_SIZE)',
  details: [{ field: 'dataset', message: `Must be at most ${MAX_FILE_SIZE} bytes` }],
}

describe('declared Content-Length over a limit', () => {
  // Past MAX_FILE_SIZE + 1 MB (Bun's cap as the server set it) these were bare 413s.
  const cases: [string, string, number][] = [
    ['POST', '/api/auth/login', JSON_LIMIT + 1],
    ['POST', '/api/auth/login', 10 * GB],
    ['PUT', '/api/users/00000000-0000-0000-0000-000000000000', 10 * GB],
    ['PATCH', '/api/workstations/00000000-0000-0000-0000-000000000000', 10 * GB],
    ['DELETE', '/api/users/00000000-0000-0000-0000-000000000000', 10 * GB],
    ['POST', '/api/models/00000000-0000-0000-0000-000000000000/predict', 10 * GB],
    ['POST', '/api/no-such-route', 10 * GB],
  ]
  for (const [method, path, length] of cases) {
    test(`${method} ${path} declaring ${length} bytes of JSON: 413 naming the 1 MB JSON limit`, async () => {
      expect(await declare(method, path, length, 'application/json')).toEqual({ status: 413, body: JSON_TOO_LARGE, connection: 'close' })
    })
  }

  test('an upload declaring 10 GB: 413 naming MAX_FILE_SIZE', async () => {
    expect(await declare('POST', '/api/datakits/upload', 10 * GB, 'multipart/form-data; boundary=x')).toEqual({ status: 413, body: FILE_TOO_LARGE, connection: 'close' })
  })

  test('an upload declaring just past MAX_FILE_SIZE and its form overhead: 413 naming MAX_FILE_SIZE', async () => {
    expect(await declare('POST', '/api/datakits/upload', MAX_FILE_SIZE + 1024 * 1024 + 1, 'multipart/form-data; boundary=x')).toEqual({ status: 413, body: FILE_TOO_LARGE, connection: 'close' })
  })

  test('an anonymous upload declaring 10 GB: 401 in the envelope (who asks comes first), and the connection closes', async () => {
    expect(await declare('POST', '/api/datakits/upload', 10 * GB, 'multipart/form-data; boundary=x', false)).toEqual({ status: 401, body: { success: false, error: 'Authentication required', details: [] }, connection: 'close' })
  })

  test('over a raw socket: the 413 comes back before any of the body is sent, and the connection closes', async () => {
    const port = new URL(t.url).port
    const reply = await new Promise<string>((resolve, reject) => {
      const s = connect(Number(port), '127.0.0.1')
      let text = ''
      s.on('data', (d) => (text += d.toString()))
      s.on('close', () => resolve(text))
      s.on('error', reject)
      s.write(`POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${100 * GB}\r\n\r\n`)
    })
    const [head, body] = reply.split('\r\n\r\n')
    expect(head).toStartWith('HTTP/1.1 413')
    expect(head!.toLowerCase()).toContain('connection: close')
    expect(JSON.parse(body!)).toEqual(JSON_TOO_LARGE)
  })
})

describe('bodies without a declared length', () => {
  /** A chunked body of `bytes` bytes of `fill`. */
  const chunked = (bytes: number, fill = 0x20) => {
    let sent = 0
    return new ReadableStream<Uint8Array>({
      pull(c) {
        const n = Math.min(64 * 1024, bytes - sent)
        if (n <= 0) return c.close()
        sent += n
        c.enqueue(new Uint8Array(n).fill(fill))
      },
    })
  }

  test('chunked JSON past 1 MB: 413 naming the JSON limit', async () => {
    const res = await fetch(`${t.url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: chunked(JSON_LIMIT + 64 * 1024), duplex: 'half' } as RequestInit)
    expect([res.status, await res.json()]).toEqual([413, JSON_TOO_LARGE])
  })

  test('a chunked upload past MAX_FILE_SIZE: 413 naming MAX_FILE_SIZE', async () => {
    const boundary = 'qx'
    const head = new TextEncoder().encode(`--${boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig\r\n--${boundary}\r\nContent-Disposition: form-data; name="dataset"; filename="a.csv"\r\nContent-Type: text/csv\r\n\r\n`)
    const file = chunked(MAX_FILE_SIZE + 512 * 1024, 0x61)
    const body = new ReadableStream<Uint8Array>({
      async start(c) {
        c.enqueue(head)
        for await (const part of file) c.enqueue(part)
        c.enqueue(new TextEncoder().encode(`\r\n--${boundary}--\r\n`))
        c.close()
      },
    })
    const res = await fetch(`${t.url}/api/datakits/upload`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': `multipart/form-data; boundary=${boundary}` }, body, duplex: 'half' } as RequestInit)
    expect([res.status, await res.json()]).toEqual([413, FILE_TOO_LARGE])
  })

  test('a text body on DELETE: 415 (it would have been read whole)', async () => {
    const res = await fetch(`${t.url}/api/users/00000000-0000-0000-0000-000000000000`, { method: 'DELETE', headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain' }, body: chunked(3 * 1024 * 1024), duplex: 'half' } as RequestInit)
    expect([res.status, await res.json()]).toEqual([415, { success: false, error: 'Content-Type must be application/json', details: [] }])
  })
})
