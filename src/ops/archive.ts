/**
 * The backup archive: a tar stream (tar-stream) compressed with zstd or gzip, written and read
 * as a stream, so no table or file is ever held whole in memory.
 *
 *   db/<table>/<NNNNNN>.copy   a table's rows in COPY text format, in chunks of at most
 *                              CHUNK_BYTES (tar needs each entry's size before its bytes, and
 *                              COPY does not say how much is coming)
 *   files/<root>/<path>        a file of DATA_DIR (root `data`), UPLOAD_DIR (`uploads`) or
 *                              MODEL_DIR (`models`)
 *   manifest.json              last: what the archive holds, with every entry's size and sha256
 *   manifest.json.sha256       the manifest's own sha256
 *
 * The manifest comes last because it is only known at the end (row counts, checksums); a reader
 * that must verify before it writes (restore) reads the archive twice.
 */
import { closeSync, openSync, readSync } from 'node:fs'
import { Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createReadStream, createWriteStream } from 'node:fs'
import { createGunzip, createGzip, createZstdCompress, createZstdDecompress, constants as zlib } from 'node:zlib'
import { Type as t, type Static } from '@sinclair/typebox'
import tar from 'tar-stream'

export const FORMAT = 'quadrax-backup'
export const FORMAT_VERSION = 1
/** A table chunk is buffered whole before it is written: this bounds the memory a backup takes. */
export const CHUNK_BYTES = 8 * 1024 * 1024
export const MANIFEST = 'manifest.json'
export const MANIFEST_SUM = 'manifest.json.sha256'

export type Compression = 'zstd' | 'gzip'

const sha256 = t.String({ pattern: '^[0-9a-f]{64}$' })
const entry = t.Object({ name: t.String(), size: t.Integer({ minimum: 0 }), sha256 })

/** What manifest.json holds (checked with this schema before a restore trusts it). */
export namespace BackupModel {
  export const file = t.Object({ name: t.String(), size: t.Integer({ minimum: 0 }), sha256, mode: t.Integer(), mtime: t.String() })
  export type file = Static<typeof file>
  export const table = t.Object({
    name: t.String(),
    /** The columns copied, in order (generated columns are left out: PostgreSQL computes them). */
    columns: t.Array(t.String()),
    rows: t.Integer({ minimum: 0 }),
    bytes: t.Integer({ minimum: 0 }),
    chunks: t.Array(entry),
  })
  export type table = Static<typeof table>
  export const manifest = t.Object({
    format: t.Literal(FORMAT),
    formatVersion: t.Integer(),
    createdAt: t.String(),
    app: t.Object({ name: t.String(), version: t.String(), commit: t.Union([t.String(), t.Null()]) }),
    database: t.Object({
      server: t.String(),
      /** The migrations the snapshot was at (schema_migrations): restore recreates the schema from them. */
      migrations: t.Array(t.Object({ version: t.Integer(), name: t.String(), checksum: t.String() })),
      tables: t.Array(table),
      sequences: t.Array(t.Object({ name: t.String(), lastValue: t.Integer(), isCalled: t.Boolean() })),
    }),
    /** The folders the files came from (for the record: a restore writes to its own configuration). */
    roots: t.Object({ data: t.String(), uploads: t.String(), models: t.String() }),
    files: t.Array(file),
    /** Files the snapshot's rows name that were gone when the files were copied (deleted meanwhile). */
    missing: t.Array(t.String()),
  })
  export type manifest = Static<typeof manifest>
}

/** The archive is damaged or not one of ours: nothing was written. */
export class ArchiveError extends Error {
  override name = 'ArchiveError'
}

export function compressionFor(file: string): Compression {
  return /\.(tar\.gz|tgz|gz)$/.test(file) ? 'gzip' : 'zstd'
}

function compressor(c: Compression): Transform {
  // zstd's own frame checksum on: a damaged archive fails in the decompressor too.
  return c === 'gzip' ? createGzip({ level: 6 }) : createZstdCompress({ params: { [zlib.ZSTD_c_checksumFlag]: 1 } })
}

