/**
 * Reading a dataset with DuckDB: the table function for each format (with our delimiter
 * detection: DuckDB's sniffer alone reads a file with one bad row as a single text column),
 * the Parquet copy every later read uses, and errors that name the line where a file broke.
 * Paths are server-generated and quoted as SQL literals, never spliced raw.
 */
import { copyFile, rename, rm } from 'node:fs/promises'
import type { DuckDBConnection } from '@duckdb/node-api'
import { AppError } from '../../core/errors.ts'
import { DatasetLimitError, DatasetParseError, isCsvSniffFailure, isTypeGuessFailure, readFailure } from './errors.ts'
import { confirmNdjsonLine, detectDelimiter, readTextHead, splitDelimitedLine, splitFormat, type DatasetFormat } from './format.ts'

/** SQL string literal. */
export function lit(s: string): string {
  if (s.includes('\0')) throw new AppError('invalid_path', 'path contains a NUL byte')
  return `'${s.replaceAll("'", "''")}'`
}

/** SQL identifier. */
export function ident(s: string): string {
  return `"${s.replaceAll('"', '""')}"`
}

/** Rows of a table function's result. */
export async function countRows(c: DuckDBConnection, source: string): Promise<number> {
  const r = await c.runAndReadAll(`SELECT count(*) AS n FROM ${source}`)
  return Number(r.getRowsJson()[0]?.[0] ?? 0)
}

/**
 * The table function reading `src` in `format`. CSV/TSV get an explicit delimiter (ours,
 * from the head) and RFC 4180 double quotes: left to guess everything, DuckDB's sniffer
 * reads a file with one bad row as a single text column instead of reporting the row.
 */
export async function reader(src: string, format: DatasetFormat, sampleAll: boolean): Promise<string> {
  const { base, gzip } = splitFormat(format)
  // read_csv spells "no compression" 'none', read_json 'uncompressed'.
  const compression = `compression=${gzip ? "'gzip'" : base === 'json' || base === 'ndjson' ? "'uncompressed'" : "'none'"}`
  const sample = sampleAll ? ', sample_size=-1' : ''
  switch (base) {
    case 'parquet':
      return `read_parquet(${lit(src)})`
    case 'json':
      return `read_json(${lit(src)}, format='auto', ${compression}${sample})`
    case 'ndjson':
      return `read_json(${lit(src)}, format='newline_delimited', ${compression}${sample})`
    case 'csv':
    case 'tsv': {
      const delim = base === 'tsv' ? '\t' : await csvDelimiter(src, gzip)
      const delimOpt = delim === undefined ? '' : `, delim=${lit(delim)}`
      return `read_csv(${lit(src)}${delimOpt}, quote='"', ${compression}${sample})`
    }
  }
}

async function csvDelimiter(src: string, gzip: boolean): Promise<string | undefined> {
  const head = await readTextHead(src, gzip)
  return head ? detectDelimiter(head.text, head.truncated) : undefined
}

/**
 * When DuckDB's sniffer gives up on a CSV it says so without a line number. Reading it
 * again with the dialect fixed (delimiter, RFC 4180 quotes, header, as many text columns
 * as the header has) makes the reader stop at the first row that breaks it, with its line.
 */
async function locateCsvError(c: DuckDBConnection, src: string, format: DatasetFormat): Promise<unknown> {
  const { base, gzip } = splitFormat(format)
  const head = await readTextHead(src, gzip)
  if (!head) return undefined
  const delim = base === 'tsv' ? '\t' : (detectDelimiter(head.text, head.truncated) ?? ',')
  const header = head.text.split(/\r\n|\n|\r/, 1)[0] ?? ''
  const width = splitDelimitedLine(header, delim).length
  const columns = Array.from({ length: width }, (_, i) => `'c${i}': 'VARCHAR'`).join(', ')
  try {
    await c.run(
      `SELECT count(*) FROM (SELECT * FROM read_csv(${lit(src)}, auto_detect=false, header=true, delim=${lit(delim)}, quote='"', escape='"', ` +
        `compression=${gzip ? "'gzip'" : "'none'"}, columns={${columns}}))`,
    )
    return undefined
  } catch (err) {
    return err
  }
}

/** A malformed-NDJSON failure re-pointed at the line that is really broken (see confirmNdjsonLine). */
async function ndjsonLineFixed(err: AppError, src: string, format: DatasetFormat): Promise<AppError> {
  const { base, gzip } = splitFormat(format)
  // 'json' too: read_json's auto mode reads one-object-per-line files the same way.
  if (!(err instanceof DatasetParseError) || err.line === undefined || (base !== 'ndjson' && base !== 'json') || !err.message.includes('Malformed JSON')) {
    return err
  }
  const line = await confirmNdjsonLine(src, gzip, err.line)
  return line === err.line ? err : new DatasetParseError(err.message.replace(`in line ${err.line}`, `in line ${line}`), line)
}

/**
 * COPY the source to a temporary Parquet file next to `dest`, then rename it into place.
 * `maxRows`: a source with more rows is refused (DatasetLimitError, DATAKIT_MAX_ROWS); a text
 * source is read up to one row past the limit and no further, so a file of 374 million rows
 * costs what reading maxRows + 1 of them does.
 */
export async function writeParquet(c: DuckDBConnection, src: string, dest: string, format: DatasetFormat, opts: { maxRows?: number } = {}): Promise<void> {
  const { base } = splitFormat(format)
  const label = base === 'ndjson' ? 'NDJSON' : base.toUpperCase()
  const tmp = `${dest}.tmp-${crypto.randomUUID()}`
  try {
    if (base === 'parquet') {
      // Already Parquet: a byte copy is the fast read copy. Its validity is checked by the
      // profile that reads it next; its rows are counted from the footer first.
      await copyFile(src, tmp)
    } else {
      // Snappy (DuckDB's default) rather than zstd: on the 1M-row benchmark CSV zstd made the
      // copy half the size (5.7 vs 10.9 MB) but cost ~15 % more CPU to write and ~5 % more to
      // read back, and profiling time is what the 1.5× budget is about.
      const limit = opts.maxRows === undefined ? '' : ` LIMIT ${opts.maxRows + 1}`
      const copy = async (sampleAll: boolean) =>
        c.run(`COPY (SELECT * FROM ${await reader(src, format, sampleAll)}${limit}) TO ${lit(tmp)} (FORMAT parquet, COMPRESSION snappy)`)
      try {
        await copy(false)
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err)
        if (isTypeGuessFailure(message)) {
          await rm(tmp, { force: true })
          try {
            await copy(true)
          } catch (again) {
            throw readFailure(again, label, src)
          }
        } else if (isCsvSniffFailure(message) && (base === 'csv' || base === 'tsv')) {
          throw readFailure((await locateCsvError(c, src, format)) ?? err, label, src)
        } else {
          throw await ndjsonLineFixed(readFailure(err, label, src), src, format)
        }
      }
    }
    // From the footer (a corrupt upload fails here or in the profile that reads it next).
    if (opts.maxRows !== undefined && (await countRows(c, `read_parquet(${lit(tmp)})`).catch(() => 0)) > opts.maxRows) throw DatasetLimitError.rows(opts.maxRows)
    await rename(tmp, dest)
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
}
