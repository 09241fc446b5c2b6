/**
 * The datasets one sandboxed statement reads, by the names its SQL knows them by: one Parquet
 * file is the view `data` (a DataKit query), several are views named by the caller (a
 * pipeline's `datakit.query` step, `{customers: …, orders: …}`).
 *
 * Inside the sandbox each input is a symbolic link `<name>.parquet` in the operation's scratch
 * directory (see SANDBOX_DATA in duckdb-sandbox.ts): the view's definition and DuckDB's messages
 * show that name, never a server path. Names are plain SQL identifiers, so they are safe both as
 * file names and as view names; `result` is the sandbox's own (the export's link).
 */
import { UnprocessableError } from '../../core/errors.ts'
import type { SqlInputs } from './engine.ts'

const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/
/** A statement reads at most this many datasets (each a view and a link). */
const MAX_INPUTS = 32
const RESERVED = new Set(['result'])

/** Inputs as given, or a 422 naming each bad name (`inputs.<name>`). */
export function checkInputs(inputs: SqlInputs): SqlInputs {
  const names = Object.keys(inputs)
  if (names.length === 0) throw new UnprocessableError('A query needs at least one dataset to read', [{ field: 'inputs', message: 'empty' }])
  if (names.length > MAX_INPUTS) throw new UnprocessableError(`A query reads at most ${MAX_INPUTS} datasets`, [{ field: 'inputs', message: `${names.length} given` }])
  const seen = new Set<string>()
  const details = []
  for (const name of names) {
    const folded = name.toLowerCase()
    if (!NAME.test(name)) details.push({ field: `inputs.${name}`, message: 'must be an SQL identifier: letters, digits and _, not starting with a digit, at most 63 characters' })
    else if (RESERVED.has(folded)) details.push({ field: `inputs.${name}`, message: 'is reserved by the sandbox' })
    // SQL names are case-insensitive: `Orders` and `orders` would be the same view.
    else if (seen.has(folded)) details.push({ field: `inputs.${name}`, message: 'differs from another name only in case' })
    seen.add(folded)
  }
  if (details.length) throw new UnprocessableError('Invalid dataset names for the query', details)
  return inputs
}

/** Link name → Parquet path, for the operation's scratch directory. */
export function sandboxLinks(inputs: SqlInputs): Record<string, string> {
  return Object.fromEntries(Object.entries(inputs).map(([name, path]) => [`${name}.parquet`, path]))
}

/** View name → the link it reads. */
export function sandboxViews(inputs: SqlInputs): Record<string, string> {
  return Object.fromEntries(Object.keys(inputs).map((name) => [name, `${name}.parquet`]))
}
