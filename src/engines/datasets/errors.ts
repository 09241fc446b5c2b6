/**
 * Turning DuckDB's error text into errors a user can act on. DuckDB's C API exposes no error
 * code through @duckdb/node-api (the thrown Error carries only a message), so the message is
 * all there is; what we rely on is its stable shape: `<Type> Error: <message>` (DuckDB's
 * ExceptionTypeToString), `CSV Error on Line: N` from the CSV reader, `in line N` from the
 * JSON reader, and a `Possible fixes:` section of reader-option advice that means nothing to
 * someone who uploaded a file through a web form.
 */
import { AppError, UnprocessableError, type ErrorDetail } from '../../core/errors.ts'

/** A dataset that could not be read (malformed CSV/JSON…). `line` is DuckDB's 1-based line. */
export class DatasetParseError extends UnprocessableError {
  readonly line: number | undefined
  constructor(message: string, line?: number) {
    super(message, line === undefined ? [] : [{ field: 'line', message: String(line) }])
    this.line = line
  }
}

/** `{ field: 'limit', message: 'NAME=value' }`: the setting a refusal is about, in the envelope's details. */
function limitDetail(setting: string, value: number | string): ErrorDetail {
  return { field: 'limit', message: `${setting}=${value}` }
}

/**
 * A bound of the engine was reached: the operation was stopped (or refused) and nothing of it
 * was kept. `code` names the bound (`query_timeout`, `query_memory_exceeded`,
 * `too_many_columns`…), `details` the setting and its value (see limitDetail).
 */
export class LimitError extends AppError {
  constructor(code: string, message: string, status: 413 | 422 | 429, details: ErrorDetail[], headers?: Record<string, string>, cause?: unknown) {
    super(code, message, { status, details, headers, cause })
  }
}

/**
 * A sandboxed query (preview, export) that ran past its time limit and was stopped; `queued`:
 * the time ran out while it waited for a slot behind the same user's other operations.
 */
export class QueryTimeoutError extends LimitError {
  /** `exporting`: a whole-dataset export, bounded by DATAKIT_PROFILE_TIMEOUT_MS (it is as big as the dataset). */
  constructor(timeoutMs: number, queued = false, exporting = false) {
    const what = exporting ? 'export' : 'query'
    const setting = exporting ? 'DATAKIT_PROFILE_TIMEOUT_MS' : 'DATAKIT_QUERY_TIMEOUT_MS'
    const advice = exporting ? 'Export a query of the part you need instead (POST /api/datakits/:id/query/export).' : 'Narrow it down (filters, LIMIT, fewer joins) and try again.'
    super(
      'query_timeout',
      queued
        ? `The ${what} did not finish within ${timeoutMs} ms (${setting}): it waited all that time to start, for your other DataKit operations to finish (DATAKIT_QUERY_CONCURRENCY_PER_USER) or for a fresh worker after your earlier ones had theirs stopped. Run fewer at once.`
        : `The ${what} did not finish within ${timeoutMs} ms (${setting}) and was stopped. ${advice}`,
      422,
      [limitDetail(setting, timeoutMs)],
    )
  }
}

/** A sandboxed query (or preview, or export) that needed more memory than its process may use. */
export class QueryMemoryError extends LimitError {
  /** `cause`: what ran out (DuckDB's message, or the resident set the pool saw): for the log, never shown. */
  constructor(memoryMb: number, cause?: unknown) {
    super(
      'query_memory_exceeded',
      `The query needed more than ${memoryMb} MB of memory (DATAKIT_QUERY_MEMORY_MB) and was stopped. Aggregate or filter before returning large values, or add a LIMIT.`,
      422,
      [limitDetail('DATAKIT_QUERY_MEMORY_MB', memoryMb)],
      undefined,
      cause,
    )
  }
}

/** A query export whose file grew past its byte limit. */
export class ExportTooLargeError extends LimitError {
  constructor(maxBytes: number) {
    super(
      'export_too_large',
      `The export grew past ${maxBytes} bytes (DATAKIT_EXPORT_MAX_BYTES) and was stopped. Select fewer rows or columns, or export in parts.`,
      413,
      [limitDetail('DATAKIT_EXPORT_MAX_BYTES', maxBytes)],
    )
  }
}

/** A user with DATAKIT_QUERY_QUEUE_PER_USER operations already waiting for a slot. */
export class QueueFullError extends LimitError {
  constructor(queued: number) {
    super(
      'too_many_queued',
      `You already have ${queued} DataKit operations waiting (DATAKIT_QUERY_QUEUE_PER_USER); wait for them to finish and try again.`,
      429,
      [limitDetail('DATAKIT_QUERY_QUEUE_PER_USER', queued)],
      { 'retry-after': '1' },
    )
  }
}

