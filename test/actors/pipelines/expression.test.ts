/**
 * The `when` language (src/actors/pipelines/expression.ts): what parses, what is refused with
 * which message, and how expressions evaluate over params and outputs — pure, no services.
 */
import { describe, expect, test } from 'bun:test'
import jsep from 'jsep'
import { evaluate, ExpressionError, expressionReferences, parseExpression, parseReference, type Scope } from '../../../src/actors/pipelines/expression.ts'

const scope: Scope = {
  params: { deploy: true, threshold: 0.9, label: 'nightly', zero: 0 },
  steps: {
    train: { outputs: { metrics: { eval_accuracy: 0.93, 'f1 score': 0.8 }, version: 3, tags: ['a', 'b'], ok: true } },
    'train-2': { outputs: { rows: 10 } },
  },
}
const when = (src: string, s: Scope = scope) => evaluate(parseExpression(src), s)
const refused = (src: string): ExpressionError => {
  try {
    parseExpression(src)
  } catch (err) {
    expect(err).toBeInstanceOf(ExpressionError)
    return err as ExpressionError
  }
  throw new Error(`${src} parsed`)
}

describe('evaluation', () => {
  test('the issue example', () => {
    const src = 'steps.train.outputs.metrics.eval_accuracy >= 0.9 and params.deploy == true'
    expect(when(src)).toBe(true)
    expect(when(src, { ...scope, params: { ...scope.params, deploy: false } })).toBe(false)
    expect(when(src, { ...scope, steps: { train: { outputs: { metrics: { eval_accuracy: 0.85 } } } } })).toBe(false)
    expect(expressionReferences(parseExpression(src))).toEqual([
      { kind: 'step', stepId: 'train', path: ['metrics', 'eval_accuracy'] },
      { kind: 'param', name: 'deploy' },
    ])
  })

  test.each([
    ['params.threshold < steps.train.outputs.metrics.eval_accuracy', true],
    ['steps.train.outputs.version == 3 && params.label == "nightly"', true],
    ["params.label != 'nightly' || steps.train.outputs.ok", true],
    ['not params.deploy', false],
    ['!(params.threshold > 1)', true],
    ['not (params.threshold > 1) and (params.zero or params.deploy)', true],
    ['steps.train.outputs.metrics["f1 score"] <= 0.8', true],
    ['steps.train.outputs.tags[1] == "b"', true],
    ['steps["train-2"].outputs.rows > 9', true],
    ['steps.train-2.outputs.rows > 9', true],
    ['params.threshold > -1.5', true],
    ['"abc" < "abd"', true],
    ['true', true],
    ['null', false],
    ['params.zero', false],
  ])('%s → %p', (src, expected) => {
    expect(when(src)).toBe(expected)
  })

  test('a missing param, step or path reads as null and never throws', () => {
    expect(when('steps.nope.outputs.x == null')).toBe(true)
    expect(when('steps.train.outputs.metrics.nope.deeper == null')).toBe(true)
    expect(when('params.missing == null')).toBe(true)
    expect(when('steps.train.outputs.tags[9] == null')).toBe(true)
    expect(when('steps.train.outputs.metrics.nope > 0')).toBe(false)
    // Keys found on every object's prototype are not outputs.
    expect(when('steps.train.outputs.metrics.toString == null')).toBe(true)
    expect(when('steps.train.outputs.tags.length == null')).toBe(true)
  })

  test('comparisons never convert types; incompatible comparisons are false', () => {
    expect(when('steps.train.outputs.version == "3"')).toBe(false)
    expect(when('steps.train.outputs.version != "3"')).toBe(true)
    expect(when('params.label > 1')).toBe(false)
    expect(when('params.label <= 1')).toBe(false)
    expect(when('steps.train.outputs.metrics == steps.train.outputs.metrics')).toBe(false)
    expect(when('steps.train.outputs.tags != 1')).toBe(true)
    expect(when('params.deploy < 2')).toBe(false)
  })

  test('long and/or chains stay flat and evaluate', () => {
    const src = Array.from({ length: 100 }, () => 'params.deploy').join(' and ')
    const e = parseExpression(src)
    expect(e.type === 'and' && e.args.length).toBe(100)
    expect(evaluate(e, scope)).toBe(true)
    expect(when(`${src} or params.zero and params.zero`)).toBe(true)
  })
})

