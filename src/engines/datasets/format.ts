/**
 * Content sniffing for uploaded datasets. The type of a file is decided from its first bytes
 * (decompressing the head of a gzip stream when needed), never from its name or the
 * Content-Type the client sent: both are under the uploader's control and say nothing about
 * what DuckDB will actually be asked to parse.
 */
import { open, stat } from 'node:fs/promises'
import { createReadStream } from 'node:fs'
import { createInterface } from 'node:readline'
import { createGunzip } from 'node:zlib'
import { UnsupportedMediaTypeError } from '../../core/errors.ts'
import { DatasetLimitError } from './errors.ts'

/** Formats the dataset engine reads. `.gz` variants are gzip-compressed text formats. */
export type DatasetFormat = 'csv' | 'tsv' | 'json' | 'ndjson' | 'parquet' | 'csv.gz' | 'tsv.gz' | 'json.gz' | 'ndjson.gz'

export const DATASET_FORMATS: readonly DatasetFormat[] = ['csv', 'tsv', 'json', 'ndjson', 'parquet', 'csv.gz', 'tsv.gz', 'json.gz', 'ndjson.gz']

/** Human-readable list used in every 415 message, so the user learns what would have worked. */
export const ACCEPTED_TYPES_TEXT =
  'CSV, TSV, JSON (an array of objects), NDJSON (one JSON object per line), Parquet, or gzip-compressed CSV/TSV/JSON/NDJSON'

/** Media type to serve each stored (original) file with. */
export const FORMAT_MEDIA_TYPES: Readonly<Record<DatasetFormat, string>> = {
  csv: 'text/csv',
  tsv: 'text/tab-separated-values',
  json: 'application/json',
  ndjson: 'application/x-ndjson',
  parquet: 'application/vnd.apache.parquet',
  'csv.gz': 'application/gzip',
  'tsv.gz': 'application/gzip',
  'json.gz': 'application/gzip',
  'ndjson.gz': 'application/gzip',
}

/** The text format and compression of a DatasetFormat. */
export function splitFormat(format: DatasetFormat): { base: 'csv' | 'tsv' | 'json' | 'ndjson' | 'parquet'; gzip: boolean } {
  const gzip = format.endsWith('.gz')
  return { base: (gzip ? format.slice(0, -3) : format) as 'csv' | 'tsv' | 'json' | 'ndjson' | 'parquet', gzip }
}

/**
 * How much of the (decompressed) head to look at. 64 KiB holds the first few hundred lines of
 * a typical table, enough to count delimiters, and bounds the work a gzip bomb can cause.
 */
const HEAD_BYTES = 64 * 1024

/** Magic numbers of common non-dataset files, only to name what was uploaded in the 415 message. */
const MAGIC: readonly { name: string; bytes: readonly number[] }[] = [
  { name: 'a PNG image', bytes: [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a] },
  { name: 'a JPEG image', bytes: [0xff, 0xd8, 0xff] },
  { name: 'a GIF image', bytes: [0x47, 0x49, 0x46, 0x38] },
  { name: 'a ZIP archive (this includes .xlsx and .docx files)', bytes: [0x50, 0x4b, 0x03, 0x04] },
  { name: 'an ELF executable', bytes: [0x7f, 0x45, 0x4c, 0x46] },
  { name: 'a PDF document', bytes: [0x25, 0x50, 0x44, 0x46, 0x2d] },
  { name: 'an xz archive', bytes: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00] },
  { name: 'a zstd archive', bytes: [0x28, 0xb5, 0x2f, 0xfd] },
  { name: 'a 7-Zip archive', bytes: [0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c] },
  { name: 'a SQLite database', bytes: [...new TextEncoder().encode('SQLite format 3'), 0] },
]

const PAR1 = [0x50, 0x41, 0x52, 0x31]
const GZIP = [0x1f, 0x8b]

function startsWith(buf: Uint8Array, bytes: readonly number[]): boolean {
  if (buf.length < bytes.length) return false
  for (let i = 0; i < bytes.length; i++) if (buf[i] !== bytes[i]) return false
  return true
}

