/**
 * A cell's outputs as the server keeps them: pure functions, no I/O.
 *
 * - `collapseTerminal`: `\r` and `\b` in stream text as a terminal shows them — a carriage
 *   return goes back to the start of the line and what follows overwrites it, a backspace
 *   moves one character back (tqdm's and Keras' progress bars redraw themselves this way), so
 *   a bar redrawn ten thousand times is kept as the one line a terminal would show.
 * - `OutputShaper`: turns what the kernel produced, in order, into the cell's stored outputs,
 *   numbered from 0: consecutive stream outputs of the same name are merged into one output
 *   (collapsed), whose row is rewritten in place while it is small (STREAM_ROW_BYTES) and
 *   closed at a line end past that, so appending never rewrites more than a few KiB; the
 *   cell's outputs are capped at `maxBytes` (CODESHEET_MAX_OUTPUT_BYTES), past which one
 *   marker output says so and how much more was dropped; `clear_output` starts them again.
 *   `take()` hands over what changed
 *   since the last call (each index at most once, its latest content), so a burst of output
 *   becomes one write however many pieces it came in.
 * - `coalesceStreams`: the merge as nbformat tools do it on save, for export.
 * - `cleanText` / `cleanOutput`: PostgreSQL text and jsonb hold neither NUL characters nor
 *   unpaired surrogates: each becomes U+FFFD.
 */
import type { NbOutput } from '../../engines/kernels/kernel.ts'

/** A stream output's row is rewritten in place (merged) while its JSON is under this many bytes. */
export const STREAM_ROW_BYTES = 2048

const NEEDS_CLEANING = /[\u0000\uD800-\uDFFF]/
const UNCLEAN = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g

/** `text` with NUL characters and unpaired surrogates replaced by U+FFFD (PostgreSQL holds neither). */
export function cleanText(text: string): string {
  return NEEDS_CLEANING.test(text) ? text.replace(UNCLEAN, '\uFFFD') : text
}

/** Every string inside `value` cleaned (see cleanText); the same object when nothing needed it. */
export function cleanJson<T>(value: T): T {
  if (typeof value === 'string') return cleanText(value) as T
  if (Array.isArray(value)) {
    let changed = false
    const out = value.map((v) => {
      const c = cleanJson(v)
      if (c !== v) changed = true
      return c
    })
    return (changed ? out : value) as T
  }
  if (value !== null && typeof value === 'object') {
    let changed = false
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) {
      const ck = cleanText(k)
      const cv = cleanJson(v)
      if (ck !== k || cv !== v) changed = true
      out[ck] = cv
    }
    return (changed ? out : value) as T
  }
  return value
}

const cleanOutput = (o: NbOutput): NbOutput => cleanJson(o)

/** UTF-8 bytes of an output's JSON: what the cap counts. */
export function outputBytes(o: unknown): number {
  return Buffer.byteLength(JSON.stringify(o))
}

const CONTROL = /[\r\b]/

/**
 * Stream text as a terminal shows it: within each line, `\r` returns to its start and `\b`
 * goes one character back, and characters overwrite what is under the cursor. When the text
 * ends with the cursor inside its last line (a progress bar's trailing `\r`), that position is
 * kept as `\r` + the characters before it, so text appended later overwrites the right place;
 * collapsing collapsed text changes nothing.
 */
export function collapseTerminal(text: string): string {
  if (!CONTROL.test(text)) return text
  const lines = text.split('\n')
  const last = lines.length - 1
  for (let i = 0; i <= last; i++) {
    const seg = lines[i]!
    if (!CONTROL.test(seg)) continue
    const buf: string[] = []
    let cursor = 0
    for (const ch of seg) {
      if (ch === '\r') cursor = 0
      else if (ch === '\b') cursor = Math.max(0, cursor - 1)
      else buf[cursor++] = ch
    }
    let line = buf.join('')
    // A line that goes on (the last one) keeps where its cursor is; `\r\n` simply ends a line.
    if (i === last && cursor < buf.length) line += '\r' + buf.slice(0, cursor).join('')
    lines[i] = line
  }
  return lines.join('\n')
}

