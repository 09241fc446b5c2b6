/**
 * Notebooks as files: nbformat 4 (https://nbformat.readthedocs.io/en/latest/format_description.html)
 * as TypeBox schemas, a file read into cells (`readNotebook`, for import) and a sheet written as
 * one (`writeNotebook`, for export: nbformat 4.5, with cell ids, outputs and execution counts).
 *
 * Reading is strict where nbformat's own schema is (no unknown fields in cells and outputs:
 * they could not be kept) and lenient where files in the wild differ harmlessly: multi-line
 * strings may be lists of lines (joined), cells of files older than 4.5 have no ids (given one).
 * Every problem is reported with its path (`cells[3].outputs[0].name`), so a bad file gets a
 * 422 that says what is wrong.
 *
 * Writing merges consecutive stream outputs (as Jupyter saves them) and sorts keys, as
 * nbformat does; reading what was written and writing it again gives the same file.
 */
import { Type as T, type Static, type TSchema } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import type { KernelName, NbOutput } from '../../engines/kernels/kernel.ts'
import type { ErrorDetail } from '../../core/errors.ts'
import { cleanJson, cleanText, coalesceStreams } from './outputs.ts'

const closed = { additionalProperties: false } as const
const MultiLine = T.Union([T.String(), T.Array(T.String())], { description: 'A string, or a list of lines to join' })
const Metadata = T.Record(T.String(), T.Unknown())
const MimeBundle = T.Record(T.String(), T.Unknown(), { description: 'MIME type → data: text (`image/png`: base64), or JSON for `application/json` and `+json` types' })
const ExecutionCount = T.Union([T.Integer({ minimum: 0 }), T.Null()])

export const CELL_ID_PATTERN = '^[A-Za-z0-9_-]{1,64}$'
export const CellId = T.String({ pattern: CELL_ID_PATTERN, description: 'nbformat 4.5 cell id: 1–64 letters, digits, `-` and `_`' })

/** nbformat 4 output objects, as stored and as the API and events show them. */
const StreamOutput = T.Object({ output_type: T.Literal('stream'), name: T.Union([T.Literal('stdout'), T.Literal('stderr')]), text: T.String() }, closed)
const DisplayDataOutput = T.Object({ output_type: T.Literal('display_data'), data: MimeBundle, metadata: Metadata }, closed)
const ExecuteResultOutput = T.Object({ output_type: T.Literal('execute_result'), execution_count: ExecutionCount, data: MimeBundle, metadata: Metadata }, closed)
const ErrorOutput = T.Object({ output_type: T.Literal('error'), ename: T.String(), evalue: T.String(), traceback: T.Array(T.String()) }, closed)
export const Output = T.Union([StreamOutput, DisplayDataOutput, ExecuteResultOutput, ErrorOutput], {
  description: 'An nbformat 4 output: `stream` (stdout/stderr text), `display_data` and `execute_result` (MIME bundles: a matplotlib figure is `image/png`), `error` (ename, evalue, traceback)',
})

// What a file may hold: the same with multi-line strings as lists.
const FILE_OUTPUTS: Record<string, TSchema> = {
  stream: T.Object({ output_type: T.Literal('stream'), name: T.Union([T.Literal('stdout'), T.Literal('stderr')]), text: MultiLine }, closed),
  display_data: T.Object({ output_type: T.Literal('display_data'), data: MimeBundle, metadata: Metadata }, closed),
  execute_result: T.Object({ output_type: T.Literal('execute_result'), execution_count: ExecutionCount, data: MimeBundle, metadata: Metadata }, closed),
  error: T.Object({ output_type: T.Literal('error'), ename: T.String(), evalue: T.String(), traceback: T.Array(T.String()) }, closed),
}
const Attachments = T.Record(T.String(), MimeBundle)
const FILE_CELLS: Record<string, TSchema> = {
  code: T.Object({ id: T.Optional(CellId), cell_type: T.Literal('code'), metadata: Metadata, source: MultiLine, execution_count: ExecutionCount, outputs: T.Array(T.Record(T.String(), T.Unknown())) }, closed),
  markdown: T.Object({ id: T.Optional(CellId), cell_type: T.Literal('markdown'), metadata: Metadata, source: MultiLine, attachments: T.Optional(Attachments) }, closed),
  raw: T.Object({ id: T.Optional(CellId), cell_type: T.Literal('raw'), metadata: Metadata, source: MultiLine, attachments: T.Optional(Attachments) }, closed),
}
const FileNotebook = T.Object(
  { nbformat: T.Literal(4), nbformat_minor: T.Integer({ minimum: 0 }), metadata: Metadata, cells: T.Array(T.Record(T.String(), T.Unknown())) },
  closed,
)

