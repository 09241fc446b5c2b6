/**
 * Definition and run-param validation (src/actors/pipelines/validate.ts): every kind of
 * problem gives one detail with its field path; good definitions pass; 1,000-step chains and
 * fan-outs validate (results asserted, not time).
 */
import { describe, expect, test } from 'bun:test'
import { validateDefinition, validateRunParams, type ValidationDetail } from '../../../src/actors/pipelines/validate.ts'
import { PipelineDefinition } from '../../../src/actors/pipelines/definition.ts'

const DK = '5e7a9c1b-3d5f-4a7b-8c9d-0e1f2a3b4c5d'
const MODEL = 'a1f3c5e7-2b4d-4f6a-8c0e-1d3f5b7d9e2a'

const details = (definition: unknown): ValidationDetail[] => {
  const r = validateDefinition(definition)
  if (r.ok) throw new Error(`valid: ${JSON.stringify(definition).slice(0, 200)}`)
  return r.details
}
const ok = (definition: unknown) => {
  const r = validateDefinition(definition)
  expect(r.ok ? [] : r.details).toEqual([])
}
const empty = (id: string, extra: Record<string, unknown> = {}) => ({ id, kind: 'empty', ...extra })

/** The diamond of the issue: query → two trainings → deploy the better one. */
const diamond = {
  params: { minAccuracy: { type: 'number', default: 0.9 }, deploy: { type: 'boolean', default: true } },
  steps: [
    { id: 'query', kind: 'datakit.query', with: { datakits: { customers: DK }, sql: 'select * from customers', name: 'adults' } },
    { id: 'small', kind: 'model.train', needs: ['query'], with: { modelId: MODEL, datakitId: '${{ steps.query.outputs.datakitId }}', target: 'y', params: { epochs: 5 } } },
    {
      id: 'big',
      kind: 'model.train',
      needs: ['query'],
      with: { modelId: MODEL, datakitId: '${{ steps.query.outputs.datakitId }}', datakitVersion: '${{ steps.query.outputs.version }}', target: 'y', validationSplit: '${{ params.minAccuracy }}' },
      retries: { count: 2, delaySeconds: 1, backoff: 'exponential', maxDelaySeconds: 10 },
      timeoutSeconds: 600,
    },
    { id: 'join', kind: 'empty', needs: ['small', 'big'], trigger: 'all_done' },
    {
      id: 'deploy',
      kind: 'model.deploy',
      needs: ['join'],
      when: 'steps.big.outputs.metrics.eval_accuracy >= params.minAccuracy and params.deploy == true',
      with: { modelId: MODEL, version: '${{ steps.big.outputs.version }}' },
      cache: false,
    },
  ],
  timeoutSeconds: 3600,
  maxActiveRuns: 2,
}

describe('valid definitions', () => {
  test('the diamond (references through a join are upstream)', () => ok(diamond))

  test('every kind with a good `with`', () => {
    ok({
      params: { img: { type: 'string', default: 'quadrax/trainer:1' } },
      steps: [
        empty('start', { with: {} }),
        { id: 'q', kind: 'datakit.query', needs: ['start'], with: { datakits: { a: DK, b: DK }, sql: 'select 1', name: 'x', datakitId: DK } },
        { id: 'c', kind: 'container.run', needs: ['q'], with: { image: '${{ params.img }}', command: ['sh', '-c', 'echo ${{ steps.q.outputs.rows }}'], datakits: { input: '${{ steps.q.outputs.datakitId }}' }, env: { A: 'b' }, resources: { cpu: 0.5, memory: 256 } } },
        { id: 'alias', kind: 'model.alias', needs: ['c'], with: { modelId: MODEL, alias: 'staging', version: 1 } },
        { id: 'd', kind: 'model.deploy', needs: ['alias'], with: { modelId: MODEL, alias: 'staging' } },
        { id: 'on-failure', kind: 'empty', needs: ['d'], trigger: 'one_failed' },
      ],
    })
  })

  test("the schema's published examples are valid", () => {
    const examples = (PipelineDefinition as { examples?: unknown[] }).examples ?? []
    expect(examples.length).toBeGreaterThan(0)
    for (const e of examples) ok(e)
  })

  test('the input comes back as the definition', () => {
    const r = validateDefinition(diamond)
    expect(r.ok && r.definition).toBe(diamond as unknown as PipelineDefinition)
  })
})

