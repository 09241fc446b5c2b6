/**
 * Turning DuckDB's error text into errors a user can act on. DuckDB's C API exposes no error
 * code through @duckdb/node-api (the thrown Error carries only a message), so the message is
 * all there is; what we rely on is its stable shape: `<Type> Error: <message>` (DuckDB's
 * ExceptionTypeToString), `CSV Error on Line: N` from the CSV reader, `in line N` from the
 * JSON reader, and a `Possible fixes:` section of reader-option advice that means nothing to
 * someone who uploaded a file through a web form.
 */
import { AppError, UnprocessableError } from '../../core/errors.ts'

/** A dataset that could not be read (malformed CSV/JSON…). `line` is DuckDB's 1-based line. */
export class DatasetParseError extends UnprocessableError {
  readonly line: number | undefined
  constructor(message: string, line?: number) {
    super(message, line === undefined ? [] : [{ field: 'line', message: String(line) }])
    this.line = line
  }
}

/** A sandboxed query that ran past its time limit (and was interrupted). */
export class QueryTimeoutError extends UnprocessableError {
  constructor(timeoutMs: number) {
    super(`The query did not finish within ${timeoutMs} ms and was stopped. Narrow it down (filters, LIMIT, fewer joins) and try again.`)
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

/** A query error for the client: DuckDB's message with the dataset's path replaced by `data`. */
export function queryFailure(err: unknown, parquetPath: string): UnprocessableError {
  const raw = err instanceof Error ? err.message : String(err)
  const text = redactPath(raw, parquetPath, 'data')
  return new UnprocessableError(text.length > 2000 ? `${text.slice(0, 2000)}…` : text)
}