/** Consecutive stream outputs of the same name merged (and collapsed), as nbformat tools save them. */
export function coalesceStreams(outputs: readonly NbOutput[]): NbOutput[] {
  const out: NbOutput[] = []
  for (const o of outputs) {
    const prev = out[out.length - 1]
    if (o.output_type === 'stream' && prev?.output_type === 'stream' && prev.name === o.name) {
      out[out.length - 1] = { output_type: 'stream', name: o.name, text: collapseTerminal(prev.text + o.text) }
    } else if (o.output_type === 'stream') out.push({ output_type: 'stream', name: o.name, text: collapseTerminal(o.text) })
    else out.push(o)
  }
  return out
}

/** One stored output changed: `outputs[index] = output` (a new one when index is the next number). */
export interface OutputOp {
  index: number
  output: NbOutput
  bytes: number
}

/** What changed since the last batch: the outputs were cleared first (`clear_output`), then these. */
export interface OutputBatch {
  clear: boolean
  ops: OutputOp[]
}

/** The marker output that ends a truncated cell's outputs. */
function truncationMarker(limitBytes: number, droppedBytes: number): NbOutput {
  return {
    output_type: 'display_data',
    data: {
      'text/plain':
        `[Output truncated: this cell's outputs reached the limit of ${limitBytes} bytes (CODESHEET_MAX_OUTPUT_BYTES); ` +
        `${droppedBytes} more byte${droppedBytes === 1 ? ' was' : 's were'} produced and not kept.]`,
    },
    metadata: { quadrax: { truncated: true, limitBytes, droppedBytes } },
  }
}

type Stream = Extract<NbOutput, { output_type: 'stream' }>

const streamOf = (name: Stream['name'], text: string): Stream => ({ output_type: 'stream', name, text })

/** The longest prefix of `text` whose stream output fits in `budget` bytes (never splitting a surrogate pair). */
function fittingPrefix(name: Stream['name'], text: string, budget: number): string {
  let lo = 0
  let hi = text.length
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2)
    if (outputBytes(streamOf(name, text.slice(0, mid))) <= budget) lo = mid
    else hi = mid - 1
  }
  const code = text.charCodeAt(lo - 1)
  if (lo > 0 && code >= 0xd800 && code <= 0xdbff) lo--
  return text.slice(0, lo)
}

/** See the module comment. One per execution. */
export class OutputShaper {
  #next = 0
  #bytes = 0
  /** The open stream row (merged into while small), and the bytes of each row. */
  #tail: { index: number; name: Stream['name']; text: string } | null = null
  readonly #rowBytes = new Map<number, number>()
  readonly #pending = new Map<number, NbOutput>()
  #marker: number | null = null
  #dropped = 0
  #markerDropped = -1
  /** Cleared since the last batch; a clear that waits for the next output. */
  #cleared = false
  #clearOnNext = false

  constructor(readonly maxBytes: number) {
    if (!(maxBytes > 0)) throw new Error('maxBytes must be > 0')
  }

  get truncated(): boolean {
    return this.#marker !== null
  }

  /**
   * `IPython.display.clear_output(wait)`: the outputs so far are dropped (with `wait`, only
   * when the next output comes), and the cell starts again from index 0 with its whole budget.
   */
  clear(wait: boolean): void {
    if (wait) this.#clearOnNext = true
    else this.#clear()
  }

