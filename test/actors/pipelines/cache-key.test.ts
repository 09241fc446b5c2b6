/**
 * Step cache keys (src/actors/pipelines/cache-key.ts): stable across key order, sensitive to
 * the kind, the resolved `with` and every input fingerprint.
 */
import { describe, expect, test } from 'bun:test'
import { canonicalJson, stepCacheKey } from '../../../src/actors/pipelines/cache-key.ts'

const base = {
  kind: 'model.train',
  with: { modelId: 'm1', datakitId: 'd1', target: 'y', params: { epochs: 5, hiddenUnits: [32, 16] } },
  inputs: { 'datakit:d1': { version: 3, sha256: 'ab'.repeat(32) } },
}

describe('canonicalJson', () => {
  test('sorted keys at every depth, no whitespace, undefined members left out, toJSON honoured', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: undefined, x: null }], c: 'é' } })).toBe('{"a":{"c":"é","d":[3,{"x":null,"z":1}]},"b":1}')
    expect(canonicalJson([undefined, Number.NaN, new Date('2026-01-01T00:00:00Z')])).toBe('[null,null,"2026-01-01T00:00:00.000Z"]')
    expect(canonicalJson('x')).toBe('"x"')
  })

  test('refuses what JSON cannot hold', () => {
    expect(() => canonicalJson({ n: 1n })).toThrow(/bigint/)
    const loop: Record<string, unknown> = {}
    loop.self = loop
    expect(() => canonicalJson(loop)).toThrow(/cycle/)
    // The same object twice (not a cycle) is fine.
    const shared = { a: 1 }
    expect(canonicalJson({ x: shared, y: shared })).toBe('{"x":{"a":1},"y":{"a":1}}')
  })
})

describe('stepCacheKey', () => {
  test('a sha256 in hex, stable across key order', () => {
    const key = stepCacheKey(base)
    expect(key).toMatch(/^[0-9a-f]{64}$/)
    const reordered = {
      inputs: { 'datakit:d1': { sha256: 'ab'.repeat(32), version: 3 } },
      with: { params: { hiddenUnits: [32, 16], epochs: 5 }, target: 'y', datakitId: 'd1', modelId: 'm1' },
      kind: 'model.train',
    }
    expect(stepCacheKey(reordered)).toBe(key)
    expect(stepCacheKey(structuredClone(base))).toBe(key)
  })

  test('changes with the kind, the resolved with, and every input fingerprint', () => {
    const key = stepCacheKey(base)
    const variants = [
      { ...base, kind: 'container.run' },
      { ...base, with: { ...base.with, target: 'z' } },
      { ...base, with: { ...base.with, params: { epochs: 5, hiddenUnits: [16, 32] } } },
      { ...base, inputs: { 'datakit:d1': { version: 4, sha256: 'ab'.repeat(32) } } },
      { ...base, inputs: { 'datakit:d1': { version: 3, sha256: 'cd'.repeat(32) } } },
      { ...base, inputs: { ...base.inputs, 'model:m1': { version: 2 } } },
    ]
    const keys = variants.map(stepCacheKey)
    expect(new Set([key, ...keys]).size).toBe(variants.length + 1)
  })

  test('an absent with is the empty with', () => {
    expect(stepCacheKey({ kind: 'empty', with: undefined, inputs: {} })).toBe(stepCacheKey({ kind: 'empty', with: {}, inputs: {} }))
  })
})
