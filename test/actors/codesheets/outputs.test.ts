/**
 * A cell's outputs as the server keeps them (src/actors/codesheets/outputs.ts): `\r` and `\b`
 * collapsed as a terminal shows them, streams merged, rows rewritten only while small, the
 * cap with its marker, text PostgreSQL cannot hold replaced, and the pump's batching.
 */
import { describe, expect, test } from 'bun:test'
import type { NbOutput } from '../../../src/engines/kernels/kernel.ts'
import { cleanJson, cleanText, coalesceStreams, collapseTerminal, OutputPump, OutputShaper, outputBytes, STREAM_ROW_BYTES, type OutputBatch, type OutputOp } from '../../../src/actors/codesheets/outputs.ts'

const out = (text: string, name: 'stdout' | 'stderr' = 'stdout'): NbOutput => ({ output_type: 'stream', name, text })

/** The stored outputs after applying a batch (what a client mirroring events holds). */
function mirror(batch: OutputBatch, into: NbOutput[] = []): NbOutput[] {
  if (batch.clear) into.length = 0
  for (const op of batch.ops) {
    expect(op.index).toBeLessThanOrEqual(into.length)
    into[op.index] = op.output
    expect(op.bytes).toBe(outputBytes(op.output))
  }
  return into
}

describe('collapseTerminal', () => {
  test('text without \\r or \\b is returned as it is', () => {
    const s = 'a\nb\n'
    expect(collapseTerminal(s)).toBe(s)
  })

  test('a progress bar redrawn with \\r is the line a terminal shows; \\r\\n ends a line', () => {
    expect(collapseTerminal('10%\r20%\r100%\ndone\n')).toBe('100%\ndone\n')
    expect(collapseTerminal('line\r\nnext\r\n')).toBe('line\nnext\n')
    // Shorter text overwrites only the start of the line, as on a terminal.
    expect(collapseTerminal('abcdef\rXY\n')).toBe('XYcdef\n')
  })

  test('\\b moves one character back (Keras redraws its bar this way)', () => {
    expect(collapseTerminal('1/10\b\b\b\b2/10\n')).toBe('2/10\n')
    expect(collapseTerminal('\b\bab\n')).toBe('ab\n')
  })

  test('a last line whose cursor is inside it keeps the cursor, so what comes next overwrites the right place; collapsing twice changes nothing', () => {
    const first = collapseTerminal('epoch 1 10%\r')
    expect(first).toBe('epoch 1 10%\r')
    expect(collapseTerminal(first + 'epoch 1 55%\r')).toBe('epoch 1 55%\r')
    expect(collapseTerminal('abc\b\b')).toBe('abc\ra')
    for (const s of ['a\rb', 'abc\b\b', 'x\n10%\r', 'p\rq\rr\n']) expect(collapseTerminal(collapseTerminal(s))).toBe(collapseTerminal(s))
  })

  test('characters outside the BMP are kept whole', () => {
    expect(collapseTerminal('😀😀\r🙂\n')).toBe('🙂😀\n')
  })
})

describe('coalesceStreams', () => {
  test('consecutive streams of the same name are merged and collapsed; others stay apart', () => {
    const err: NbOutput = { output_type: 'error', ename: 'E', evalue: 'v', traceback: [] }
    expect(coalesceStreams([out('a'), out('b\r'), out('c\n'), out('x', 'stderr'), out('y', 'stderr'), err, out('z')])).toEqual([out('cb\n'), out('xy', 'stderr'), err, out('z')])
  })
})

describe('cleanText / cleanJson', () => {
  test('NUL characters and unpaired surrogates become U+FFFD; valid text is the same string', () => {
    expect(cleanText('a\u0000b')).toBe('a\uFFFDb')
    expect(cleanText('x\uD800y')).toBe('x\uFFFDy')
    expect(cleanText('x\uDC00')).toBe('x\uFFFD')
    expect(cleanText('ok 😀')).toBe('ok 😀')
    const o = { a: ['fine', { b: 'also fine' }] }
    expect(cleanJson(o)).toBe(o)
    expect(cleanJson<Record<string, unknown>>({ a: ['x\u0000'], 'k\u0000': 1 })).toEqual({ a: ['x\uFFFD'], 'k\uFFFD': 1 })
  })
})