describe('one detail per problem, with its path', () => {
  test('not an object, no steps, empty steps', () => {
    expect(details(42)).toEqual([{ path: 'definition', message: 'must be an object' }])
    expect(details({})).toEqual([{ path: 'definition.steps', message: 'is required' }])
    expect(details({ steps: [] })).toEqual([{ path: 'definition.steps', message: 'must have at least 1 item(s)' }])
  })

  test('shape errors: each field once, unknown fields named', () => {
    expect(
      details({
        steps: [
          { id: '1bad', kind: 'empty' },
          { id: 'b', kind: 'empty', need: ['a'] },
          { id: 'c', kind: 'empty', retries: { count: 50, backoff: 'linear' }, trigger: 'sometimes', timeoutSeconds: 0, cache: 'yes' },
          { kind: 'empty' },
        ],
        maxActiveRuns: 0,
      }),
    ).toEqual([
      { path: 'definition.steps[0].id', message: expect.stringContaining('must match') },
      { path: 'definition.steps[1].need', message: 'is not a known field' },
      { path: 'definition.steps[2].retries.count', message: 'must be at most 20' },
      { path: 'definition.steps[2].retries.backoff', message: 'must be one of "fixed", "exponential"' },
      { path: 'definition.steps[2].timeoutSeconds', message: 'must be more than 0' },
      { path: 'definition.steps[2].trigger', message: 'must be one of "all_success", "all_done", "one_failed"' },
      { path: 'definition.steps[2].cache', message: 'must be true or false' },
      { path: 'definition.steps[3].id', message: 'is required' },
      { path: 'definition.maxActiveRuns', message: 'must be at least 1' },
    ])
  })

  test('params: names, types, defaults of the wrong type', () => {
    expect(details({ params: { 'bad name': { type: 'string' }, n: { type: 'int' }, m: { type: 'number', default: 'x' } }, steps: [empty('a')] })).toEqual([
      { path: 'definition.params.n.type', message: 'must be one of "string", "number", "boolean"' },
      { path: 'definition.params["bad name"]', message: 'is not a known field' },
      { path: 'definition.params.m.default', message: "must be a number, the param's type" },
    ])
  })

  test('more than 1,000 steps: one detail, nothing else looked at', () => {
    const steps = Array.from({ length: 1001 }, (_, i) => ({ id: `s${i}`, kind: 'teleport' }))
    expect(details({ steps })).toEqual([{ path: 'definition.steps', message: 'has 1001 steps; at most 1000 are allowed' }])
  })

  test('duplicate ids, unknown needs, unknown kind (as the HTTP test expects)', () => {
    expect(details({ steps: [{ id: 'p', kind: 'toString' }] })[0]!.message).toStartWith('unknown step kind "toString"')
    expect(details({ steps: [empty('a'), empty('a'), { id: 'b', kind: 'teleport' }, empty('c', { needs: ['a', 'nope'] })] })).toEqual([
      { path: 'definition.steps[1].id', message: 'duplicate step id "a" (steps[0] has it)' },
      { path: 'definition.steps[2].kind', message: expect.stringMatching(/^unknown step kind "teleport" \(one of empty, datakit\.query, model\.train, model\.deploy, model\.alias, container\.run\)$/) },
      { path: 'definition.steps[3].needs[1]', message: 'unknown step "nope"' },
    ])
  })

  test('a cycle is one detail naming its steps in run order, at the need that closes it', () => {
    expect(details({ steps: [empty('start'), empty('x', { needs: ['start', 'z'] }), empty('y', { needs: ['x'] }), empty('z', { needs: ['y'] })] })).toEqual([
      { path: 'definition.steps[1].needs[1]', message: 'cycle: x → y → z → x' },
    ])
    expect(details({ steps: [empty('a', { needs: ['a'] })] })).toEqual([{ path: 'definition.steps[0].needs[0]', message: 'cycle: a → a' }])
    // Two separate cycles: two details.
    expect(details({ steps: [empty('a', { needs: ['b'] }), empty('b', { needs: ['a'] }), empty('c', { needs: ['d'] }), empty('d', { needs: ['c'] })] })).toEqual([
      { path: 'definition.steps[0].needs[0]', message: 'cycle: a → b → a' },
      { path: 'definition.steps[2].needs[0]', message: 'cycle: c → d → c' },
    ])
  })

  test('a `with` that does not fit its kind: each field, under `with`', () => {
    expect(details({ steps: [{ id: 'q', kind: 'datakit.query', with: { sql: 42 } }] })).toEqual([
      { path: 'definition.steps[0].with.datakits', message: 'is required' },
      { path: 'definition.steps[0].with.name', message: 'is required' },
      { path: 'definition.steps[0].with.sql', message: 'must be a string' },
    ])
    expect(
      details({
        steps: [
          empty('e', { with: { x: 1 } }),
          { id: 't', kind: 'model.train', with: { modelId: 'not-a-uuid', datakitId: DK, epochs: 3, algorithm: 'magic' } },
          { id: 'd', kind: 'model.deploy', with: { modelId: MODEL, version: 1, alias: 'prod' } },
          { id: 'd2', kind: 'model.deploy', with: { modelId: MODEL } },
          { id: 'c', kind: 'container.run', with: { image: 'x', command: [], datakits: { 'bad-alias': DK } } },
          { id: 'w', kind: 'empty', with: 'nope' },
        ],
      }),
    ).toEqual([
      { path: 'definition.steps[5].with', message: 'must be an object' },
      { path: 'definition.steps[0].with.x', message: 'is not a known field' },
      { path: 'definition.steps[1].with.epochs', message: 'is not a known field' },
      { path: 'definition.steps[1].with.modelId', message: 'must be a model id' },
      { path: 'definition.steps[1].with.algorithm', message: 'must be one of "logistic_regression", "linear_regression", "dense_network"' },
      { path: 'definition.steps[2].with', message: 'give either version or alias (exactly one)' },
      { path: 'definition.steps[3].with', message: 'give either version or alias (exactly one)' },
      { path: 'definition.steps[4].with.command', message: 'must have at least 1 item(s)' },
      { path: 'definition.steps[4].with.datakits["bad-alias"]', message: 'is not a known field' },
    ])
  })

  test('templates stand for any type; interpolated strings are still strings', () => {
    ok({
      params: { v: { type: 'number', default: 1 }, cpu: { type: 'number', default: 1 } },
      steps: [
        { id: 'a', kind: 'model.alias', with: { modelId: '${{ params.v }}', alias: '${{ params.v }}', version: '${{ params.v }}' } },
        { id: 'c', kind: 'container.run', with: { image: 'x', command: '${{ params.v }}', resources: { cpu: '${{ params.cpu }}', memory: 512 } } },
        { id: 'q', kind: 'datakit.query', with: { datakits: '${{ params.v }}', sql: 'select ${{ params.v }}', name: 'n-${{ params.v }}', datakitId: 'x${{ params.v }}' } },
      ],
    })
    expect(details({ params: { v: { type: 'number' } }, steps: [{ id: 'a', kind: 'model.alias', with: { modelId: MODEL, alias: 'x', version: 'v${{ params.v }}' } }] })).toEqual([
      { path: 'definition.steps[0].with.version', message: 'must be a whole number' },
    ])
  })

  test('references: unknown param, unknown step, own outputs, not upstream, bad template, bad when', () => {
    expect(
      details({
        params: { p: { type: 'string' } },
        steps: [
          empty('a'),
          empty('b'),
          { id: 'c', kind: 'model.alias', needs: ['a'], with: { modelId: '${{ steps.b.outputs.modelId }}', alias: 'prod', version: 1 } },
          empty('d', { needs: ['c'], when: 'params.q == 1' }),
          empty('e', { needs: ['d'], when: 'steps.zz.outputs.x == 1' }),
          empty('f', { when: 'steps.f.outputs.x == 1' }),
          empty('g', { needs: ['a'], when: 'steps.a.outputs.x ==' }),
          { id: 'h', kind: 'model.alias', needs: ['a'], with: { modelId: MODEL, alias: 'x ${{ params.p', version: 1 } },
          empty('i', { needs: ['e'], when: 'steps.b.outputs.x == 1 or steps.a.outputs.x == 1' }),
        ],
      }),
    ).toEqual([
      { path: 'definition.steps[6].when', message: expect.stringContaining('at character') },
      { path: 'definition.steps[7].with.alias', message: expect.stringContaining('unclosed ${{') },
      { path: 'definition.steps[2].with.modelId', message: 'step "b" is not upstream of "c": add it to needs, directly or through a step it needs' },
      { path: 'definition.steps[3].when', message: 'unknown param "q" (params: p)' },
      { path: 'definition.steps[4].when', message: 'unknown step "zz"' },
      { path: 'definition.steps[5].when', message: 'a step cannot read its own outputs (steps.f)' },
      { path: 'definition.steps[8].when', message: 'step "b" is not upstream of "i": add it to needs, directly or through a step it needs' },
    ])
  })

  test('a reference to a downstream step is not upstream', () => {
    expect(details({ steps: [empty('a', { when: 'steps.b.outputs.x == 1' }), empty('b', { needs: ['a'] })] })).toEqual([
      { path: 'definition.steps[0].when', message: 'step "b" is not upstream of "a": add it to needs, directly or through a step it needs' },
    ])
  })
})

