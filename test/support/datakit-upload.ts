/**
 * Client side of DataKit uploads for tests and benchmarks: multipart bodies built by hand
 * (exact control over file names and framing, which FormData normalises), streamed from
 * generators so a body of any size costs no memory, and the process's peak RSS.
 */

export type FormPart =
  | { name: string; value: string }
  | { name: string; filename: string; contentType?: string; data: Uint8Array | string | (() => AsyncIterable<Uint8Array>) }

const enc = new TextEncoder()

function partHead(boundary: string, p: FormPart): Uint8Array {
  const filename = 'filename' in p ? `; filename="${p.filename.replaceAll('"', '%22')}"` : ''
  const type = 'filename' in p ? `\r\nContent-Type: ${p.contentType ?? 'application/octet-stream'}` : ''
  return enc.encode(`--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"${filename}${type}\r\n\r\n`)
}

async function* partBody(p: FormPart): AsyncIterable<Uint8Array> {
  if ('value' in p) yield enc.encode(p.value)
  else if (typeof p.data === 'string') yield enc.encode(p.data)
  else if (p.data instanceof Uint8Array) yield p.data
  else yield* p.data()
}

/** A multipart/form-data body as a stream (sent chunked, without Content-Length). */
export function multipartStream(parts: FormPart[], boundary = `----qx${crypto.randomUUID()}`): { body: ReadableStream<Uint8Array>; contentType: string } {
  async function* all(): AsyncGenerator<Uint8Array> {
    for (const p of parts) {
      yield partHead(boundary, p)
      yield* partBody(p)
      yield enc.encode('\r\n')
    }
    yield enc.encode(`--${boundary}--\r\n`)
  }
  const it = all()
  const body = new ReadableStream<Uint8Array>({
    async pull(c) {
      const { done, value } = await it.next()
      if (done) c.close()
      else c.enqueue(value)
    },
    async cancel() {
      await it.return(undefined)
    },
  })
  return { body, contentType: `multipart/form-data; boundary=${boundary}` }
}

/** The same body in one piece (sent with Content-Length); for small files only. */
export async function multipartBytes(parts: FormPart[], boundary = `----qx${crypto.randomUUID()}`): Promise<{ body: Uint8Array; contentType: string }> {
  const { body, contentType } = multipartStream(parts, boundary)
  return { body: new Uint8Array(await new Response(body).arrayBuffer()), contentType }
}

/**
 * CSV generated on the fly, `bytes` long (± one row): id, name, city, amount, day. A block of
 * ~1 MiB of rows is made once and sent again and again (ids repeat), so the generator costs
 * next to nothing and the measured speed is the upload's. Deterministic, so a hash of it can
 * be computed alongside.
 */
export function generatedCsv(bytes: number): () => AsyncIterable<Uint8Array> {
  const cities = ['Lisbon', 'Oslo', 'Lima', 'Kyoto']
  let s = ''
  for (let i = 1; s.length < 1024 * 1024; i++) s += `${i},user ${i % 9973},${cities[i % 4]},${(i % 1000) * 1.25},2024-01-${String((i % 28) + 1).padStart(2, '0')}\n`
  const block = enc.encode(s)
  const header = enc.encode('id,name,city,amount,day\n')
  return async function* () {
    yield header
    let sent = header.byteLength
    while (sent < bytes) {
      // Whole rows only: the last block is cut after a newline.
      let chunk = block
      if (sent + block.byteLength > bytes) chunk = block.subarray(0, block.indexOf(10, bytes - sent) + 1 || block.byteLength)
      sent += chunk.byteLength
      yield chunk
    }
  }
}

/** Wrap a chunk source so every chunk is also fed to a sha256 and counted. */
export function hashing(source: () => AsyncIterable<Uint8Array>): { source: () => AsyncIterable<Uint8Array>; result: () => { sha256: string; bytes: number } } {
  const hasher = new Bun.CryptoHasher('sha256')
  let bytes = 0
  return {
    source: async function* () {
      for await (const c of source()) {
        hasher.update(c)
        bytes += c.byteLength
        yield c
      }
    },
    result: () => ({ sha256: hasher.digest('hex'), bytes }),
  }
}

/** POST a multipart body to the server's upload route. */
export async function postUpload(
  baseUrl: string,
  token: string | undefined,
  form: { body: ReadableStream<Uint8Array> | Uint8Array; contentType: string },
): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = { 'content-type': form.contentType }
  if (token) headers.authorization = `Bearer ${token}`
  const res = await fetch(`${baseUrl}/api/datakits/upload`, { method: 'POST', headers, body: form.body, duplex: 'half' } as RequestInit)
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : null }
}