/** gzip or zstd, by the file's first bytes. */
function sniff(path: string): Compression {
  const fd = openSync(path, 'r')
  try {
    const head = Buffer.alloc(4)
    const n = readSync(fd, head, 0, 4, 0)
    if (n >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip'
    if (n === 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd'
  } finally {
    closeSync(fd)
  }
  throw new ArchiveError(`${path} is not a backup archive (neither zstd nor gzip)`)
}

export interface EntryHeader {
  name: string
  size: number
  mode?: number
  mtime?: Date
}

/** Writes entries one after another into `path` (created: an existing file is never overwritten). */
export class ArchiveWriter {
  readonly #pack = tar.pack()
  readonly #done: Promise<void>
  #failure: Error | undefined
  readonly #failed: Promise<never>

  constructor(path: string, compression: Compression) {
    let fail!: (err: Error) => void
    this.#failed = new Promise<never>((_, reject) => (fail = reject))
    this.#failed.catch(() => {})
    // tar-stream's streams are streamx streams: Readable.from bridges its async iterator into
    // a Node pipeline, pulling only as fast as the file takes the bytes (backpressure).
    this.#done = pipeline(Readable.from(this.#pack), compressor(compression), createWriteStream(path, { flags: 'wx', mode: 0o600 }))
    this.#done.catch((err: Error) => {
      this.#failure = err
      fail(err)
      this.#pack.destroy(err)
    })
  }

  /** Add one entry of exactly `header.size` bytes; resolves once they are in the archive stream. */
  async add(header: EntryHeader, body: Uint8Array | AsyncIterable<Uint8Array>): Promise<void> {
    if (this.#failure) throw this.#failure
    let finished!: () => void
    let broke!: (err: Error) => void
    const written = new Promise<void>((resolve, reject) => ((finished = resolve), (broke = reject)))
    const sink = this.#pack.entry({ name: header.name, size: header.size, mode: header.mode ?? 0o600, mtime: header.mtime ?? new Date(), type: 'file' }, (err) => (err ? broke(err) : finished()))
    const drained = () => Promise.race([new Promise<void>((r) => sink.once('drain', () => r())), written, this.#failed])
    if (body instanceof Uint8Array) sink.write(body)
    else for await (const chunk of body) if (!sink.write(chunk)) await drained()
    // streamx's types make end's argument required; like Node's, it is optional (nothing more to write).
    sink.end(undefined)
    await Promise.race([written, this.#failed])
  }

  /** End the archive and wait until every byte is in the file. */
  async finish(): Promise<void> {
    this.#pack.finalize()
    await this.#done
  }

  /** Stop writing (the caller removes the partial file). */
  async abort(err: Error): Promise<void> {
    this.#pack.destroy(err)
    await this.#done.catch(() => {})
  }
}

export interface ArchiveEntry {
  name: string
  size: number
  mode: number
  mtime: Date
  /** The entry's bytes: must be read to the end (or the archive stops) before the next entry. */
  body: AsyncIterable<Buffer>
}

/** The entries of the archive at `path`, in order. A damaged archive throws ArchiveError. */
export async function* readArchive(path: string): AsyncGenerator<ArchiveEntry> {
  const extract = tar.extract()
  const feeding = pipeline(createReadStream(path), compression(path), extract as unknown as NodeJS.WritableStream).catch((err: Error) => {
    extract.destroy(err)
    throw err
  })
  feeding.catch(() => {})
  try {
    for await (const e of extract) {
      const h = e.header
      if (h.type !== 'file') throw new ArchiveError(`unexpected ${h.type} entry ${h.name} in the archive`)
      yield { name: h.name, size: h.size, mode: h.mode, mtime: h.mtime, body: damagedAs(e as AsyncIterable<Buffer>) }
    }
    await feeding
  } catch (err) {
    throw damaged(err)
  } finally {
    extract.destroy()
  }
}

function damaged(err: unknown): Error {
  return err instanceof ArchiveError ? err : new ArchiveError(`the archive is damaged: ${(err as Error).message}`, { cause: err })
}

/** An entry's bytes, where a failure to read them (a cut-short or corrupt stream) is an ArchiveError. */
async function* damagedAs(body: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  try {
    yield* body
  } catch (err) {
    throw damaged(err)
  }
}

function compression(path: string): Transform {
  return sniff(path) === 'gzip' ? createGunzip() : createZstdDecompress()
}

/** sha256 and length of a stream of bytes, passing them on to `each` (if given) as they come. */
export async function digest(body: AsyncIterable<Uint8Array>, each?: (chunk: Uint8Array) => void | Promise<void>): Promise<{ sha256: string; size: number }> {
  const h = new Bun.CryptoHasher('sha256')
  let size = 0
  for await (const chunk of body) {
    h.update(chunk)
    size += chunk.byteLength
    if (each) await each(chunk)
  }
  return { sha256: h.digest('hex'), size }
}