const compiled = new Map<TSchema, ReturnType<typeof TypeCompiler.Compile>>()
function problems(schema: TSchema, value: unknown, at: string): ErrorDetail[] {
  let check = compiled.get(schema)
  if (!check) compiled.set(schema, (check = TypeCompiler.Compile(schema)))
  if (check.Check(value)) return []
  const seen = new Set<string>()
  const out: ErrorDetail[] = []
  for (const e of check.Errors(value)) {
    const field = at + e.path.split('/').filter(Boolean).map((k) => (/^\d+$/.test(k) ? `[${k}]` : `.${k}`)).join('')
    if (seen.has(field)) continue
    seen.add(field)
    out.push({ field: field.replace(/^\./, '') || 'file', message: e.value === undefined ? 'Required' : e.message })
  }
  return out
}

type CellType = 'code' | 'markdown' | 'raw'

/** A cell as a notebook file holds it, read. */
export interface NotebookCell {
  id: string
  type: CellType
  source: string
  metadata: Record<string, unknown>
  attachments: Record<string, unknown> | null
  executionCount: number | null
  outputs: NbOutput[]
}

interface NotebookFile {
  metadata: Record<string, unknown>
  cells: NotebookCell[]
}

export type ReadResult = { ok: true; notebook: NotebookFile } | { ok: false; details: ErrorDetail[] }

const join = (s: string | string[]): string => (typeof s === 'string' ? s : s.join(''))
const isJsonMime = (mime: string) => mime === 'application/json' || mime.endsWith('+json')

/** Lists of lines joined in a MIME bundle's text values (JSON values are left as they are). */
function joinBundle(data: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [mime, v] of Object.entries(data)) out[mime] = !isJsonMime(mime) && Array.isArray(v) && v.every((x) => typeof x === 'string') ? v.join('') : v
  return out
}

function readOutput(o: Record<string, unknown>): NbOutput {
  switch (o.output_type) {
    case 'stream':
      return { output_type: 'stream', name: o.name as 'stdout' | 'stderr', text: join(o.text as string | string[]) }
    case 'display_data':
      return { output_type: 'display_data', data: joinBundle(o.data as Record<string, unknown>), metadata: o.metadata as Record<string, unknown> }
    case 'execute_result':
      return { output_type: 'execute_result', execution_count: o.execution_count as number | null, data: joinBundle(o.data as Record<string, unknown>), metadata: o.metadata as Record<string, unknown> }
    default:
      return { output_type: 'error', ename: o.ename as string, evalue: o.evalue as string, traceback: o.traceback as string[] }
  }
}

