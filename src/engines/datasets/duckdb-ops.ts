/**
 * The DuckDB work of the dataset engine, as one worker process (sandbox-worker.ts) runs it:
 * profiling and Parquet conversion of an upload, preview, sandboxed SQL and its export, and
 * whole-dataset export. Each operation gets a fresh in-memory DuckDBInstance, closed when it
 * ends: nothing one operation does (temp objects, settings, memory) outlives it. What bounds
 * it from outside — the process's memory, its time, the size of what it writes — is the
 * pool's job (worker-pool.ts), which kills the process past a bound; here the limits that
 * DuckDB itself can check (rows, columns, result bytes) are applied.
 *
 * This module dispatches each operation (runOp) and holds the reads (preview, query); the
 * operations and settings are declared in sandbox-ops.ts, and the parts live beside it:
 * duckdb-instance.ts (fresh instances, the spare), duckdb-upload.ts (decompression,
 * conversion, profiling), duckdb-sandbox.ts (the sandbox for user SQL), duckdb-export.ts
 * (COPY exports), duckdb-rows.ts (reading a result within its bounds).
 *
 * Paths handed to this module are server-generated (UUID names under UPLOAD_DIR); they are
 * still quoted as SQL literals, never spliced raw.
 */
import { join } from 'node:path'
import type { DuckDBConnection } from '@duckdb/node-api'
import { AppError } from '../../core/errors.ts'
import { exportDataset, exportQuery } from './duckdb-export.ts'
import { warmInstance, withDuckDB } from './duckdb-instance.ts'
import { countRows, lit } from './duckdb-read.ts'
import { readRows } from './duckdb-rows.ts'
import { inScratch, prepareSandbox, SANDBOX_DATA, sandboxed, sandboxResult, STREAMING_BUFFER } from './duckdb-sandbox.ts'
import { convert, decompressed, profile } from './duckdb-upload.ts'
import type { DatasetPreview } from './engine.ts'
import { isOutOfMemory, queryFailure } from './errors.ts'
import { sandboxLinks } from './sandbox-inputs.ts'
import { DUCKDB_OUT_OF_MEMORY, type SandboxOp, type SandboxResults, type WorkerSettings } from './sandbox-ops.ts'

/**
 * Everything a new worker does before its first operation, so that what it then holds is its
 * baseline (see rlimit.ts): DuckDB loaded with an instance of the operations' shape (the spare,
 * or one made and closed), and the sandbox's refusals worked out.
 */
export async function warmUp(settings: WorkerSettings): Promise<void> {
  if (settings.sandbox) await prepareSandbox()
  await warmInstance(settings)
}

/** Run one operation; errors are AppErrors meant for the user (or a 500 for what is not theirs). */
export async function runOp(settings: WorkerSettings, op: SandboxOp): Promise<SandboxResults[SandboxOp['kind']]> {
  const duck = (spill: boolean) => ({ threads: settings.threads, memoryLimit: settings.duckdbMemoryLimit, spillDir: spill ? join(op.scratch, 'spill') : undefined })
  try {
    switch (op.kind) {
      case 'profile':
        return await profile(duck(true), op)
      case 'toParquet': {
        const plain = await decompressed(op.src, op.format, op.scratch, op.limits)
        await withDuckDB(duck(true), (c) => convert(c, plain.path, op.dest, plain.format, op.limits))
        return null
      }
      case 'preview':
        return await withDuckDB(duck(false), (c) => preview(c, op))
      case 'query':
        return await inScratch(op.scratch, { [SANDBOX_DATA]: op.parquetPath }, () => withDuckDB(duck(false), (c) => query(c, op)))
      case 'exportQuery': {
        const links = { ...sandboxLinks(op.inputs), [sandboxResult(op.format)]: op.dest }
        return await inScratch(op.scratch, links, () => withDuckDB(duck(false), (c) => exportQuery(c, op)))
      }
      case 'export':
        return await withDuckDB(duck(true), (c) => exportDataset(c, op))
      default: {
        const unknown: never = op
        throw new Error(`unknown operation ${JSON.stringify(unknown)}`)
      }
    }
  } catch (err) {
    if (isOutOfMemory(err) || (err instanceof AppError && isOutOfMemory(err.cause))) {
      throw new AppError(DUCKDB_OUT_OF_MEMORY, err instanceof Error ? err.message : String(err), { status: 500 })
    }
    throw err
  }
}

/**
 * Rows `offset … offset+limit` of the Parquet copy, in file order, as JSON-safe values, with the
 * total row count from the Parquet footer; at most `maxBytes` of them.
 */
async function preview(c: DuckDBConnection, op: Extract<SandboxOp, { kind: 'preview' }>): Promise<SandboxResults['preview']> {
  const source = `read_parquet(${lit(op.parquetPath)})`
  await c.run(`SET streaming_buffer_size = ${lit(STREAMING_BUFFER)}`)
  const result = await c.stream(`SELECT * FROM ${source} LIMIT ${op.limit} OFFSET ${op.offset}`)
  const names = result.deduplicatedColumnNames()
  const types = result.columnTypes()
  const read = await readRows(() => result.fetchChunk(), names, { maxRows: op.limit, maxBytes: op.maxBytes, redact: [] })
  return {
    columns: names.map((name, i) => ({ name, type: String(types[i]!) })),
    rows: read.rows,
    offset: op.offset,
    limit: op.limit,
    totalRows: await countRows(c, source),
    truncated: read.truncatedBy !== null,
    bytes: read.bytes,
  }
}

/**
 * Run one read-only statement over the dataset, exposed as the view `data` (see sandboxed).
 * Results are streamed and reading stops at `maxRows` rows or `maxBytes` bytes of JSON,
 * whichever comes first (`truncatedBy` says which). Every refusal or failure is an
 * UnprocessableError (422) carrying DuckDB's message with the server's paths replaced.
 */
async function query(c: DuckDBConnection, op: Extract<SandboxOp, { kind: 'query' }>): Promise<SandboxResults['query']> {
  const started = performance.now()
  try {
    const prepared = await sandboxed(c, op.sql)
    const result = await prepared.stream()
    const names = result.deduplicatedColumnNames()
    const types = result.columnTypes()
    const read = await readRows(() => result.fetchChunk(), names, { maxRows: op.maxRows, maxBytes: op.maxBytes, redact: [op.parquetPath, op.scratch] })
    return {
      columns: names.map((name, i) => ({ name, type: String(types[i]!) })),
      // Bytes, not text: the server receives them in a third of the time and sends them as they are.
      rowsJson: Buffer.from(`[${read.json.join(',')}]`),
      bytes: read.bytes,
      rowCount: read.rows.length,
      truncated: read.truncatedBy !== null,
      truncatedBy: read.truncatedBy,
      elapsedMs: Math.round(performance.now() - started),
    }
  } catch (err) {
    if (err instanceof AppError || isOutOfMemory(err)) throw err
    throw queryFailure(err, [op.parquetPath, op.scratch])
  }
}