function reject(what: string): never {
  throw new UnsupportedMediaTypeError(`Unsupported file type: ${what}. Accepted types: ${ACCEPTED_TYPES_TEXT}.`)
}

async function readRange(path: string, position: number, length: number): Promise<Uint8Array> {
  const fh = await open(path, 'r')
  try {
    const buf = new Uint8Array(length)
    const { bytesRead } = await fh.read(buf, 0, length, position)
    return buf.subarray(0, bytesRead)
  } finally {
    await fh.close()
  }
}

/**
 * Up to `max` bytes of the decompressed start of a gzip file. Decompression stops as soon as
 * enough output exists, so a small, highly compressed file cannot make us inflate gigabytes.
 * Returns `truncated: false` when the whole stream fit.
 */
async function gunzipHead(path: string, max: number): Promise<{ head: Uint8Array; truncated: boolean }> {
  return await new Promise((resolve, rejectP) => {
    const src = createReadStream(path, { highWaterMark: 16 * 1024 })
    const gz = createGunzip()
    const chunks: Buffer[] = []
    let size = 0
    let settled = false
    const finish = (err: Error | undefined, truncated: boolean) => {
      if (settled) return
      settled = true
      src.destroy()
      gz.destroy()
      // A stream that is corrupt after a valid beginning still has a usable head: DuckDB will
      // report the corruption itself, with more context, when it reads the whole file.
      if (err && size === 0) rejectP(err)
      else resolve({ head: new Uint8Array(Buffer.concat(chunks)).subarray(0, max), truncated })
    }
    gz.on('data', (c: Buffer) => {
      chunks.push(c)
      size += c.length
      if (size >= max) finish(undefined, true)
    })
    gz.on('end', () => finish(undefined, false))
    gz.on('error', (e) => finish(e, true))
    src.on('error', (e) => finish(e, true))
    src.pipe(gz)
  })
}

/**
 * The start of the file as text (gunzipped when `gzip`), or undefined when it is not UTF-8 text.
 * A UTF-8 byte-order mark is dropped. `truncated` tells whether the file continues past `text`.
 */
export async function readTextHead(path: string, gzip: boolean, max = HEAD_BYTES): Promise<{ text: string; truncated: boolean } | undefined> {
  let head: Uint8Array
  let truncated: boolean
  if (gzip) {
    ;({ head, truncated } = await gunzipHead(path, max))
  } else {
    const size = (await stat(path)).size
    head = await readRange(path, 0, Math.min(max, size))
    truncated = size > head.length
  }
  const text = decodeText(head, truncated)
  return text === undefined ? undefined : { text, truncated }
}

/**
 * Strict UTF-8 decoding that tolerates a multi-byte character cut off at the end of a
 * truncated head. Returns undefined for NUL bytes (no text format has them), invalid UTF-8,
 * or a share of control characters that only binary data has.
 */
function decodeText(head: Uint8Array, truncated: boolean): string | undefined {
  let bytes = startsWith(head, [0xef, 0xbb, 0xbf]) ? head.subarray(3) : head
  if (bytes.includes(0)) return undefined
  const decoder = new TextDecoder('utf-8', { fatal: true })
  let text: string | undefined
  // A UTF-8 sequence is at most 4 bytes long, so at most 3 bytes can belong to a cut character.
  for (let cut = 0; cut <= (truncated ? 3 : 0) && text === undefined; cut++) {
    try {
      text = decoder.decode(bytes.subarray(0, bytes.length - cut))
    } catch {
      text = undefined
    }
  }
  if (text === undefined) return undefined
  let control = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c < 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d && c !== 0x0c) control++
  }
  if (control > Math.max(2, text.length / 100)) return undefined
  return text
}

const DELIMITERS = [',', '\t', ';', '|'] as const

/** Complete lines of the head (the last one is dropped when the head was cut mid-line). */
function headLines(text: string, truncated: boolean, limit: number): string[] {
  const lines = text.split(/\r\n|\n|\r/)
  if (truncated && lines.length > 1) lines.pop()
  return lines.filter((l) => l.length > 0).slice(0, limit)
}