describe('1,000 steps', () => {
  test('a chain where each step reads the one before validates', () => {
    const steps = Array.from({ length: 1000 }, (_, i) =>
      i === 0 ? empty('s0') : { id: `s${i}`, kind: 'model.alias', needs: [`s${i - 1}`], with: { modelId: MODEL, alias: 'a', version: `\${{ steps.s${i - 1}.outputs.v }}` }, when: 'steps.s0.outputs.go == true' },
    )
    ok({ steps })
    // The last step reading the first is fine too (transitively upstream); the first reading the last is not.
    steps[0] = empty('s0', { when: 'steps.s999.outputs.x == 1' })
    expect(details({ steps })).toEqual([{ path: 'definition.steps[0].when', message: 'step "s999" is not upstream of "s0": add it to needs, directly or through a step it needs' }])
  })

  test('a fan-out of 1,000 under one join validates; one bad need among them is found', () => {
    const steps: Array<Record<string, unknown>> = [empty('root')]
    for (let i = 0; i < 998; i++) steps.push(empty(`f${i}`, { needs: ['root'], when: 'steps.root.outputs.ok == true' }))
    steps.push(empty('join', { needs: steps.slice(1).map((s) => s.id), when: 'steps.root.outputs.x == 1 and steps.f997.outputs.y == 2' }))
    ok({ steps })
    ;(steps[999]!.needs as string[])[500] = 'ghost'
    expect(details({ steps })).toEqual([{ path: 'definition.steps[999].needs[500]', message: 'unknown step "ghost"' }])
  })

  test('a 1,000-step cycle is named', () => {
    const steps = Array.from({ length: 1000 }, (_, i) => empty(`s${i}`, { needs: [`s${(i + 999) % 1000}`] }))
    const [d] = details({ steps })
    expect(d!.path).toBe('definition.steps[0].needs[0]')
    expect(d!.message.split(' → ')).toHaveLength(1001)
  })
})