/**
 * A preview or query that could not start within its time limit because its user had been
 * answered with more bytes of rows than DATAKIT_QUERY_BYTES_PER_SECOND allows (worker-pool.ts).
 */
export class AnswerRateError extends LimitError {
  constructor(bytesPerSecond: number, waitMs: number) {
    const seconds = Math.max(1, Math.ceil(waitMs / 1000))
    super(
      'answer_rate_exceeded',
      `Your DataKit queries and previews have been answered with rows faster than ${bytesPerSecond} bytes a second (DATAKIT_QUERY_BYTES_PER_SECOND), and this one ` +
        `could not start within its time limit: try again in ${seconds} s, or export the whole result as a file (POST /api/datakits/:id/query/export).`,
      429,
      [limitDetail('DATAKIT_QUERY_BYTES_PER_SECOND', bytesPerSecond)],
      { 'retry-after': String(seconds) },
    )
  }
}

/** Profiling (or conversion) that ran past DATAKIT_PROFILE_TIMEOUT_MS. */
export class ProfileTimeoutError extends LimitError {
  constructor(timeoutMs: number) {
    super(
      'profile_timeout',
      `Profiling the dataset did not finish within ${timeoutMs} ms (DATAKIT_PROFILE_TIMEOUT_MS) and was stopped. Upload a smaller or narrower file.`,
      422,
      [limitDetail('DATAKIT_PROFILE_TIMEOUT_MS', timeoutMs)],
    )
  }
}

/** Profiling (or conversion) that needed more memory than DATAKIT_PROFILE_MEMORY_MB. */
export class ProfileMemoryError extends LimitError {
  /** `cause`: as QueryMemoryError's. */
  constructor(memoryMb: number, cause?: unknown) {
    super(
      'profile_memory_exceeded',
      `Profiling the dataset needed more than ${memoryMb} MB of memory (DATAKIT_PROFILE_MEMORY_MB) and was stopped. Upload a narrower file (fewer columns) or a smaller one.`,
      422,
      [limitDetail('DATAKIT_PROFILE_MEMORY_MB', memoryMb)],
      undefined,
      cause,
    )
  }
}

/** A dataset past one of DATAKIT_MAX_DECOMPRESSED_BYTES (413), DATAKIT_MAX_ROWS or DATAKIT_MAX_COLUMNS (422). */
export class DatasetLimitError extends LimitError {
  static decompressed(maxBytes: number, atLeast?: number): DatasetLimitError {
    const size = atLeast === undefined ? 'more than' : `at least ${atLeast} bytes, more than`
    return new DatasetLimitError(
      'dataset_too_large',
      `The file decompresses to ${size} the ${maxBytes} bytes allowed (DATAKIT_MAX_DECOMPRESSED_BYTES). Upload a smaller file.`,
      413,
      [limitDetail('DATAKIT_MAX_DECOMPRESSED_BYTES', maxBytes)],
    )
  }

  static rows(maxRows: number): DatasetLimitError {
    return new DatasetLimitError(
      'too_many_rows',
      `The dataset has more than ${maxRows} rows (DATAKIT_MAX_ROWS). Upload a sample or split it into parts.`,
      422,
      [limitDetail('DATAKIT_MAX_ROWS', maxRows)],
    )
  }

  static columns(maxColumns: number, found: number | undefined): DatasetLimitError {
    const has = found === undefined ? `more than ${maxColumns}` : String(found)
    return new DatasetLimitError(
      'too_many_columns',
      `The dataset has ${has} columns; at most ${maxColumns} are allowed (DATAKIT_MAX_COLUMNS). Upload a narrower file (or split its columns into several DataKits).`,
      422,
      [limitDetail('DATAKIT_MAX_COLUMNS', maxColumns)],
    )
  }
}

/** The error type DuckDB put in front of the message, e.g. "Invalid Input", "Conversion". */
function duckErrorType(message: string): string | undefined {
  return /^([A-Za-z ]+?) Error: /.exec(message)?.[1]
}

/** The message without DuckDB's type prefix, e.g. "Parser Error: " or "Invalid Input Error: ". */
function withoutType(message: string): string {
  return message.replace(/^[A-Za-z ]+? Error: /, '')
}

/** `text` with every occurrence of `path` replaced, so server paths never reach a client. */
function redactPath(text: string, path: string, replacement: string): string {
  return path ? text.split(path).join(replacement) : text
}

