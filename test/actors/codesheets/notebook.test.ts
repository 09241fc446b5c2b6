/**
 * Notebook files (src/actors/codesheets/notebook.ts): what a file may hold and the 422 details
 * for what it may not, lists of lines joined, ids given to old files' cells, the kernel a
 * notebook asks for, and write → read → write giving the same file.
 */
import { describe, expect, test } from 'bun:test'
import { kernelOf, readNotebook, writeNotebook, type NotebookCell } from '../../../src/actors/codesheets/notebook.ts'

const file = (over: Record<string, unknown> = {}) =>
  JSON.stringify({
    nbformat: 4,
    nbformat_minor: 5,
    metadata: { kernelspec: { name: 'python3', display_name: 'Python 3', language: 'python' } },
    cells: [
      { id: 'intro', cell_type: 'markdown', metadata: {}, source: ['# Title\n', 'text'], attachments: { 'a.png': { 'image/png': 'iVBOR' } } },
      {
        id: 'c1',
        cell_type: 'code',
        metadata: { tags: ['x'] },
        execution_count: 3,
        source: 'print(1)\n1+1',
        outputs: [
          { output_type: 'stream', name: 'stdout', text: ['1\n'] },
          { output_type: 'execute_result', execution_count: 3, data: { 'text/plain': ['2'], 'application/json': { a: [1, 2] } }, metadata: {} },
        ],
      },
      { id: 'r', cell_type: 'raw', metadata: {}, source: 'raw text' },
    ],
    ...over,
  })

describe('readNotebook', () => {
  test('an nbformat 4 file: cells with ids, joined sources and text, JSON mime data kept, metadata', () => {
    const r = readNotebook(file())
    expect(r.ok).toBe(true)
    if (!r.ok) return
    expect(r.notebook.metadata).toEqual({ kernelspec: { name: 'python3', display_name: 'Python 3', language: 'python' } })
    expect(r.notebook.cells).toEqual([
      { id: 'intro', type: 'markdown', source: '# Title\ntext', metadata: {}, attachments: { 'a.png': { 'image/png': 'iVBOR' } }, executionCount: null, outputs: [] },
      {
        id: 'c1',
        type: 'code',
        source: 'print(1)\n1+1',
        metadata: { tags: ['x'] },
        attachments: null,
        executionCount: 3,
        outputs: [
          { output_type: 'stream', name: 'stdout', text: '1\n' },
          { output_type: 'execute_result', execution_count: 3, data: { 'text/plain': '2', 'application/json': { a: [1, 2] } }, metadata: {} },
        ],
      },
      { id: 'r', type: 'raw', source: 'raw text', metadata: {}, attachments: null, executionCount: null, outputs: [] },
    ])
  })

  test('cells of a file older than 4.5 get ids', () => {
    const r = readNotebook(JSON.stringify({ nbformat: 4, nbformat_minor: 2, metadata: {}, cells: [{ cell_type: 'code', metadata: {}, source: '', execution_count: null, outputs: [] }] }))
    expect(r.ok && r.notebook.cells[0]!.id).toMatch(/^[0-9a-f-]{36}$/)
  })

  test('what is not a notebook: one detail per problem, with its path', () => {
    const bad = (text: string) => {
      const r = readNotebook(text)
      if (r.ok) throw new Error('accepted')
      return r.details
    }
    expect(bad('{"nbformat": 4,')[0]!.field).toBe('file')
    expect(bad(JSON.stringify({ nbformat: 3, nbformat_minor: 0, metadata: {}, cells: [] })).map((d) => d.field)).toEqual(['nbformat'])
    expect(bad(JSON.stringify({ nbformat: 4, nbformat_minor: 5, metadata: {} })).map((d) => d.field)).toEqual(['cells'])
    const cells = [
      { id: 'a', cell_type: 'heading', metadata: {}, source: '' },
      { id: 'b', cell_type: 'code', metadata: {}, source: '', execution_count: null, outputs: [{ output_type: 'stream', name: 'stdmid', text: 'x' }] },
      { id: 'b2', cell_type: 'code', metadata: {}, source: '', execution_count: null, outputs: [{ output_type: 'pager' }] },
      { id: 'c c', cell_type: 'markdown', metadata: {}, source: '' },
      { id: 'd', cell_type: 'markdown', metadata: {}, source: '', extra: 1 },
      { id: 'e', cell_type: 'code', metadata: {}, source: '', outputs: [] },
      { id: 'f', cell_type: 'raw', metadata: {}, source: '' },
      { id: 'f', cell_type: 'raw', metadata: {}, source: '' },
    ]
    const fields = bad(JSON.stringify({ nbformat: 4, nbformat_minor: 5, metadata: {}, cells })).map((d) => d.field)
    expect(fields).toEqual(['cells[0].cell_type', 'cells[1].outputs[0].name', 'cells[2].outputs[0].output_type', 'cells[3].id', 'cells[4].extra', 'cells[5].execution_count', 'cells[7].id'])
  })
})

describe('kernelOf', () => {
  test('python notebooks get python3, shell ones shell, others nothing', () => {
    expect(kernelOf({ kernelspec: { name: 'python3' } })).toBe('python3')
    expect(kernelOf({ language_info: { name: 'python' } })).toBe('python3')
    expect(kernelOf({ kernelspec: { name: 'bash', language: 'bash' } })).toBe('shell')
    expect(kernelOf({ kernelspec: { name: 'ir', language: 'R' } })).toBeUndefined()
    expect(kernelOf({})).toBeUndefined()
  })
})

describe('writeNotebook', () => {
  test('nbformat 4.5 with sorted keys, streams merged, a kernelspec for the kernel; reading and writing again gives the same file', () => {
    const cells: NotebookCell[] = [
      {
        id: 'c1',
        type: 'code',
        source: 'x',
        metadata: {},
        attachments: null,
        executionCount: 1,
        outputs: [
          { output_type: 'stream', name: 'stdout', text: 'a\n' },
          { output_type: 'stream', name: 'stdout', text: '10%\r100%\n' },
        ],
      },
      { id: 'm', type: 'markdown', source: '*hi*', metadata: { z: 1, a: 2 }, attachments: null, executionCount: null, outputs: [] },
    ]
    const text = writeNotebook({ kernel: 'shell', metadata: {} }, cells)
    const nb = JSON.parse(text)
    expect(nb.nbformat).toBe(4)
    expect(nb.nbformat_minor).toBe(5)
    expect(nb.metadata.kernelspec).toEqual({ name: 'shell', display_name: 'Shell (sh)', language: 'sh' })
    expect(nb.cells[0].outputs).toEqual([{ output_type: 'stream', name: 'stdout', text: 'a\n100%\n' }])
    expect(Object.keys(nb.cells[1].metadata)).toEqual(['a', 'z'])
    expect(nb.cells[1]).not.toHaveProperty('outputs')
    const again = readNotebook(text)
    if (!again.ok) throw new Error(JSON.stringify(again.details))
    expect(writeNotebook({ kernel: 'shell', metadata: again.notebook.metadata }, again.notebook.cells)).toBe(text)
  })
})