  #clear(): void {
    this.#clearOnNext = false
    this.#cleared = true
    this.#next = 0
    this.#bytes = 0
    this.#tail = null
    this.#rowBytes.clear()
    this.#pending.clear()
    this.#marker = null
    this.#dropped = 0
    this.#markerDropped = -1
  }

  push(raw: NbOutput): void {
    if (this.#clearOnNext) this.#clear()
    const o = cleanOutput(raw)
    if (this.#marker !== null) {
      this.#dropped += o.output_type === 'stream' ? Buffer.byteLength(o.text) : outputBytes(o)
      return
    }
    if (o.output_type === 'stream') {
      const tail = this.#tail?.name === o.name ? this.#tail : null
      this.#stream(o.name, tail, tail ? tail.text + o.text : o.text)
      return
    }
    this.#tail = null
    const b = outputBytes(o)
    if (this.#bytes + b > this.maxBytes) {
      this.#truncate(b)
      return
    }
    this.#write(this.#next++, o, b)
  }

  /** What changed since the last call: a clear, then the outputs by index. */
  take(): OutputBatch {
    if (this.#marker !== null && this.#dropped !== this.#markerDropped) {
      this.#markerDropped = this.#dropped
      this.#pending.set(this.#marker, truncationMarker(this.maxBytes, this.#dropped))
    }
    const ops = [...this.#pending].sort((a, b) => a[0] - b[0]).map(([index, output]) => ({ index, output, bytes: this.#rowBytes.get(index) ?? outputBytes(output) }))
    const clear = this.#cleared
    this.#pending.clear()
    this.#cleared = false
    return { clear, ops }
  }

  /** Changes not taken yet. */
  get hasPending(): boolean {
    return this.#cleared || this.#pending.size > 0 || (this.#marker !== null && this.#dropped !== this.#markerDropped)
  }

  #write(index: number, o: NbOutput, bytes: number): void {
    this.#bytes += bytes - (this.#rowBytes.get(index) ?? 0)
    this.#rowBytes.set(index, bytes)
    this.#pending.set(index, o)
  }

  /**
   * Write `raw` (collapsed) as the open stream row `tail`, or as new rows: a row is closed once
   * past STREAM_ROW_BYTES, after its last line end (a line longer than that is cut in pieces of
   * STREAM_ROW_BYTES / 2 characters), and the rest goes on in the next row.
   */
  #stream(name: Stream['name'], tail: { index: number } | null, raw: string): void {
    const text = collapseTerminal(raw)
    const lastLineEnd = text.lastIndexOf('\n')
    let index = tail ? tail.index : this.#next++
    let pos = 0
    this.#tail = null
    for (;;) {
      const remaining = text.length - pos
      let end = text.length
      // Every character is at least one byte of JSON: only short text needs measuring.
      const closed = remaining > STREAM_ROW_BYTES || outputBytes(streamOf(name, text.slice(pos))) > STREAM_ROW_BYTES
      if (closed) {
        if (lastLineEnd >= pos) end = lastLineEnd + 1
        else {
          end = pos + Math.min(remaining, STREAM_ROW_BYTES / 2)
          const code = text.charCodeAt(end - 1)
          if (end < text.length && code >= 0xd800 && code <= 0xdbff) end--
        }
      }
      const piece = text.slice(pos, end)
      const bytes = outputBytes(streamOf(name, piece))
      const room = this.maxBytes - (this.#bytes - (this.#rowBytes.get(index) ?? 0))
      if (bytes > room) {
        const kept = fittingPrefix(name, piece, room)
        if (kept.length > 0) this.#write(index, streamOf(name, kept), outputBytes(streamOf(name, kept)))
        else if (!this.#rowBytes.has(index)) this.#next-- // never written: its number is the marker's
        this.#truncate(Buffer.byteLength(text.slice(pos)) - Buffer.byteLength(kept))
        return
      }
      this.#write(index, streamOf(name, piece), bytes)
      if (!closed) {
        this.#tail = { index, name, text: piece }
        return
      }
      if (end === text.length) return
      pos = end
      index = this.#next++
    }
  }

  #truncate(droppedBytes: number): void {
    this.#tail = null
    this.#dropped += droppedBytes
    this.#marker = this.#next++
  }
}

/**
 * Hands a shaper's changes to `send` one batch at a time: the first output after a quiet spell
 * goes at once; while a batch is being written, what arrives waits and goes in the next (so a
 * flood of output costs one write per `minIntervalMs`, not one per piece). `drain` sends the
 * rest without waiting.
 */
export class OutputPump {
  #inflight: Promise<void> | null = null
  #lastStart = 0
  #draining = false

  constructor(
    private readonly shaper: OutputShaper,
    private readonly send: (batch: OutputBatch) => Promise<void>,
    private readonly minIntervalMs = 50,
  ) {}

  /** Something was pushed to the shaper. */
  kick(): void {
    this.#inflight ??= this.#loop()
  }

  /** Resolves when everything pushed so far has been sent. */
  async drain(): Promise<void> {
    this.#draining = true
    while (this.#inflight || this.shaper.hasPending) {
      this.kick()
      await this.#inflight
    }
  }

  async #loop(): Promise<void> {
    try {
      while (this.shaper.hasPending) {
        const wait = this.#lastStart + this.minIntervalMs - Date.now()
        if (wait > 0 && !this.#draining) await new Promise((r) => setTimeout(r, wait))
        this.#lastStart = Date.now()
        const batch = this.shaper.take()
        // A failed batch is dropped: `send` reports its own failures, and what follows still goes.
        if (batch.clear || batch.ops.length > 0) await this.send(batch).catch(() => {})
      }
    } finally {
      this.#inflight = null
    }
  }
}