describe('OutputShaper', () => {
  test('outputs are numbered from 0 in order; a stream that goes on is rewritten under its index', () => {
    const s = new OutputShaper(1 << 20)
    s.push(out('a\n'))
    expect(s.take()).toEqual({ clear: false, ops: [{ index: 0, output: out('a\n'), bytes: outputBytes(out('a\n')) }] })
    s.push(out('b\n'))
    s.push(out('c\n'))
    // Two pieces in one batch: one op, the merged text, under the same index.
    expect(s.take()).toEqual({ clear: false, ops: [{ index: 0, output: out('a\nb\nc\n'), bytes: outputBytes(out('a\nb\nc\n')) }] })
    const doc: NbOutput[] = []
    const s2 = new OutputShaper(1 << 20)
    for (const o of [out('a\n'), out('warn\n', 'stderr'), out('b\n'), { output_type: 'display_data', data: { 'text/plain': 'fig' }, metadata: {} } as NbOutput, out('c')]) {
      s2.push(o)
      mirror(s2.take(), doc)
    }
    expect(doc).toEqual([out('a\n'), out('warn\n', 'stderr'), out('b\n'), { output_type: 'display_data', data: { 'text/plain': 'fig' }, metadata: {} }, out('c')])
  })

  test('a progress bar redrawn ten thousand times stays one small output', () => {
    const s = new OutputShaper(1 << 20)
    const doc: NbOutput[] = []
    for (let i = 0; i <= 10_000; i++) {
      s.push(out(`\r${String(Math.floor(i / 100)).padStart(3)}% |${'#'.repeat(Math.floor(i / 500))}`))
      if (i % 37 === 0) mirror(s.take(), doc)
    }
    s.push(out('\n'))
    mirror(s.take(), doc)
    expect(doc).toEqual([out(`100% |${'#'.repeat(20)}\n`)])
  })

  test('a stream past STREAM_ROW_BYTES is closed at its last line end and goes on in new outputs; the merged text is what was printed', () => {
    const s = new OutputShaper(1 << 22)
    const doc: NbOutput[] = []
    let printed = ''
    for (let i = 0; i < 2000; i++) {
      const line = `line ${i}\n`
      printed += line
      s.push(out(line))
      if (i % 13 === 0) mirror(s.take(), doc)
    }
    mirror(s.take(), doc)
    expect(doc.length).toBeGreaterThan(3)
    for (const o of doc) {
      expect(o.output_type).toBe('stream')
      // Only the open (last) output may be under way; closed ones end at a line end.
      expect((o as { text: string }).text.endsWith('\n')).toBe(true)
      expect(outputBytes(o)).toBeLessThanOrEqual(STREAM_ROW_BYTES + 64)
    }
    expect(coalesceStreams(doc)).toEqual([out(printed)])
  })

  test('one huge chunk is one op per row, not a rewrite per piece; a line with no end is cut in pieces', () => {
    const s = new OutputShaper(1 << 24)
    const big = 'x'.repeat(1_000_000)
    s.push(out(big))
    const { ops } = s.take()
    expect(ops.length).toBeGreaterThan(900)
    expect(ops.map((o) => (o.output as { text: string }).text).join('')).toBe(big)
    for (const o of ops) expect(o.bytes).toBeLessThanOrEqual(STREAM_ROW_BYTES)
  })

  test('clear_output: the outputs so far go, the next start again at 0 with the whole budget; with wait, only when the next output comes', () => {
    const s = new OutputShaper(4096)
    const doc: NbOutput[] = []
    s.push(out('frame 1\n'))
    mirror(s.take(), doc)
    s.clear(true)
    expect(s.hasPending).toBe(false)
    expect(mirror(s.take(), doc)).toEqual([out('frame 1\n')])
    s.push(out('frame 2\n'))
    const b = s.take()
    expect(b).toEqual({ clear: true, ops: [{ index: 0, output: out('frame 2\n'), bytes: outputBytes(out('frame 2\n')) }] })
    expect(mirror(b, doc)).toEqual([out('frame 2\n')])
    // A redraw loop never reaches the cap.
    for (let i = 0; i < 1000; i++) {
      s.clear(false)
      s.push({ output_type: 'display_data', data: { 'text/plain': `frame ${i} ${'x'.repeat(100)}` }, metadata: {} })
      if (i % 7 === 0) mirror(s.take(), doc)
    }
    s.clear(false)
    expect(mirror(s.take(), doc)).toEqual([])
    expect(s.truncated).toBe(false)
  })

  test('the cap: outputs up to maxBytes are kept, the stream cut to fit, then one marker says how much more was dropped', () => {
    const max = 10_000
    const s = new OutputShaper(max)
    const doc: NbOutput[] = []
    for (let i = 0; i < 1000; i++) {
      s.push(out(`${'y'.repeat(99)}\n`))
      if (i % 50 === 0) mirror(s.take(), doc)
    }
    s.push({ output_type: 'error', ename: 'ValueError', evalue: 'late', traceback: [] })
    mirror(s.take(), doc)
    expect(s.truncated).toBe(true)
    const marker = doc[doc.length - 1] as Extract<NbOutput, { output_type: 'display_data' }>
    expect(marker.output_type).toBe('display_data')
    const meta = marker.metadata.quadrax as { truncated: boolean; limitBytes: number; droppedBytes: number }
    expect(meta.truncated).toBe(true)
    expect(meta.limitBytes).toBe(max)
    expect(String(marker.data['text/plain'])).toContain('CODESHEET_MAX_OUTPUT_BYTES')
    const kept = doc.slice(0, -1)
    const keptBytes = kept.reduce((a, o) => a + outputBytes(o), 0)
    expect(keptBytes).toBeLessThanOrEqual(max)
    expect(keptBytes).toBeGreaterThan(max - 200)
    const keptText = coalesceStreams(kept).map((o) => (o as { text: string }).text).join('')
    // Everything printed is either kept or counted as dropped (the error output too).
    const errorBytes = outputBytes({ output_type: 'error', ename: 'ValueError', evalue: 'late', traceback: [] })
    expect(Buffer.byteLength(keptText) + meta.droppedBytes).toBe(100 * 1000 + errorBytes)
    // Nothing more is kept once truncated, but the marker's count follows.
    s.push(out('more'))
    const later = s.take().ops
    expect(later).toHaveLength(1)
    expect(later[0]!.index).toBe(doc.length - 1)
  })

  test('a single output bigger than the cap is dropped whole, and the marker takes its place', () => {
    const s = new OutputShaper(5000)
    s.push({ output_type: 'display_data', data: { 'image/png': 'A'.repeat(10_000) }, metadata: {} })
    const { ops } = s.take()
    expect(ops.map((o) => o.index)).toEqual([0])
    expect((ops[0]!.output as unknown as { metadata: { quadrax: { droppedBytes: number } } }).metadata.quadrax.droppedBytes).toBeGreaterThan(10_000)
  })
})

