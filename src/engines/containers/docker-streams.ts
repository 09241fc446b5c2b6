/**
 * Byte streams from the Docker Engine turned into lines.
 *
 * A container without a TTY has its output multiplexed: each frame is an 8-byte header
 * (byte 0: 1 = stdout, 2 = stderr; bytes 4–7: payload length, big-endian) and the payload
 * (https://docs.docker.com/engine/api/v1.41/#operation/ContainerAttach, "Stream format").
 * With `timestamps` every log message starts with an RFC 3339 time and a space.
 */
import { StringDecoder } from 'node:string_decoder'
import type { LogLine } from './engine.ts'

type StreamName = LogLine['stream']

const TIMESTAMP = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})) /

/** Date from an RFC 3339 stamp with nanoseconds (Date.parse is only sure up to ms). */
function parseTimestamp(text: string): Date | null {
  const d = new Date(text.replace(/(\.\d{3})\d+/, '$1'))
  return Number.isNaN(d.getTime()) ? null : d
}

/** Splits the multiplexed frame format; keeps a partial frame until its rest arrives. */
class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0)

  push(chunk: Buffer): Array<{ stream: StreamName; payload: Buffer }> {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk
    const frames: Array<{ stream: StreamName; payload: Buffer }> = []
    while (this.buf.length >= 8) {
      const size = this.buf.readUInt32BE(4)
      if (this.buf.length < 8 + size) break
      frames.push({ stream: this.buf[0] === 2 ? 'stderr' : 'stdout', payload: this.buf.subarray(8, 8 + size) })
      this.buf = this.buf.subarray(8 + size)
    }
    return frames
  }
}

/**
 * Log or job output → complete lines, per stream, in order. A line longer than one frame
 * (the engine splits messages at 16 KiB) is joined before it is emitted.
 */
export class LogDecoder {
  private readonly frames = new FrameDecoder()
  private readonly text: Record<StreamName, StringDecoder> = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') }
  private readonly pending: Record<StreamName, { line: string; at: Date | null }> = {
    stdout: { line: '', at: null },
    stderr: { line: '', at: null },
  }

  constructor(private readonly timestamps: boolean) {}

  push(chunk: Buffer): LogLine[] {
    const out: LogLine[] = []
    for (const f of this.frames.push(chunk)) this.frame(f.stream, f.payload, out)
    return out
  }

  /** Whatever is left without a final newline. */
  end(): LogLine[] {
    const out: LogLine[] = []
    for (const stream of ['stdout', 'stderr'] as const) {
      const p = this.pending[stream]
      p.line += this.text[stream].end()
      if (p.line) out.push({ stream, line: p.line.replace(/\r$/, ''), at: p.at })
      this.pending[stream] = { line: '', at: null }
    }
    return out
  }

  private frame(stream: StreamName, payload: Buffer, out: LogLine[]): void {
    let text = this.text[stream].write(payload)
    const p = this.pending[stream]
    if (this.timestamps) {
      const m = TIMESTAMP.exec(text)
      if (m) {
        text = text.slice(m[0].length)
        p.at ??= parseTimestamp(m[1]!)
      }
    }
    let start = 0
    for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
      out.push({ stream, line: (p.line + text.slice(start, nl)).replace(/\r$/, ''), at: p.at })
      p.line = ''
      p.at = null
      start = nl + 1
    }
    p.line += text.slice(start)
  }
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