/** Read a notebook file's text; every problem found, with its path, when it is not one. */
export function readNotebook(text: string): ReadResult {
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (err) {
    return { ok: false, details: [{ field: 'file', message: `Not JSON: ${err instanceof Error ? err.message : String(err)}` }] }
  }
  const top = problems(FileNotebook, parsed, '')
  if (top.length) return { ok: false, details: top.slice(0, 20) }
  const nb = parsed as Static<typeof FileNotebook>
  const details: ErrorDetail[] = []
  const cells: NotebookCell[] = []
  const ids = new Set<string>()
  nb.cells.forEach((raw, i) => {
    const at = `cells[${i}]`
    const schema = FILE_CELLS[String(raw.cell_type)]
    if (!schema) {
      details.push({ field: `${at}.cell_type`, message: 'Expected code, markdown or raw' })
      return
    }
    const found = problems(schema, raw, at)
    const outputs: NbOutput[] = []
    if (raw.cell_type === 'code' && found.length === 0) {
      ;(raw.outputs as Array<Record<string, unknown>>).forEach((o, j) => {
        const os = FILE_OUTPUTS[String(o.output_type)]
        if (!os) found.push({ field: `${at}.outputs[${j}].output_type`, message: 'Expected stream, display_data, execute_result or error' })
        else {
          const p = problems(os, o, `${at}.outputs[${j}]`)
          if (p.length) found.push(...p)
          else outputs.push(cleanJson(readOutput(o)))
        }
      })
    }
    if (found.length) {
      details.push(...found)
      return
    }
    const id = typeof raw.id === 'string' ? raw.id : crypto.randomUUID()
    if (ids.has(id)) {
      details.push({ field: `${at}.id`, message: `Duplicate cell id ${JSON.stringify(id)}` })
      return
    }
    ids.add(id)
    cells.push({
      id,
      type: raw.cell_type as CellType,
      source: cleanText(join(raw.source as string | string[])),
      metadata: cleanJson(raw.metadata as Record<string, unknown>),
      attachments: raw.attachments === undefined ? null : cleanJson(raw.attachments as Record<string, unknown>),
      executionCount: raw.cell_type === 'code' ? (raw.execution_count as number | null) : null,
      outputs,
    })
  })
  if (details.length) return { ok: false, details: details.slice(0, 20) }
  return { ok: true, notebook: { metadata: cleanJson(nb.metadata), cells } }
}

/** The kernelspec a sheet's kernel is exported with (when its metadata names none). */
const KERNELSPECS: Record<KernelName, { name: string; display_name: string; language: string }> = {
  python3: { name: 'python3', display_name: 'Python 3 (ipykernel)', language: 'python' },
  shell: { name: 'shell', display_name: 'Shell (sh)', language: 'sh' },
}

/** The kernel a notebook's metadata asks for, if it says. */
export function kernelOf(metadata: Record<string, unknown>): KernelName | undefined {
  const spec = metadata.kernelspec as { name?: unknown; language?: unknown } | undefined
  const info = metadata.language_info as { name?: unknown } | undefined
  const words = [spec?.name, spec?.language, info?.name].filter((w): w is string => typeof w === 'string').map((w) => w.toLowerCase())
  if (words.some((w) => w.startsWith('python'))) return 'python3'
  if (words.some((w) => ['sh', 'bash', 'shell', 'zsh', 'busybox'].includes(w))) return 'shell'
  return undefined
}

/** JSON with sorted keys and one-space indentation, as nbformat writes files. */
function sortedJson(value: unknown): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort)
    if (v !== null && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sort((v as Record<string, unknown>)[k])]))
    return v
  }
  return JSON.stringify(sort(value), null, 1) + '\n'
}

/** A sheet as an nbformat 4.5 file. */
export function writeNotebook(sheet: { kernel: KernelName; metadata: Record<string, unknown> }, cells: readonly NotebookCell[]): string {
  const metadata = { ...sheet.metadata, kernelspec: sheet.metadata.kernelspec ?? KERNELSPECS[sheet.kernel] }
  return sortedJson({
    cells: cells.map((c) =>
      c.type === 'code'
        ? { cell_type: 'code', execution_count: c.executionCount, id: c.id, metadata: c.metadata, outputs: coalesceStreams(c.outputs), source: c.source }
        : { cell_type: c.type, id: c.id, metadata: c.metadata, source: c.source, ...(c.attachments ? { attachments: c.attachments } : {}) },
    ),
    metadata,
    nbformat: 4,
    nbformat_minor: 5,
  })
}
