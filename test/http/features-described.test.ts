/**
 * What the platform says it offers — the OpenAPI description and the assistant's system
 * prompt — names exactly the features whose routes exist: nothing that answers 404 (the
 * nothing built left out.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { buildSystemPrompt } from '../../src/engines/llm/context.ts'
import { testServer, type TestServer } from '../support/app.ts'

/** Each feature of the guide: how a text names it, and the routes that serve it. */
const FEATURES: { name: string; named: RegExp; prefix: string }[] = [
  { name: 'workstations', named: /\bworkstations?\b/i, prefix: '/api/workstations' },
  { name: 'VMs', named: /\bVMs?\b/, prefix: '/api/vms' },
  { name: 'datasets', named: /\b(datasets?|DataKits?)\b/i, prefix: '/api/datakits' },
  { name: 'models', named: /\bmodels?\b/i, prefix: '/api/models' },
  { name: 'pipelines', named: /\bpipelines?\b/i, prefix: '/api/pipelines' },
  { name: 'CodeSheets', named: /\b(code ?sheets?|notebooks?)\b/i, prefix: '/api/codesheets' },
]

let t: TestServer
let paths: string[]
beforeAll(async () => {
  t = await testServer()
  paths = Object.keys(((await t.json('GET', '/swagger/json')).body as { paths: Record<string, unknown> }).paths)
})
afterAll(() => t.stop())

/** [feature, named in the text, has routes] for every feature of the guide. */
function claims(text: string): [string, boolean, boolean][] {
  return FEATURES.map((f) => [f.name, f.named.test(text), paths.some((p) => p === f.prefix || p.startsWith(f.prefix + '/'))])
}
const truthful = (rows: [string, boolean, boolean][]) => rows.map(([name, , exists]) => [name, exists, exists] as [string, boolean, boolean])

describe('the platform describes only what exists', () => {
  test('the OpenAPI description', async () => {
    const { body } = await t.json('GET', '/swagger/json')
    const description = (body as { info: { description: string } }).info.description
    expect(claims(description)).toEqual(truthful(claims(description)))
    expect(description).toContain('AI assistant')
  })

  test("the assistant's system prompt", () => {
    const prompt = buildSystemPrompt({ workstations: { count: 0, names: [] }, datakits: { count: 0, names: [] }, models: { count: 0, names: [] } })
    // The platform's part: the user's own resources below it list kinds, not features.
    const platform = prompt.slice(0, prompt.indexOf("The user's own resources"))
    expect(claims(platform)).toEqual(truthful(claims(platform)))
  })

  test("the assistant's links to the web app start at FRONTEND_URL", () => {
    const none = { count: 0, names: [] }
    const prompt = buildSystemPrompt({ workstations: none, datakits: none, models: none, webAppUrl: 'https://app.example.com/quadrax/' })
    expect(prompt.split('\n')).toContain('The web app is at https://app.example.com/quadrax/: links to its pages start there.')
    expect(buildSystemPrompt({ workstations: none, datakits: none, models: none })).not.toContain('web app')
  })
})
