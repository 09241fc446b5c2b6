/**
 * `${{ }}` templates in `with` (src/actors/pipelines/references.ts): which references a value
 * holds, typed versus interpolated resolution, and the error that names a missing reference.
 */
import { describe, expect, test } from 'bun:test'
import { ExpressionError, type Scope } from '../../../src/actors/pipelines/expression.ts'
import { MissingReferenceError, resolveTemplates, templateKind, templateReferences } from '../../../src/actors/pipelines/references.ts'

const scope: Scope = {
  params: { n: 5, name: 'churn', deploy: false },
  steps: {
    query: { outputs: { datakitId: '5e7a9c1b-3d5f-4a7b-8c9d-0e1f2a3b4c5d', version: 2, rows: 1200, meta: { cols: ['a', 'b'] }, nothing: null } },
    'train-1': { outputs: { version: 3 } },
  },
}

describe('templateReferences', () => {
  test('walks the JSON: nested objects, arrays, several per string, each reference once', () => {
    const w = {
      modelId: '${{ steps.train-1.outputs.version }}',
      nested: { list: ['x', '${{params.n}} and ${{ params.name }}', 7, null, true], again: '${{ params.n }}' },
      plain: 'no templates here',
    }
    expect(templateReferences(w)).toEqual([
      { kind: 'step', stepId: 'train-1', path: ['version'] },
      { kind: 'param', name: 'n' },
      { kind: 'param', name: 'name' },
    ])
    expect(templateReferences({ a: 1, b: [null, 'x'] })).toEqual([])
  })

  test('a bad template is an error naming it', () => {
    expect(() => templateReferences({ a: 'x ${{ params.n ' })).toThrow(/unclosed \$\{\{/)
    expect(() => templateReferences({ a: '${{ params.n + 1 }}' })).toThrow(/in \$\{\{ params\.n \+ 1 \}\}: the operator \+/)
    expect(() => templateReferences({ a: '${{ }}' })).toThrow(/empty/)
    expect(() => templateReferences({ a: '${{ process.env }}' })).toThrow(/unknown name "process"/)
  })

  test('templateKind', () => {
    expect(templateKind('${{ params.n }}')).toBe('exact')
    expect(templateKind('${{ params.n }}${{ params.n }}')).toBe('interpolated')
    expect(templateKind(' ${{ params.n }}')).toBe('interpolated')
    expect(templateKind('v${{ params.n }}')).toBe('interpolated')
    expect(templateKind('plain')).toBe('none')
  })
})

describe('resolveTemplates', () => {
  test('a string that is exactly one template keeps the value and its type', () => {
    const out = resolveTemplates(
      {
        n: '${{ params.n }}',
        flag: '${{ params.deploy }}',
        id: '${{ steps.query.outputs.datakitId }}',
        meta: '${{ steps.query.outputs.meta }}',
        nothing: '${{ steps.query.outputs.nothing }}',
        all: '${{ steps.train-1.outputs }}',
        first: '${{ steps.query.outputs.meta.cols[0] }}',
      },
      scope,
    )
    expect(out).toEqual({
      n: 5,
      flag: false,
      id: '5e7a9c1b-3d5f-4a7b-8c9d-0e1f2a3b4c5d',
      meta: { cols: ['a', 'b'] },
      nothing: null,
      all: { version: 3 },
      first: 'a',
    })
  })

  test('templates inside a longer string are interpolated as text (JSON for non-strings)', () => {
    expect(
      resolveTemplates(
        {
          sql: 'select * from t limit ${{ params.n }}',
          label: '${{ params.name }}-v${{ steps.train-1.outputs.version }}',
          meta: 'meta=${{ steps.query.outputs.meta }} flag=${{ params.deploy }} nothing=${{ steps.query.outputs.nothing }}',
          command: ['run', '--rows', '${{ steps.query.outputs.rows }}', '--rows=${{ steps.query.outputs.rows }}'],
        },
        scope,
      ),
    ).toEqual({
      sql: 'select * from t limit 5',
      label: 'churn-v3',
      meta: 'meta={"cols":["a","b"]} flag=false nothing=null',
      command: ['run', '--rows', 1200, '--rows=1200'],
    })
  })

  test('the input is not changed; values without templates come back equal', () => {
    const input = { a: '${{ params.n }}', b: { c: [1, 'x'] }, d: null }
    const copy = structuredClone(input)
    expect(resolveTemplates(input, scope)).toEqual({ a: 5, b: { c: [1, 'x'] }, d: null })
    expect(input).toEqual(copy)
  })

  test('a `__proto__` key stays a key', () => {
    const out = resolveTemplates(JSON.parse('{"__proto__": {"polluted": "${{ params.name }}"}}'), scope) as Record<string, unknown>
    expect(Object.hasOwn(out, '__proto__')).toBe(true)
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
    expect(Object.getPrototypeOf(out)).toBe(Object.prototype)
  })

  test('a missing reference is an error naming it', () => {
    const missing = (value: unknown) => {
      try {
        resolveTemplates(value, scope)
      } catch (err) {
        expect(err).toBeInstanceOf(MissingReferenceError)
        return (err as Error).message
      }
      throw new Error('resolved')
    }
    expect(missing({ a: '${{ params.nope }}' })).toBe('params.nope is not set: the run has no param nope')
    expect(missing({ a: 'x ${{ steps.skipped.outputs.rows }}' })).toBe('steps.skipped.outputs.rows is not set: step skipped has no outputs (it did not succeed)')
    expect(missing({ a: ['${{ steps.query.outputs.meta.cols[5] }}'] })).toBe('steps.query.outputs.meta.cols.5 is not set: step query has no output at that path')
    // A forbidden key is not a missing value but a bad template (validation refuses it first).
    expect(() => resolveTemplates({ a: '${{ steps.query.outputs.meta.constructor }}' }, scope)).toThrow(ExpressionError)
  })
})