const CSV_REASONS = [
  /^Expected Number of Columns: .*/m,
  /^Value with unterminated quote found\..*/m,
  /^Error when converting column .*/m,
  /^Invalid unicode .*/m,
  /^Maximum line size of .*/m,
]

const MAX_SNIPPET = 120

function snippet(s: string): string {
  const oneLine = s.split(/\r?\n/, 1)[0] ?? ''
  return oneLine.length > MAX_SNIPPET ? `${oneLine.slice(0, MAX_SNIPPET)}…` : oneLine
}

/** Line number DuckDB reported for a CSV or JSON read error, if any. */
function reportedLine(message: string): number | undefined {
  const m = /CSV Error on Line: (\d+)/.exec(message) ?? /\bin line (\d+)/.exec(message)
  return m ? Number(m[1]) : undefined
}

/** True for DuckDB's "the sniffer could not find a consistent dialect" failure (no line number). */
export function isCsvSniffFailure(message: string): boolean {
  return message.includes('Error when sniffing file')
}

/**
 * A value that does not fit the type DuckDB guessed from its sample of the file (a column
 * that looks numeric for 20,000 rows and then holds "n/a"). Not a broken file: reading again
 * with the whole file as sample fixes the guess.
 */
export function isTypeGuessFailure(message: string): boolean {
  return (duckErrorType(message) === 'Conversion' && message.includes('CSV Error on Line')) || message.includes('JSON transform error')
}

/**
 * The error to report for a dataset DuckDB failed to read. `label` names the format for the
 * user ("CSV", "JSON"); `path` is redacted from the message. `ioIsFileFault`: an I/O error
 * means the file is broken (a Parquet file whose footer points past its end), not the disk.
 */
export function readFailure(err: unknown, label: string, path: string, opts: { ioIsFileFault?: boolean } = {}): AppError {
  if (err instanceof AppError) return err
  const raw = err instanceof Error ? err.message : String(err)
  const type = duckErrorType(raw)
  const serverSide = ['INTERRUPT', 'Out of Memory', 'Permission', 'Internal', 'FATAL', ...(opts.ioIsFileFault ? [] : ['IO'])]
  // Interrupts, memory exhaustion and (usually) I/O failures are the server's problem, not the file's.
  if (type !== undefined && serverSide.includes(type)) {
    return new AppError('dataset_engine_failed', `DuckDB failed while reading the dataset: ${redactPath(raw, path, '<dataset>')}`, { status: 500, cause: err })
  }
  const message = redactPath(raw, path, '<dataset>')
  const line = reportedLine(message)
  if (/CSV Error on Line: \d+/.test(message)) {
    const original = /^Original Line: (.*)$/m.exec(message)?.[1]
    const known = CSV_REASONS.map((re) => re.exec(message)?.[0]).find((r) => r !== undefined)
    const beforeFixes = message.split(/\nPossible (?:fixes|solutions):/)[0]!.split('\n').filter((l) => l.trim())
    const reason = (known ?? beforeFixes.at(-1) ?? 'the row does not match the rest of the file').trim()
    const context = original !== undefined ? ` (the line starts: ${snippet(original)})` : ''
    return new DatasetParseError(`The ${label} file could not be read at line ${line}: ${reason}${context}`, line)
  }
  if (isCsvSniffFailure(message)) {
    return new DatasetParseError(`The ${label} file could not be read: its rows do not share one consistent layout (delimiter, quoting and number of columns)`)
  }
  // JSON reader: `Malformed JSON in file "<dataset>", at byte 26 in line 102: unexpected character.`
  const first = withoutType(message)
    .split(/\n\s*\n|\nLINE \d+:|\nTry /)[0]!
    .replace(/ in file "<dataset>",?/g, '')
    .replace(/"?<dataset>"?/g, 'the file')
    .trim()
  return new DatasetParseError(`The ${label} file could not be read: ${first}`, line)
}

/** True for DuckDB's "Out of Memory Error" (its memory_limit reached, spilling impossible or not allowed). */
export function isOutOfMemory(err: unknown): boolean {
  return duckErrorType(err instanceof Error ? err.message : String(err)) === 'Out of Memory'
}

/** A query error for the client: DuckDB's message with the server's paths (the dataset's, an export's) replaced by `data`. */
export function queryFailure(err: unknown, paths: string[]): UnprocessableError {
  const raw = err instanceof Error ? err.message : String(err)
  const text = paths.reduce((t, p) => redactPath(t, p, 'data'), raw)
  return new UnprocessableError(text.length > 2000 ? `${text.slice(0, 2000)}…` : text)
}
