/**
 * A step's cache key: the sha256 (hex) of the canonical JSON of its kind, its resolved `with`
 * and the fingerprints of its inputs (a DataKit version's sha256, a model version), so that a
 * step of the same owner with an equal key may reuse the outputs of an earlier success
 * (Kubeflow Pipelines keys its cache on the step's spec and inputs the same way).
 *
 * Canonical JSON: object keys sorted (by UTF-16 code units), no whitespace, `undefined`
 * members left out and `toJSON` honoured as JSON.stringify does. So the key does not depend on
 * the order keys were written in, and changing an input's content (a new DataKit version, a
 * new sha256) changes the key. A version tag in the hashed text lets a future change of the
 * recipe miss old entries instead of mistaking them.
 */
import { createHash } from 'node:crypto'

const RECIPE = 'quadrax.pipeline-step-cache/1'

/** JSON with sorted keys; a value JSON cannot hold (a function, a bigint, a cycle) throws. */
export function canonicalJson(value: unknown): string {
  const seen = new Set<object>()
  const write = (v: unknown): string | undefined => {
    if (v !== null && typeof v === 'object' && typeof (v as { toJSON?: unknown }).toJSON === 'function') v = (v as { toJSON(): unknown }).toJSON()
    if (v === undefined) return undefined
    if (v === null || typeof v === 'boolean' || typeof v === 'string') return JSON.stringify(v)
    if (typeof v === 'number') return Number.isFinite(v) ? JSON.stringify(v) : 'null'
    if (typeof v !== 'object') throw new TypeError(`a cache key cannot hold a ${typeof v}`)
    if (seen.has(v)) throw new TypeError('a cache key cannot hold a cycle')
    seen.add(v)
    let out: string
    if (Array.isArray(v)) out = `[${v.map((x) => write(x) ?? 'null').join(',')}]`
    else {
      const members: string[] = []
      for (const k of Object.keys(v).sort()) {
        const x = write((v as Record<string, unknown>)[k])
        if (x !== undefined) members.push(`${JSON.stringify(k)}:${x}`)
      }
      out = `{${members.join(',')}}`
    }
    seen.delete(v)
    return out
  }
  return write(value) ?? 'null'
}

/** The cache key of a step (64 hex characters). */
export function stepCacheKey(input: { kind: string; with: unknown; inputs: Readonly<Record<string, unknown>> }): string {
  const text = canonicalJson({ recipe: RECIPE, kind: input.kind, with: input.with ?? {}, inputs: input.inputs })
  return createHash('sha256').update(text).digest('hex')
}