/** Occurrences of `delim` outside double-quoted sections of one line. */
function countOutsideQuotes(line: string, delim: string): number {
  let n = 0
  let quoted = false
  for (const ch of line) {
    if (ch === '"') quoted = !quoted
    else if (ch === delim && !quoted) n++
  }
  return n
}

/**
 * The delimiter of delimited text: the candidate that appears the same, non-zero number of
 * times on most of the first lines (ties go to the one with more fields). Undefined when no
 * candidate is consistent, e.g. a single-column file.
 */
export function detectDelimiter(text: string, truncated: boolean): string | undefined {
  const lines = headLines(text, truncated, 50)
  if (lines.length === 0) return undefined
  let best: { delim: string; fields: number; share: number } | undefined
  for (const delim of DELIMITERS) {
    const counts = lines.map((l) => countOutsideQuotes(l, delim))
    const header = counts[0]!
    if (header === 0) continue
    const share = counts.filter((c) => c === header).length / counts.length
    if (share < 0.8) continue
    if (!best || share > best.share || (share === best.share && header > best.fields)) best = { delim, fields: header, share }
  }
  return best?.delim
}

/** Split one delimited line into fields, honouring RFC 4180 double quotes. */
export function splitDelimitedLine(line: string, delim: string): string[] {
  const fields: string[] = []
  let cur = ''
  let quoted = false
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        cur += '"'
        i++
      } else if (ch === '"') quoted = false
      else cur += ch
    } else if (ch === '"') quoted = true
    else if (ch === delim) {
      fields.push(cur)
      cur = ''
    } else cur += ch
  }
  fields.push(cur)
  return fields
}

type TextFormat = 'csv' | 'tsv' | 'json' | 'ndjson'

function classifyText(text: string, truncated: boolean): TextFormat {
  const trimmed = text.trimStart()
  if (trimmed.length === 0) reject('the file contains only whitespace')
  const first = trimmed[0]
  if (first === '[') return 'json'
  if (first === '{') {
    // One object per line — judged on most lines, so that one broken line near the top still
    // makes an NDJSON file NDJSON (and its error names that line). Otherwise a pretty-printed
    // document, which DuckDB's read_json reads in its auto mode (the 'json' format); if it is
    // not JSON at all, DuckDB says where.
    const lines = headLines(trimmed, truncated, 20)
    const objects = lines.filter((line) => {
      try {
        const v: unknown = JSON.parse(line)
        return v !== null && typeof v === 'object' && !Array.isArray(v)
      } catch {
        return false
      }
    }).length
    return objects > 0 && objects >= lines.length / 2 ? 'ndjson' : 'json'
  }
  if (first === '<') reject('HTML or XML markup')
  return detectDelimiter(text, truncated) === '\t' ? 'tsv' : 'csv'
}

/**
 * Decide the format of the file at `path` from its content.
 *
 * Parquet is recognised by its `PAR1` magic at both ends; gzip by its magic, after which the
 * decompressed head is classified like plain text. Text starting with `[` is a JSON array,
 * `{` is NDJSON (or a single JSON document), anything else is delimited text: TSV when tabs
 * separate the fields, CSV otherwise. Empty files, binary data (NUL bytes, invalid UTF-8,
 * images, archives, executables…), gzip-compressed Parquet and nested gzip throw an
 * UnsupportedMediaTypeError (415) that names the accepted types.
 */