describe('the whitelist', () => {
  test.each([
    ['steps.train.outputs.constructor', /constructor/],
    ['params.__proto__', /__proto__/],
    ['steps.train.outputs["prototype"] == 1', /prototype/],
    ['constructor', /constructor/],
    ['steps.train.outputs.x.constructor.constructor("return process")()', /function calls/],
    ['foo(1)', /function calls/],
    ['params.label.toUpperCase() == "X"', /function calls/],
    ['this.x == 1', /this/],
    ['this', /this/],
    ['process.env.SECRET == "x"', /unknown name "process"/],
    ['globalThis', /unknown name/],
    ['x == 1', /unknown name "x"/],
    ['[1, 2] == 1', /arrays/],
    ['params.a = 1', /Unexpected/],
    ['params.threshold + 1 > 2', /operator \+/],
    ['steps.a.outputs.x - 1 > 2', /operator -/],
    ['params.a === 1', /use ==/],
    ['params.a ? 1 : 2', /Unexpected/],
    ['params.a params.b', /one expression/],
    ['params.a, params.b', /one expression/],
    ['not params.a == params.b', /not \(a == b\)/],
    ['1 < params.a < 3', /chained/],
    ['params', /params\.<name>/],
    ['params.a.b', /single value/],
    ['steps.train.metrics', /steps\.<id>\.outputs/],
    ['steps.train', /steps\.<id>\.outputs/],
    ['steps.train.outputs[params.a]', /string or a whole number/],
    ['steps.train.outputs?.x', /\?\./],
    ['${{ params.a }}', /\$/],
    ['-params.a > 1', /negative number/],
    ['"unclosed', /Unclosed quote/],
    ['(params.a', /Unclosed/],
    ['', /empty/],
  ])('%s is refused', (src, message) => {
    expect(refused(src).message).toMatch(message)
  })

  test('syntax errors carry the position', () => {
    const e = refused('params.a == ')
    expect(e.position).toBe(12)
    expect(e.message).toContain('at character 12')
  })

  test('length and nesting are bounded', () => {
    expect(refused(`params.a == "${'x'.repeat(2000)}"`).message).toMatch(/longer than 2000/)
    expect(refused(`${'('.repeat(40)}params.a${')'.repeat(40)}`).message).toMatch(/nested more than 32/)
    expect(refused(`${'not '.repeat(40)}params.a`).message).toMatch(/nested more than 32/)
    expect(when(`${'('.repeat(30)}params.deploy${')'.repeat(30)}`)).toBe(true)
  })

  test("jsep's process-wide grammar is left as it was (others use jsep with their own plugins)", () => {
    parseExpression('params.a and not params.b')
    expect(jsep('a ? 1 : 2').type).toBe('ConditionalExpression')
    expect(jsep('a and b').type).toBe('Compound')
  })
})

describe('parseReference (the inside of ${{ }})', () => {
  test('one reference, dotted or bracketed', () => {
    expect(parseReference(' params.deploy ')).toEqual({ kind: 'param', name: 'deploy' })
    expect(parseReference('steps.my-step.outputs.a.b')).toEqual({ kind: 'step', stepId: 'my-step', path: ['a', 'b'] })
    expect(parseReference('steps["q"].outputs["a.b"][0]')).toEqual({ kind: 'step', stepId: 'q', path: ['a.b', '0'] })
    expect(parseReference('steps.q.outputs')).toEqual({ kind: 'step', stepId: 'q', path: [] })
  })

  test('anything but one reference is refused', () => {
    expect(() => parseReference('params.a == 1')).toThrow(/one reference/)
    expect(() => parseReference('1')).toThrow(/one reference/)
  })
})