describe('validateRunParams', () => {
  const def = { params: { threshold: { type: 'number', default: 0.5 }, label: { type: 'string' }, deploy: { type: 'boolean', default: false } }, steps: [empty('a')] } as PipelineDefinition

  test('fills defaults, in the definition order', () => {
    expect(validateRunParams(def, { label: 'x' })).toEqual({ ok: true, params: { threshold: 0.5, label: 'x', deploy: false } })
    expect(validateRunParams(def, { label: 'x', threshold: 2, deploy: true })).toEqual({ ok: true, params: { threshold: 2, label: 'x', deploy: true } })
    expect(validateRunParams({ steps: [] } as unknown as PipelineDefinition, undefined)).toEqual({ ok: true, params: {} })
  })

  test('unknown, wrong type, missing without default: one detail each at params.<name>', () => {
    expect(validateRunParams(def, { threshold: 'high', extra: true, 'odd key': 1 })).toEqual({
      ok: false,
      details: [
        { path: 'params.extra', message: 'unknown param (params: threshold, label, deploy)' },
        { path: 'params["odd key"]', message: 'unknown param (params: threshold, label, deploy)' },
        { path: 'params.threshold', message: 'must be a number' },
        { path: 'params.label', message: 'is required (a string; it has no default)' },
      ],
    })
    expect(validateRunParams(def, [])).toEqual({ ok: false, details: [{ path: 'params', message: 'must be an object' }] })
    expect(validateRunParams({ steps: [] } as unknown as PipelineDefinition, { a: 1 })).toEqual({ ok: false, details: [{ path: 'params.a', message: 'unknown param: the pipeline has no params' }] })
  })
})
