/**
 * LogDecoder on the Docker Engine's multiplexed, timestamped log format, fed byte streams
 * built here (the real engine's side is in containers.test.ts and container-output.test.ts):
 * lines across frames and chunks, long lines in pieces, the output budget, and how much the
 * decoder holds while a container prints one 200 MB line without a newline.
 */
import { describe, expect, test } from 'bun:test'
import { LogDecoder } from '../../src/engines/containers/docker-streams.ts'
import type { LogCut, LogLine } from '../../src/engines/containers/engine.ts'

const STAMP = '2024-05-01T10:20:30.123456789Z '

/** One frame of the stream format: 8-byte header, then the payload (timestamped when `stamp`). */
function frame(stream: 'stdout' | 'stderr', text: string | Buffer, stamp = STAMP): Buffer {
  const payload = Buffer.concat([Buffer.from(stamp), Buffer.isBuffer(text) ? text : Buffer.from(text)])
  const header = Buffer.alloc(8)
  header[0] = stream === 'stderr' ? 2 : 1
  header.writeUInt32BE(payload.length, 4)
  return Buffer.concat([header, payload])
}

function decodeAll(decoder: LogDecoder, bytes: Buffer, chunkSize: number): Array<LogLine | LogCut> {
  const out: Array<LogLine | LogCut> = []
  for (let i = 0; i < bytes.length; i += chunkSize) out.push(...decoder.push(bytes.subarray(i, i + chunkSize)))
  out.push(...decoder.end())
  return out
}

describe('LogDecoder', () => {
  test('lines per stream, in order, across frames and chunks of any size; timestamps parsed; CR LF', () => {
    const bytes = Buffer.concat([frame('stdout', 'one\ntw'), frame('stderr', 'err ö\r\n'), frame('stdout', 'o\n\nthree'), frame('stdout', ' and more\n')])
    for (const size of [1, 3, 8, 9, 40, 1 << 16]) {
      const out = decodeAll(new LogDecoder(true, { maxLineBytes: 1024 }), bytes, size)
      const at = new Date('2024-05-01T10:20:30.123Z')
      expect([size, out]).toEqual([
        size,
        [
          { stream: 'stdout', line: 'one', at },
          { stream: 'stderr', line: 'err ö', at },
          { stream: 'stdout', line: 'two', at },
          { stream: 'stdout', line: '', at },
          { stream: 'stdout', line: 'three and more', at },
        ],
      ])
    }
  })

  test('a line longer than the limit comes in pieces of the limit, marked partial but the last; a character is never cut', () => {
    // 'é' is two bytes: a piece boundary falls inside one of them.
    const line = 'a' + 'é'.repeat(20)
    const out = decodeAll(new LogDecoder(true, { maxLineBytes: 16 }), frame('stdout', `${line}\nnext\n`), 5) as LogLine[]
    expect(out.map((l) => [l.line, l.partial ?? false])).toEqual([
      ['a' + 'é'.repeat(7), true],
      ['é'.repeat(8), true],
      ['é'.repeat(5), false],
      ['next', false],
    ])
    expect(out.map((l) => l.line).slice(0, 3).join('')).toBe(line)
    // A line of exactly the limit is one line.
    const exact = decodeAll(new LogDecoder(true, { maxLineBytes: 16 }), frame('stdout', 'x'.repeat(16) + '\n'), 7)
    expect(exact).toEqual([{ stream: 'stdout', line: 'x'.repeat(16), at: expect.any(Date) }])
  })

  test('past maxBytes the output is counted, not decoded: a cut where it ran out, the total at the end', () => {
    const decoder = new LogDecoder(true, { maxLineBytes: 1024, maxBytes: 10 })
    const out = decodeAll(decoder, Buffer.concat([frame('stdout', 'abcd\nefghijkl\n'), frame('stderr', 'later\n')]), 4)
    expect(out).toEqual([
      { stream: 'stdout', line: 'abcd', at: expect.any(Date) },
      { stream: 'stdout', line: 'efghi', at: expect.any(Date), partial: true },
      // Dropped so far: the rest of the read the budget ran out in.
      { cut: true, maxBytes: 10, droppedBytes: 3, final: false },
      { cut: true, maxBytes: 10, droppedBytes: 10, final: true },
    ])
    expect(decoder.droppedBytes).toBe(10)
  })

  test('newlines counts the lines read, decoded or only counted past maxBytes, never a header byte', () => {
    // A payload of 10 bytes has 0x0a in its header's size field; the stamp is not counted either.
    const bytes = Buffer.concat([frame('stdout', 'abc\ndefgh\n', ''), frame('stderr', 'x\n\ny\n'), frame('stdout', 'no newline'), frame('stdout', '\nlast\n')])
    for (const size of [1, 5, 8, 1 << 16]) {
      const decoded = new LogDecoder(false, { maxLineBytes: 1024 })
      for (let i = 0; i < bytes.length; i += size) decoded.push(bytes.subarray(i, i + size))
      expect([size, decoded.newlines]).toEqual([size, 7])
    }
    // The same with a timestamped stream cut after 6 bytes: what follows is only counted, its lines too.
    const stamped = Buffer.concat([frame('stdout', 'abc\ndefgh\n'), frame('stderr', 'x\n\ny\n'), frame('stdout', 'no newline'), frame('stdout', '\nlast\n')])
    const cut = new LogDecoder(true, { maxLineBytes: 1024, maxBytes: 6 })
    const out = decodeAll(cut, stamped, 3)
    expect(out.filter((x) => !('cut' in x))).toHaveLength(2)
    expect(cut.newlines).toBe(7)
  })

  test('one 200 MB line without a newline: the decoder never holds more than the line limit', () => {
    const max = 16 * 1024
    const decoder = new LogDecoder(true, { maxLineBytes: max })
    // The engine's messages are 16 KiB at most, each a frame with its own timestamp.
    const message = frame('stdout', Buffer.alloc(16 * 1024, 'x'))
    const chunk = Buffer.concat(Array.from({ length: 64 }, () => message)) // ~1 MiB per read
    let pieces = 0
    let bytes = 0
    const total = 200 * 1024 * 1024
    for (let sent = 0; sent < total; sent += 64 * 16 * 1024) {
      // Cut the chunk unevenly, so frames and timestamps straddle reads.
      for (const part of [chunk.subarray(0, 12_345), chunk.subarray(12_345)]) {
        for (const l of decoder.push(part) as LogLine[]) {
          expect(Buffer.byteLength(l.line)).toBe(max)
          expect(l.partial).toBe(true)
          pieces++
          bytes += max
        }
      }
    }
    const last = decoder.end() as LogLine[]
    expect(last).toEqual([{ stream: 'stdout', line: 'x'.repeat(max), at: expect.any(Date) }])
    expect(bytes + max).toBe(total)
    expect(pieces).toBe(total / max - 1)
    // A header, a timestamp, one line's worth: never the line itself.
    expect(decoder.maxRetainedBytes).toBeLessThanOrEqual(max + 8 + 40)
    expect(decoder.retainedBytes).toBe(0)
  })
})
