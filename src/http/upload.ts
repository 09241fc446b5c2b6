/**
 * Streaming multipart/form-data (RFC 7578) for uploads: the request body is read chunk by
 * chunk and the file part goes straight to disk, hashed (sha256) and counted as it is
 * written, so memory stays flat whatever the size of the file. Elysia's own body parser is
 * not used for these routes: it calls `request.formData()`, which holds the whole body.
 *
 * The parser is a small state machine over a byte buffer. The only bytes kept between chunks
 * are those that could be the start of the next delimiter (`CRLF--boundary`, at most 74
 * bytes, and only when they begin with a CR), so a delimiter split across two chunks — or
 * across many one-byte chunks — is found all the same.
 *
 * Why not a library: bench/datakits.ts ran @fastify/busboy 3.2.6 and @remix-run/multipart-parser
 * 0.16.3 through this same upload path on 256 MB and 1 GB files (README.md, "Uploads", has the
 * numbers). busboy was as fast, within the noise of a shared 2-core machine (the disk write,
 * the hash and the client bound an upload, not the parser), but does not keep what this parser
 * does and the upload tests check: it takes `--boundaryJUNK` as a delimiter and silently drops
 * the part behind it (a body of only such parts is an empty form, no error), skips a part
 * without Content-Disposition, truncates a header section past its limit instead of refusing
 * it, takes `filename` over `filename*` and leaves the HTML standard's `%22` escaped; none of
 * its options change that. remix-run's parser (the newest on npm) yields a part only once the
 * part has ended, its content held in memory: a 1 GB file took the server to 2.1 GB RSS, at a
 * third of the speed; and it refused a valid body sent in 1-byte chunks.
 */
import { open, rm, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { AppError, UnsupportedMediaTypeError, ValidationError } from '../core/errors.ts'
import { streamHasher, type StreamHasher } from '../core/stream-hash.ts'

/** The headers of one part that matter for form data. */
interface PartInfo {
  /** The form field name (Content-Disposition `name`). */
  name: string
  /** The client's file name, as sent (unsanitised); undefined for plain fields. */
  filename: string | undefined
  contentType: string | undefined
}

export type MultipartEvent = { type: 'part'; part: PartInfo } | { type: 'data'; bytes: Uint8Array } | { type: 'end' }

export interface MultipartLimits {
  /** Largest header section of one part. */
  maxHeaderBytes: number
  /** Most parts in one body. */
  maxParts: number
}

const DEFAULT_LIMITS: MultipartLimits = { maxHeaderBytes: 16 * 1024, maxParts: 16 }

const CRLF = Buffer.from('\r\n')
const HEADER_END = Buffer.from('\r\n\r\n')
const EMPTY = Buffer.alloc(0)

function malformed(message: string): ValidationError {
  return new ValidationError('Malformed multipart body', [{ field: 'body', message }])
}

/**
 * The boundary of a `multipart/form-data` Content-Type. Anything else is a 415; a
 * multipart type without a usable boundary is a 400.
 */
export function multipartBoundary(contentType: string | null): string {
  const type = (contentType ?? '').split(';', 1)[0]!.trim().toLowerCase()
  if (type !== 'multipart/form-data') throw new UnsupportedMediaTypeError('Content-Type must be multipart/form-data')
  const m = /;\s*boundary=(?:"([^"]{1,70})"|([^\s;"]{1,70}))/i.exec(contentType!)
  const boundary = m?.[1] ?? m?.[2]
  // RFC 2046 §5.1.1: 1–70 characters from a restricted set, not ending in a space.
  if (!boundary || !/^[0-9A-Za-z'()+_,\-./:=? ]*[0-9A-Za-z'()+_,\-./:=?]$/.test(boundary)) {
    throw new ValidationError('Malformed multipart body', [{ field: 'content-type', message: 'multipart/form-data needs a boundary parameter' }])
  }
  return boundary
}

