/**
 * Byte streams from the Docker Engine turned into lines.
 *
 * A container without a TTY has its output multiplexed: each frame is an 8-byte header
 * (byte 0: 1 = stdout, 2 = stderr; bytes 4–7: payload length, big-endian) and the payload
 * (https://docs.docker.com/engine/api/v1.41/#operation/ContainerAttach, "Stream format").
 * With `timestamps` every log message starts with an RFC 3339 time and a space.
 *
 * Everything here is bounded by the caller's limits, never by what a container prints: a
 * frame's payload is consumed as it arrives (not gathered whole), and a line is held only up
 * to the line limit, then handed on in pieces. A container that printed one 200 MB line
 * without a newline once grew the server by 2.3 GB (issue 14, item 5): the old decoder
 * joined the line until its newline.
 */
import { StringDecoder } from 'node:string_decoder'
import type { LogCut, LogLine } from './engine.ts'

type StreamName = LogLine['stream']

const TIMESTAMP = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})) /
/** Longest timestamp prefix the engine writes: RFC 3339 with nanoseconds and an offset, and the space (36). */
const STAMP_MAX = 40
const NEWLINE = 0x0a

/** Date from an RFC 3339 stamp with nanoseconds (Date.parse is only sure up to ms). */
function parseTimestamp(text: string): Date | null {
  const d = new Date(text.replace(/(\.\d{3})\d+/, '$1'))
  return Number.isNaN(d.getTime()) ? null : d
}

export interface LogLimits {
  /** A longer line is emitted in pieces of this many bytes, each but the last marked `partial`. */
  maxLineBytes: number
  /** Bytes of output decoded at most; past it, output is only counted (a LogCut marks the spot). */
  maxBytes?: number
}

interface Pending {
  parts: Buffer[]
  size: number
  at: Date | null
  text: StringDecoder
}

/**
 * Log or job output → lines, per stream, in order. A line longer than one frame (the engine
 * splits messages at 16 KiB) is joined, up to `maxLineBytes`; a longer one comes in pieces.
 * What it holds at any time (`retainedBytes`) is at most a frame header, a timestamp and one
 * line limit per stream.
 */
export class LogDecoder {
  readonly #timestamps: boolean
  readonly #maxLine: number
  readonly #maxBytes: number | undefined
  readonly #header = Buffer.alloc(8)
  #headerLen = 0
  #stream: StreamName = 'stdout'
  /** Payload bytes of the current frame not read yet. */
  #remaining = 0
  /** Collecting the current frame's timestamp. */
  #inStamp = false
  readonly #stamp = Buffer.alloc(STAMP_MAX)
  #stampLen = 0
  /** The current frame's timestamp: lines that start in it take it. */
  #frameAt: Date | null = null
  readonly #pending: Record<StreamName, Pending> = { stdout: pending(), stderr: pending() }
  #decoded = 0
  #dropped = 0
  #newlines = 0
  #cut = false
  #maxRetained = 0

  constructor(timestamps: boolean, limits: LogLimits) {
    if (!Number.isInteger(limits.maxLineBytes) || limits.maxLineBytes < 16) throw new Error('maxLineBytes must be an integer >= 16')
    if (limits.maxBytes !== undefined && !(limits.maxBytes >= 0)) throw new Error('maxBytes must be >= 0')
    this.#timestamps = timestamps
    this.#maxLine = limits.maxLineBytes
    this.#maxBytes = limits.maxBytes
  }

  /** Bytes of output past `maxBytes`, counted and dropped. */
  get droppedBytes(): number {
    return this.#dropped
  }

  /**
   * Lines of output read so far, decoded or only counted past `maxBytes` (the newlines in the
   * payload): what a reader paces by when lines, not bytes, are the cost (the engine's log
   * driver and this decoder do work per line).
   */
  get newlines(): number {
    return this.#newlines
  }

  /** Bytes held now (a partial header, a timestamp, unfinished lines). */
  get retainedBytes(): number {
    return this.#headerLen + this.#stampLen + this.#pending.stdout.size + this.#pending.stderr.size
  }

  /** The most `retainedBytes` ever reached. */
  get maxRetainedBytes(): number {
    return this.#maxRetained
  }