export async function detectFormat(path: string): Promise<DatasetFormat> {
  const size = (await stat(path)).size
  if (size === 0) reject('the file is empty')
  const head = await readRange(path, 0, Math.min(HEAD_BYTES, size))
  if (startsWith(head, PAR1)) {
    const tail = size >= 12 ? await readRange(path, size - 4, 4) : new Uint8Array()
    if (!startsWith(tail, PAR1)) reject('an incomplete Parquet file (the footer is missing)')
    return 'parquet'
  }
  if (startsWith(head, GZIP)) {
    let inner: { head: Uint8Array; truncated: boolean }
    try {
      inner = await gunzipHead(path, HEAD_BYTES)
    } catch {
      reject('a corrupt gzip stream')
    }
    if (inner.head.length === 0) reject('an empty gzip stream')
    if (startsWith(inner.head, PAR1)) reject('gzip-compressed Parquet (upload the .parquet file itself; it is already compressed)')
    if (startsWith(inner.head, GZIP)) reject('gzip inside gzip')
    const magic = MAGIC.find((m) => startsWith(inner.head, m.bytes))
    if (magic) reject(`gzip-compressed ${magic.name.replace(/^an? /, '')}`)
    const text = decodeText(inner.head, inner.truncated)
    if (text === undefined) reject('gzip-compressed binary data')
    return `${classifyText(text, inner.truncated)}.gz`
  }
  const magic = MAGIC.find((m) => startsWith(head, m.bytes))
  if (magic) reject(magic.name)
  if (startsWith(head, [0xff, 0xfe]) || startsWith(head, [0xfe, 0xff])) reject('UTF-16 text (save the file as UTF-8)')
  const truncated = size > head.length
  const text = decodeText(head, truncated)
  if (text === undefined) reject('binary data or text that is not UTF-8')
  return classifyText(text, truncated)
}

/**
 * The dataset limits that can be checked from a file's ends, before any of it is parsed (the
 * upload is refused at once; profiling checks the rest, see duckdb-upload.ts):
 *
 * - a gzip file whose trailer (ISIZE: the uncompressed size mod 2^32, RFC 1952 §2.3.1) is
 *   over `maxDecompressedBytes` is refused (413): the real size is ISIZE plus a multiple of
 *   4 GiB, so never less. A bomb that wraps past 4 GiB is caught while it is decompressed.
 * - a CSV/TSV whose header line has more than `maxColumns` fields is refused (422); a header
 *   longer than the head read here is counted as far as it goes.
 */
export async function checkDatasetLimits(path: string, format: DatasetFormat, limits: { maxDecompressedBytes: number; maxColumns: number }): Promise<void> {
  const { base, gzip } = splitFormat(format)
  if (gzip) {
    const size = (await stat(path)).size
    const trailer = size >= 18 ? await readRange(path, size - 4, 4) : new Uint8Array()
    if (trailer.length === 4) {
      const isize = new DataView(trailer.buffer, trailer.byteOffset, 4).getUint32(0, true)
      if (isize > limits.maxDecompressedBytes) throw DatasetLimitError.decompressed(limits.maxDecompressedBytes, isize)
    }
  }
  if (base !== 'csv' && base !== 'tsv') return
  const head = await readTextHead(path, gzip)
  if (!head) return
  const lineEnd = head.text.search(/\r\n|\n|\r/)
  const complete = lineEnd >= 0 || !head.truncated
  const header = lineEnd >= 0 ? head.text.slice(0, lineEnd) : head.text
  const delim = base === 'tsv' ? '\t' : (detectDelimiter(head.text, head.truncated) ?? ',')
  const fields = splitDelimitedLine(header, delim).length
  if (fields > limits.maxColumns) throw DatasetLimitError.columns(limits.maxColumns, complete ? fields : undefined)
}

/**
 * The 1-based line of an NDJSON file that is not valid JSON, checked around the line DuckDB
 * reported. DuckDB 1.5's "Malformed JSON … in line N" names the line after the broken one
 * (a file broken on line 1 is reported as line 2), while its "JSON transform error … in line
 * N" is exact; reading up to the reported line and parsing the two candidates gives the right
 * answer whichever way a future DuckDB counts. Returns `reported` when neither fails to parse.
 */
export async function confirmNdjsonLine(path: string, gzip: boolean, reported: number): Promise<number> {
  const source = createReadStream(path)
  const input = gzip ? source.pipe(createGunzip()) : source
  const lines = createInterface({ input, crlfDelay: Infinity })
  const candidates = new Map<number, string>()
  let n = 0
  try {
    for await (const line of lines) {
      n++
      if (n >= reported - 1) candidates.set(n, line)
      if (n >= reported) break
    }
  } finally {
    lines.close()
    source.destroy()
  }
  for (const candidate of [reported - 1, reported]) {
    const text = candidates.get(candidate)
    if (text === undefined || text.trim() === '') continue
    try {
      JSON.parse(text)
    } catch {
      return candidate
    }
  }
  return reported
}