/** Parameters of a header value (`form-data; name="a"; filename="b.csv"`), lower-cased keys. */
function headerParams(value: string): Map<string, string> {
  const out = new Map<string, string>()
  // Quoted values are taken as they are: browsers (and curl since 7.81) percent-encode the
  // quote in names instead of backslash-escaping it, and send a backslash raw — reading it
  // as an escape would turn ..\..\x.csv into ....x.csv.
  const re = /;\s*([A-Za-z0-9!#$&+\-.^_`|~*]+)\s*=\s*(?:"([^"]*)"|([^;\s]*))/g
  for (let m = re.exec(value); m; m = re.exec(value)) {
    const key = m[1]!.toLowerCase()
    const raw = m[2] ?? m[3]!
    if (!out.has(key)) out.set(key, raw)
  }
  return out
}

/** RFC 8187 `filename*=UTF-8''%E2%82%AC.csv`. */
function extValue(v: string): string | undefined {
  const m = /^([\w!#$%&+^`{}~-]+)'[^']*'(.*)$/.exec(v)
  if (!m || m[1]!.toLowerCase() !== 'utf-8') return undefined
  try {
    return decodeURIComponent(m[2]!)
  } catch {
    return undefined
  }
}

function parsePartHeaders(block: Buffer): PartInfo {
  let disposition: string | undefined
  let contentType: string | undefined
  for (const line of block.toString('utf8').split('\r\n')) {
    const colon = line.indexOf(':')
    if (colon <= 0) throw malformed('a part header line has no name')
    const name = line.slice(0, colon).trim().toLowerCase()
    const value = line.slice(colon + 1).trim()
    if (name === 'content-disposition') disposition = value
    else if (name === 'content-type') contentType = value
  }
  if (!disposition || disposition.split(';', 1)[0]!.trim().toLowerCase() !== 'form-data') {
    throw malformed('every part needs Content-Disposition: form-data')
  }
  const params = headerParams(disposition)
  const fieldName = params.get('name')
  if (fieldName === undefined) throw malformed('a part has no field name')
  const star = params.get('filename*')
  // The HTML standard escapes " CR LF in names as %22 %0D %0A (multipart/form-data encoding).
  const unescape = (s: string) => s.replace(/%22/g, '"').replace(/%0D/gi, '\r').replace(/%0A/gi, '\n')
  const filename = (star !== undefined ? extValue(star) : undefined) ?? (params.has('filename') ? unescape(params.get('filename')!) : undefined)
  return { name: unescape(fieldName), filename, contentType }
}

/**
 * The first index at or after `from` where the rest of `buf` is a proper prefix of
 * `delimiter` (so a delimiter may be completed by the next chunk), or `buf.length`. Holding
 * back a fixed 73-byte tail instead sent every chunk on as two events (two writes, two hash
 * hand-offs) and halved the parser's own speed (test/http/upload.test.ts; bench/datakits.ts).
 */
function delimiterPrefixAt(buf: Buffer, delimiter: Buffer, from: number): number {
  for (let i = buf.indexOf(0x0d, from); i !== -1; i = buf.indexOf(0x0d, i + 1)) {
    if (buf.compare(delimiter, 0, buf.length - i, i) === 0) return i
  }
  return buf.length
}

/**
 * Parse a multipart body as it arrives. Yields `part` (its headers), then its `data` chunks,
 * then `end`, for each part in order; the caller must consume the events as they come (that
 * is the backpressure: the body is read only as fast as the caller handles it). Throws a
 * ValidationError (400) for a malformed or truncated body.
 */
export async function* parseMultipart(
  body: ReadableStream<Uint8Array>,
  boundary: string,
  limits: Partial<MultipartLimits> = {},
): AsyncGenerator<MultipartEvent, void, undefined> {
  const { maxHeaderBytes, maxParts } = { ...DEFAULT_LIMITS, ...limits }
  const delimiter = Buffer.from(`\r\n--${boundary}`)
  const keep = delimiter.length - 1
  const reader = body.getReader()
  // The body is parsed as if it began with CRLF, so the first delimiter (which has none in
  // front of it) is found by the same search as every other one.
  let buf: Buffer = Buffer.from(CRLF)
  let state: 'preamble' | 'boundary' | 'headers' | 'body' | 'done' = 'preamble'
  let parts = 0
  let ended = false
  try {
    for (;;) {
      let pos = 0
      // Consume as much of buf as the current state can.
      for (;;) {
        if (state === 'preamble' || state === 'body') {
          const at = buf.indexOf(delimiter, pos)
          if (at === -1) {
            // Hold back only a tail that could be the start of a delimiter (it begins with CR):
            // usually there is none and the whole chunk goes out as one piece.
            const safe = delimiterPrefixAt(buf, delimiter, Math.max(pos, buf.length - keep))
            if (state === 'body' && safe > pos) yield { type: 'data', bytes: buf.subarray(pos, safe) }
            pos = safe
            break
          }
          if (state === 'body') {
            if (at > pos) yield { type: 'data', bytes: buf.subarray(pos, at) }
            yield { type: 'end' }
          }
          pos = at + delimiter.length
          state = 'boundary'
        } else if (state === 'boundary') {
          // After a delimiter: "--" closes the body; otherwise optional padding, then CRLF.
          if (buf.length - pos < 2) break
          if (buf[pos] === 0x2d && buf[pos + 1] === 0x2d) {
            state = 'done'
            break
          }
          const eol = buf.indexOf(CRLF, pos)
          if (eol === -1) {
            if (buf.length - pos > 256) throw malformed('garbage after a boundary')
            break
          }
          if (!/^[ \t]*$/.test(buf.toString('latin1', pos, eol))) throw malformed('garbage after a boundary')
          pos = eol + 2
          state = 'headers'
        } else if (state === 'headers') {
          // A part with no headers at all starts with the CRLF that ends its (empty) header section.
          const blank = buf[pos] === 0x0d && buf[pos + 1] === 0x0a ? pos : buf.indexOf(HEADER_END, pos)
          if (blank === -1 || (blank === pos && buf.length - pos < 2)) {
            if (buf.length - pos > maxHeaderBytes) throw malformed(`part headers exceed ${maxHeaderBytes} bytes`)
            break
          }
          if (blank - pos > maxHeaderBytes) throw malformed(`part headers exceed ${maxHeaderBytes} bytes`)
          if (++parts > maxParts) throw malformed(`more than ${maxParts} parts`)
          if (blank === pos) throw malformed('a part has no headers')
          const part = parsePartHeaders(buf.subarray(pos, blank))
          pos = blank + 4
          state = 'body'
          yield { type: 'part', part }
        } else {
          break
        }
      }
      if (state === 'done') {
        // The epilogue (anything after the closing delimiter) is ignored, as RFC 2046 says.
        ended = true
        return
      }
      let rest = buf.subarray(pos)
      const { done, value } = await reader.read()
      if (done) throw malformed('the body ended before the closing boundary')
      const chunk = Buffer.from(value.buffer, value.byteOffset, value.byteLength)
      if (rest.length > 0 && rest.length <= keep && chunk.length >= keep && (state === 'body' || state === 'preamble')) {
        // The held-back tail can only matter if a delimiter starts in it and ends in the
        // chunk: probe the seam (at most 2 × 73 bytes). If none does, the tail is plain data
        // and the chunk is parsed where it lies — no copy of every chunk into a new buffer,
        // which for a large upload is most of the garbage (and so of the RSS) the parser makes.
        const seam = Buffer.concat([rest, chunk.subarray(0, keep)]).indexOf(delimiter)
        if (seam === -1 || seam >= rest.length) {
          if (state === 'body') yield { type: 'data', bytes: Buffer.from(rest) }
          rest = EMPTY
        }
      }
      // Otherwise only the held-back tail (< 74 bytes, or an incomplete header section) and
      // the chunk are joined.
      buf = rest.length === 0 ? chunk : Buffer.concat([rest, chunk])
    }
  } finally {
    // Stop the client's upload when we bail out early; after a complete body there is nothing left.
    if (!ended) await reader.cancel().catch(() => {})
    reader.releaseLock()
    buf = EMPTY
  }
}

/**
 * The client's file name reduced to something safe to keep as metadata and to put in a
 * Content-Disposition: its last path segment (no directories, `..` or drive letters),
 * no control characters, Unicode-normalised, at most 255 characters. Never used as a path.
 */
export function sanitizeFilename(raw: string | undefined, fallback = 'dataset'): string {
  if (!raw) return fallback
  let name = raw.normalize('NFC').replace(/[\u0000-\u001f\u007f-\u009f]/g, '')
  name = name.split(/[\\/]/).pop() ?? ''
  name = name.replace(/^[A-Za-z]:/, '').trim()
  if (name === '' || name === '.' || name === '..') return fallback
  if (name.length > 255) {
    const dot = name.lastIndexOf('.')
    const ext = dot > 0 && name.length - dot <= 16 ? name.slice(dot) : ''
    name = name.slice(0, 255 - ext.length) + ext
  }
  return name
}

/**
 * `attachment` Content-Disposition for `filename`: an ASCII fallback in `filename` (quotes,
 * backslashes and non-ASCII replaced) and the exact name in RFC 8187 `filename*`.
 */
export function contentDisposition(filename: string): string {
  const ascii = filename.replace(/[^\x20-\x7e]/g, '_').replace(/["\\]/g, '_') || 'download'
  const encoded = encodeURIComponent(filename).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encoded}`
}

/** Writes with at most one write in flight, batching small chunks into one writev. */
class FileWriter {
  readonly #fh: FileHandle
  #batch: Uint8Array[] = []
  #batchBytes = 0
  #inFlight: Promise<void> | undefined
  static readonly BATCH = 1024 * 1024

  constructor(fh: FileHandle) {
    this.#fh = fh
  }

  /** Queue `bytes`; resolves once the queue is short enough to take more. */
  async write(bytes: Uint8Array): Promise<void> {
    this.#batch.push(bytes)
    this.#batchBytes += bytes.byteLength
    if (this.#batchBytes >= FileWriter.BATCH) await this.#flush()
  }

  async #flush(): Promise<void> {
    if (this.#inFlight) await this.#inFlight
    this.#inFlight = undefined
    if (this.#batchBytes === 0) return
    const batch = this.#batch
    this.#batch = []
    this.#batchBytes = 0
    // Started now, awaited at the next flush: reading and hashing the next chunks overlaps
    // with this write.
    const p = writeAll(this.#fh, batch)
    p.catch(() => {}) // observed at the next flush or close
    this.#inFlight = p
  }

  /** Write what is queued and close the file. */
  async close(): Promise<void> {
    try {
      await this.#flush()
      if (this.#inFlight) await this.#inFlight
    } finally {
      this.#inFlight = undefined
      await this.#fh.close()
    }
  }

  /** Close without caring about pending writes (the file is about to be removed). */
  async abandon(): Promise<void> {
    await this.#inFlight?.catch(() => {})
    await this.#fh.close().catch(() => {})
  }
}

async function writeAll(fh: FileHandle, chunks: Uint8Array[]): Promise<void> {
  let pending = chunks
  while (pending.length > 0) {
    const { bytesWritten } = await fh.writev(pending)
    let skip = bytesWritten
    const rest: Uint8Array[] = []
    for (const c of pending) {
      if (skip >= c.byteLength) skip -= c.byteLength
      else {
        rest.push(skip > 0 ? c.subarray(skip) : c)
        skip = 0
      }
    }
    if (rest.length > 0 && bytesWritten === 0) throw new Error('write made no progress')
    pending = rest
  }
}

/** A limit on the file's bytes, checked as they arrive. */
interface ByteLimit {
  bytes: number
  /** The error to answer with (e.g. a 413) when the file goes past `bytes`. */
  error(received: number): AppError
}

export interface ReceiveOptions {
  /** Directory the file is written to, under a generated UUID name. Must exist. */
  dir: string
  /** The form field carrying the file. */
  fileField: string
  /** Accepted text fields and the most bytes each may have; any other field is a 400. */
  fields: Record<string, number>
  /** Checked in order while the file streams in; the first one crossed ends the upload. */
  limits: ByteLimit[]
  multipart?: Partial<MultipartLimits>
}

interface ReceivedFile {
  /** The generated id, which is also the file's name in `dir`. */
  id: string
  path: string
  /** The client's name, sanitised (metadata only). */
  originalName: string
  contentType: string | undefined
  size: number
  sha256: string
}

export interface ReceivedUpload {
  fields: Record<string, string>
  file: ReceivedFile
}

/**
 * Read a multipart request, writing its `fileField` part to `dir/<uuid>` while hashing and
 * counting it, and collecting the text fields. On any failure (a limit crossed, a malformed
 * body, the client going away) the partial file is removed before the error is thrown. The
 * caller owns the file once this resolves.
 */
export async function receiveUpload(request: Request, opts: ReceiveOptions): Promise<ReceivedUpload> {
  const boundary = multipartBoundary(request.headers.get('content-type'))
  if (!request.body) throw new ValidationError('Validation failed', [{ field: opts.fileField, message: 'Required' }])
  const fields: Record<string, string> = {}
  let file: ReceivedFile | undefined
  let writer: FileWriter | undefined
  let path: string | undefined
  let hasher: StreamHasher | undefined
  const declared = request.headers.get('content-length')
  try {
    let current: { kind: 'file'; hasher: StreamHasher } | { kind: 'field'; name: string; chunks: Buffer[]; size: number; max: number } | undefined
    for await (const ev of parseMultipart(request.body, boundary, opts.multipart)) {
      if (ev.type === 'part') {
        const { name, filename } = ev.part
        if (name === opts.fileField) {
          if (file || path) throw new ValidationError('Validation failed', [{ field: name, message: 'Only one file may be uploaded' }])
          if (filename === undefined) throw new ValidationError('Validation failed', [{ field: name, message: 'Must be a file' }])
          const id = crypto.randomUUID()
          path = join(opts.dir, id)
          // 'wx': a fresh file, never an existing one (the name is ours, so this only guards bugs).
          writer = new FileWriter(await open(path, 'wx', 0o600))
          file = { id, path, originalName: sanitizeFilename(filename), contentType: ev.part.contentType, size: 0, sha256: '' }
          hasher = streamHasher(declared === null ? undefined : Number(declared))
          current = { kind: 'file', hasher }
        } else if (Object.hasOwn(opts.fields, name)) {
          if (Object.hasOwn(fields, name)) throw new ValidationError('Validation failed', [{ field: name, message: 'Given more than once' }])
          current = { kind: 'field', name, chunks: [], size: 0, max: opts.fields[name]! }
        } else {
          throw new ValidationError('Validation failed', [{ field: name, message: 'Unknown field' }])
        }
      } else if (ev.type === 'data') {
        if (current?.kind === 'file') {
          const size = file!.size + ev.bytes.byteLength
          for (const limit of opts.limits) if (size > limit.bytes) throw limit.error(size)
          file!.size = size
          // The parser reuses nothing it has yielded, so the write can hold on to the bytes.
          // The hash is computed on a hash thread as the bytes pass (src/core/stream-hash.ts),
          // the write in the file system's threads: the event loop only parses and copies.
          const w = writer!.write(ev.bytes)
          const h = current.hasher.update(ev.bytes)
          await (h ? Promise.all([w, h]) : w)
        } else if (current?.kind === 'field') {
          current.size += ev.bytes.byteLength
          if (current.size > current.max) throw new ValidationError('Validation failed', [{ field: current.name, message: `Must be at most ${current.max} bytes` }])
          current.chunks.push(Buffer.from(ev.bytes))
        }
      } else {
        if (current?.kind === 'file') {
          await writer!.close()
          writer = undefined
          file!.sha256 = await current.hasher.digest()
          hasher = undefined
        } else if (current?.kind === 'field') {
          const text = Buffer.concat(current.chunks).toString('utf8')
          fields[current.name] = text
        }
        current = undefined
      }
    }
    if (!file) throw new ValidationError('Validation failed', [{ field: opts.fileField, message: 'Required: the file to upload' }])
    return { fields, file }
  } catch (err) {
    hasher?.abort()
    await writer?.abandon()
    if (path) await rm(path, { force: true })
    throw err
  }
}