  push(chunk: Buffer): Array<LogLine | LogCut> {
    const out: Array<LogLine | LogCut> = []
    let i = 0
    while (i < chunk.length) {
      if (this.#remaining === 0) {
        const take = Math.min(8 - this.#headerLen, chunk.length - i)
        chunk.copy(this.#header, this.#headerLen, i, i + take)
        this.#headerLen += take
        i += take
        if (this.#headerLen < 8) break
        this.#headerLen = 0
        this.#stream = this.#header[0] === 2 ? 'stderr' : 'stdout'
        this.#remaining = this.#header.readUInt32BE(4)
        this.#inStamp = this.#timestamps
        this.#stampLen = 0
        this.#frameAt = null
        continue
      }
      const take = Math.min(this.#remaining, chunk.length - i)
      this.#remaining -= take
      this.#payload(chunk.subarray(i, i + take), this.#remaining === 0, out)
      i += take
    }
    return out
  }

  /** Whatever is left without a final newline, and the final count when output was dropped. */
  end(): Array<LogLine | LogCut> {
    const out: Array<LogLine | LogCut> = []
    // Past a cut nothing is pending (the cut ended the unfinished lines).
    if (!this.#cut) for (const stream of ['stdout', 'stderr'] as const) this.#emit(stream, false, out)
    if (this.#cut) out.push({ cut: true, maxBytes: this.#maxBytes!, droppedBytes: this.#dropped, final: true })
    return out
  }

  #payload(bytes: Buffer, frameEnd: boolean, out: Array<LogLine | LogCut>): void {
    if (this.#inStamp) {
      const take = Math.min(STAMP_MAX - this.#stampLen, bytes.length)
      bytes.copy(this.#stamp, this.#stampLen, 0, take)
      this.#stampLen += take
      bytes = bytes.subarray(take)
      if (this.#stampLen < STAMP_MAX && !frameEnd) return
      this.#inStamp = false
      let head = this.#stamp.subarray(0, this.#stampLen)
      const m = TIMESTAMP.exec(head.toString('latin1'))
      if (m) {
        head = head.subarray(m[0].length)
        this.#frameAt = parseTimestamp(m[1]!)
      }
      this.#stampLen = 0
      this.#budget(head, out)
    }
    this.#budget(bytes, out)
  }

  /** Output within the budget is decoded; past it, only counted. */
  #budget(bytes: Buffer, out: Array<LogLine | LogCut>): void {
    if (bytes.length === 0) return
    if (this.#cut) {
      this.#dropped += bytes.length
      this.#countNewlines(bytes)
      return
    }
    const max = this.#maxBytes
    if (max !== undefined && this.#decoded + bytes.length > max) {
      const keep = max - this.#decoded
      this.#lines(bytes.subarray(0, keep), out)
      this.#decoded = max
      this.#dropped += bytes.length - keep
      this.#countNewlines(bytes.subarray(keep))
      this.#cut = true
      // Unfinished lines end here: what follows them is not decoded.
      for (const stream of ['stdout', 'stderr'] as const) if (this.#pending[stream].size > 0) this.#emit(stream, true, out)
      out.push({ cut: true, maxBytes: max, droppedBytes: this.#dropped, final: false })
      return
    }
    this.#decoded += bytes.length
    this.#lines(bytes, out)
  }

  /** Lines past the budget: not decoded, but counted (see newlines). */
  #countNewlines(bytes: Buffer): void {
    for (let at = bytes.indexOf(NEWLINE); at !== -1; at = bytes.indexOf(NEWLINE, at + 1)) this.#newlines++
  }

  /** Decode `bytes` into lines (each newline found is counted in #newlines). */
  #lines(bytes: Buffer, out: Array<LogLine | LogCut>): void {
    const stream = this.#stream
    const p = this.#pending[stream]
    let start = 0
    while (start <= bytes.length) {
      const nl = bytes.indexOf(NEWLINE, start)
      const end = nl === -1 ? bytes.length : nl
      if (nl !== -1) this.#newlines++
      if (nl !== -1 && p.size === 0 && end - start <= this.#maxLine) {
        // The usual case: a whole line inside this payload, nothing pending (the text decoder
        // holds nothing either, a line's end resets it), decoded in place.
        let line = bytes.toString('utf8', start, end)
        if (line.endsWith('\r')) line = line.slice(0, -1)
        out.push({ stream, line, at: p.at ?? this.#frameAt })
        p.at = null
        start = nl + 1
        continue
      }
      for (let s = start; s < end; ) {
        // A full piece goes out only when the line goes on, so a line of exactly the limit is one line.
        if (p.size >= this.#maxLine) this.#emit(stream, true, out)
        if (p.size === 0 && p.parts.length === 0) p.at ??= this.#frameAt
        const take = Math.min(this.#maxLine - p.size, end - s)
        p.parts.push(Buffer.from(bytes.subarray(s, s + take)))
        p.size += take
        s += take
      }
      const retained = this.retainedBytes
      if (retained > this.#maxRetained) this.#maxRetained = retained
      if (nl === -1) return
      p.at ??= this.#frameAt
      this.#emit(stream, false, out, true)
      start = nl + 1
    }
  }

  /** The pending bytes of `stream` as a line (`partial`: a piece of a longer one). */
  #emit(stream: StreamName, partial: boolean, out: Array<LogLine | LogCut>, newline = false): void {
    const p = this.#pending[stream]
    const buf = p.parts.length === 1 ? p.parts[0]! : Buffer.concat(p.parts, p.size)
    // The decoder keeps a character cut at a piece's end for the next piece.
    let line = p.text.write(buf)
    if (!partial) line += p.text.end()
    p.parts = []
    p.size = 0
    if (!newline && !partial && line === '') return
    if (!partial && line.endsWith('\r')) line = line.slice(0, -1)
    out.push(partial ? { stream, line, at: p.at, partial: true } : { stream, line, at: p.at })
    if (!partial) p.at = null
  }
}

function pending(): Pending {
  return { parts: [], size: 0, at: null, text: new StringDecoder('utf8') }
}

/** Newline-delimited JSON (the events endpoint) → parsed objects. */
export class JsonLineDecoder {
  private rest = ''
  private readonly text = new StringDecoder('utf8')

  push(chunk: Buffer): unknown[] {
    const lines = (this.rest + this.text.write(chunk)).split('\n')
    this.rest = lines.pop() ?? ''
    return lines.filter((l) => l.trim()).map((l) => JSON.parse(l) as unknown)
  }
}
