/**
 * An upload's work in a dataset worker: its gzip layer removed within a byte bound, its width
 * checked, its rows converted to Parquet within a row bound, and (profile) summarised.
 */
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { createGunzip } from 'node:zlib'
import type { DuckDBConnection } from '@duckdb/node-api'
import { AppError } from '../../core/errors.ts'
import { withDuckDB } from './duckdb-instance.ts'
import { summarize } from './duckdb-profile.ts'
import { reader, writeParquet } from './duckdb-read.ts'
import type { DatasetLimits } from './engine.ts'
import { DatasetLimitError, DatasetParseError, readFailure } from './errors.ts'
import { splitFormat, type DatasetFormat } from './format.ts'
import type { DatasetProfile } from './profile.ts'
import type { SandboxOp } from './sandbox-ops.ts'

/**
 * The file DuckDB should read: `src` itself, or for a gzip upload its content decompressed
 * into `scratch`, counted as it is written and stopped past `limits.maxDecompressedBytes`
 * (a 1.4 MB gzip bomb inflates to 1.5 GB of rows). Reading the plain copy is also faster:
 * DuckDB reads a gzip stream on one thread, plain CSV on all of them (1M rows, 40 MB:
 * 0.72 s from gzip, 0.21 s to decompress here + 0.32 s to read).
 */
export async function decompressed(src: string, format: DatasetFormat, scratch: string, limits: DatasetLimits): Promise<{ path: string; format: DatasetFormat }> {
  const { base, gzip } = splitFormat(format)
  if (!gzip) return { path: src, format }
  await mkdir(scratch, { recursive: true })
  const path = join(scratch, `plain.${base}`)
  let bytes = 0
  const gunzip = createGunzip()
  try {
    await pipeline(
      createReadStream(src),
      gunzip,
      async function* (chunks: AsyncIterable<Buffer>) {
        for await (const chunk of chunks) {
          bytes += chunk.length
          if (bytes > limits.maxDecompressedBytes) throw DatasetLimitError.decompressed(limits.maxDecompressedBytes)
          yield chunk
        }
      },
      createWriteStream(path),
    )
  } catch (err) {
    await rm(path, { force: true })
    if (err instanceof AppError) throw err
    // zlib: a truncated or corrupt stream (its head was fine, or detectFormat would have refused it).
    throw new DatasetParseError(`The gzip file could not be read: it is corrupt or cut short after ${bytes} decompressed bytes`)
  }
  return { path, format: base }
}

/**
 * Check the source's width (DuckDB's sniffer reads a sample only), then convert it to Parquet
 * at `dest`, refused past DATAKIT_MAX_ROWS without reading further (see writeParquet).
 */
export async function convert(c: DuckDBConnection, src: string, dest: string, format: DatasetFormat, limits: DatasetLimits): Promise<void> {
  // A file the reader cannot even sniff is reported by the conversion, with its line.
  const columns = await c
    .runAndReadAll(`DESCRIBE SELECT * FROM ${await reader(src, format, false)}`)
    .then((r) => r.currentRowCount)
    .catch(() => 0)
  if (columns > limits.maxColumns) throw DatasetLimitError.columns(limits.maxColumns, columns)
  await writeParquet(c, src, dest, format, { maxRows: limits.maxRows })
}

export async function profile(duck: { threads: number; memoryLimit: string; spillDir?: string }, op: Extract<SandboxOp, { kind: 'profile' }>): Promise<DatasetProfile> {
  const plain = await decompressed(op.src, op.format, op.scratch, op.limits)
  return withDuckDB(duck, async (c) => {
    await convert(c, plain.path, op.parquetPath, plain.format, op.limits)
    try {
      return await summarize(c, op.parquetPath, op.topValues)
    } catch (err) {
      // An uploaded Parquet file is copied as is, so this is where a corrupt one shows; a
      // profile that failed leaves no copy behind.
      await rm(op.parquetPath, { force: true })
      throw readFailure(err, 'Parquet', op.parquetPath, { ioIsFileFault: splitFormat(op.format).base === 'parquet' })
    }
  })
}