describe('OutputPump', () => {
  test('the first batch goes at once; what arrives while a batch is sent goes in the next one, together; drain sends the rest', async () => {
    const s = new OutputShaper(1 << 20)
    const sent: OutputOp[][] = []
    const record = (b: OutputBatch) => sent.push(b.ops)
    let release!: () => void
    let gate = new Promise<void>((r) => (release = r))
    const pump = new OutputPump(s, async (b) => {
      record(b)
      await gate
    }, 0)
    s.push(out('a\n'))
    pump.kick()
    s.push({ output_type: 'display_data', data: { 'text/plain': '1' }, metadata: {} })
    pump.kick()
    s.push({ output_type: 'display_data', data: { 'text/plain': '2' }, metadata: {} })
    pump.kick()
    expect(sent).toHaveLength(1)
    gate = Promise.resolve()
    release()
    await pump.drain()
    expect(sent.map((b) => b.map((o) => o.index))).toEqual([[0], [1, 2]])
  })

  test('a batch that fails to send is dropped and the pump goes on', async () => {
    const s = new OutputShaper(1 << 20)
    const sent: number[] = []
    let first = true
    const pump = new OutputPump(s, async (b) => {
      if (first) {
        first = false
        throw new Error('actor unreachable')
      }
      sent.push(...b.ops.map((o) => o.index))
    }, 0)
    s.push(out('a\n'))
    pump.kick()
    await pump.drain()
    s.push({ output_type: 'display_data', data: {}, metadata: {} })
    pump.kick()
    await pump.drain()
    expect(sent).toEqual([1])
  })
})
