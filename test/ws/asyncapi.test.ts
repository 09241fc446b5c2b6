/**
 * The AsyncAPI document at /asyncapi.json, on a real server with every feature: it parses with
 * @asyncapi/parser without errors; every frame schema of /ws and of the container sockets and
 * every event of the actors' catalog (src/actors/events.ts) is in it, as generated from the
 * schemas, with examples that validate; every WebSocket route is a channel with the route's
 * access declaration. Then real flows (a workstation and a VM through their lifecycle against
 * the real Docker Engine, DataKits profiled and refused, a built-in and a container training
 * run, a chat answered and failed by a local OpenAI-compatible server, a CodeSheet edited and
 * run on the shell kernel of a workstation) run while one socket
 * watches every topic from `since: 0`, and every event it receives must validate against the
 * catalog schema of its topic kind and type — an unknown type is a failure too.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Parser } from '@asyncapi/parser'
import type { TSchema } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { EVENTS } from '../../src/actors/events.ts'
import { closeIdleWorker } from '../../src/engines/trainer/pool.ts'
import { LogServerMessage, TerminalResize, TerminalServerMessage } from '../../src/ws/container-protocol.ts'
import { ClientMessage, ServerMessage } from '../../src/ws/protocol.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { multipartBytes, postUpload } from '../support/datakit-upload.ts'
import { sampleRows, toDelimited } from '../support/datasets.ts'
import { dockerTestEnv, removeContainersOf } from '../support/docker.ts'
import { startOpenAiServer, type OpenAiTestServer } from '../support/openai-server.ts'
import { customers } from '../support/tabular.ts'
import { wsClient, type WsClient } from '../support/ws.ts'

const docker = dockerTestEnv(import.meta.file)
const TEST_IMAGE = process.env.QUADRAX_TEST_IMAGE ?? 'quadrax/busybox:test'

let t: TestServer
let ai: OpenAiTestServer
let modelDir: string
let uploadDir: string
let doc: any

beforeAll(async () => {
  ai = await startOpenAiServer()
  modelDir = await mkdtemp(join(tmpdir(), 'quadrax-asyncapi-models-'))
  uploadDir = await mkdtemp(join(tmpdir(), 'quadrax-asyncapi-uploads-'))
  t = await testServer(
    {
      ...(docker ? { DOCKER_HOST: docker.host } : {}),
      // Every idle check of a running workstation finds it busy (CPU ≥ 0 %): an `activity` event.
      WORKSTATION_IDLE_TIMEOUT: '1',
      WORKSTATION_IDLE_CPU_PERCENT: '0',
      OPENAI_API_KEY: ai.apiKey,
      OPENAI_BASE_URL: ai.baseURL,
      OPENAI_MODEL: 'gpt-test',
      AI_DAILY_TOKEN_BUDGET: '0',
      MODEL_DIR: modelDir,
      UPLOAD_DIR: uploadDir,
      TRAINING_IMAGES: TEST_IMAGE,
      TRAINING_CONCURRENCY: '2',
    },
    { actorConfig: { reminderPollMs: 100 } },
  )
  const res = await fetch(`${t.url}/asyncapi.json`) // no token: the document is public
  expect(res.status).toBe(200)
  expect(res.headers.get('content-type')).toContain('application/json')
  doc = await res.json()
}, 60_000)

afterAll(async () => {
  if (t && docker) await removeContainersOf(docker.raw, t.db.sql)
  await t?.stop()
  await ai?.stop()
  closeIdleWorker()
  await rm(modelDir, { recursive: true, force: true })
  await rm(uploadDir, { recursive: true, force: true })
})

/** A TypeBox schema as JSON (what the document carries). */
const plain = (s: TSchema) => JSON.parse(JSON.stringify(s))
const variants = (union: { anyOf: TSchema[] }) => union.anyOf
const resolve = (ref: { $ref: string }) => ref.$ref.split('/').slice(1).reduce((o: any, k) => o[k], doc)

describe('the document', () => {
  test('GET /asyncapi.json parses with @asyncapi/parser: AsyncAPI 3.1.0, no errors', async () => {
    const { document, diagnostics } = await new Parser().parse(JSON.stringify(doc))
    const errors = diagnostics.filter((d) => d.severity === 0).map((d) => `${d.path.join('.')}: ${d.message}`)
    expect(errors).toEqual([])
    expect(document).toBeDefined()
    expect(document!.version()).toBe('3.1.0')
    // Servers are the host the client reached, over ws and wss; the three ways to authenticate.
    expect(doc.servers.ws).toMatchObject({ host: new URL(t.url).host, protocol: 'ws' })
    expect(doc.servers.wss).toMatchObject({ host: new URL(t.url).host, protocol: 'wss' })
    expect(Object.values(doc.components.securitySchemes)).toEqual([
      expect.objectContaining({ type: 'http', scheme: 'bearer' }),
      expect.objectContaining({ type: 'httpApiKey', in: 'header', name: 'Sec-WebSocket-Protocol' }),
      expect.objectContaining({ type: 'httpApiKey', in: 'query', name: 'ticket' }),
    ])
    // Limits and close codes are in the descriptions, with this server's values.
    for (const v of ['WS_MAX_PAYLOAD_BYTES', 'WS_MAX_CONNECTIONS_PER_USER', 'WS_MESSAGES_PER_SECOND', 'WS_IDLE_TIMEOUT_SECONDS', 'WS_MAX_BUFFERED_BYTES', 'WS_MAX_REPLAY', 'WS_TICKET_TTL_MS']) {
      expect(doc.info.description).toContain(`| \`${v}\` |`)
    }
    expect(doc.info.description).toContain(`| \`WS_MAX_PAYLOAD_BYTES\` | ${t.config.ws.maxPayloadBytes} |`)
    for (const code of [1012, 1008, 1009, 1013, 4001]) expect(doc.channels.live.description).toContain(`- \`${code}\`:`)
    for (const code of [1000, 1012, 1011, 4003]) expect(doc.channels.workstationTerminal.description).toContain(`- \`${code}\`:`)
    for (const code of [1000, 1011, 1013]) expect(doc.channels.vmLogs.description).toContain(`- \`${code}\`:`)
  }, 30_000)

  test('every frame of /ws and of the container sockets is a message of its channel, payload generated from its schema, with examples that validate', () => {
    const channelOps = (channel: string) => {
      const out = new Map<string, any>()
      for (const r of Object.values(doc.channels[channel].messages) as Array<{ $ref: string }>) {
        const m = resolve(r)
        const op = m.payload?.properties?.op?.const
        if (op) out.set(op === 'event' ? `event ${m.payload.properties.type.const}` : op, m)
      }
      return out
    }
    const expectFrames = (channel: string, schemas: TSchema[]) => {
      const messages = channelOps(channel)
      for (const schema of schemas) {
        const op = schema.properties.op.const as string
        const m = messages.get(op)
        expect(m, `${channel}: ${op}`).toBeDefined()
        expect(m.payload).toEqual(plain(schema))
        expect(m.examples.length).toBeGreaterThan(0)
        const check = TypeCompiler.Compile(schema)
        for (const ex of m.examples) expect(check.Check(ex.payload), `${channel} ${op} example ${JSON.stringify(ex.payload)}`).toBe(true)
      }
    }
    expectFrames('live', [...variants(ClientMessage), ...variants(ServerMessage).filter((s) => s.properties.op.const !== 'event')])
    for (const kind of ['workstation', 'vm']) {
      expectFrames(`${kind}Terminal`, [...variants(TerminalServerMessage), TerminalResize])
      expectFrames(`${kind}Logs`, variants(LogServerMessage))
      // The binary frames: screen output and keyboard input.
      const names = Object.keys(doc.channels[`${kind}Terminal`].messages)
      expect(names).toContain('output')
      expect(names).toContain('input')
      expect(doc.channels[`${kind}Terminal`].bindings.ws.query.properties).toHaveProperty('session')
      expect(Object.keys(doc.channels[`${kind}Terminal`].bindings.ws.query.properties).sort()).toEqual(['cols', 'rows', 'session', 'ticket'])
      expect(Object.keys(doc.channels[`${kind}Logs`].bindings.ws.query.properties).sort()).toEqual(['tail', 'ticket'])
      expect(doc.channels[`${kind}Terminal`].parameters).toHaveProperty('id')
    }
    // The event envelope of ServerMessage is what every event message specialises.
    const envelope = variants(ServerMessage).find((s) => s.properties.op.const === 'event')!
    const events = [...channelOps('live').entries()].filter(([k]) => k.startsWith('event '))
    expect(events.length).toBeGreaterThan(0)
    const check = TypeCompiler.Compile(envelope)
    for (const [, m] of events) expect(check.Check(m.examples[0].payload)).toBe(true)
  })

  test('every event of the catalog is a message on /ws and in its topic kind’s operation, data generated from the catalog, with an example that validates', () => {
    for (const [kind, types] of Object.entries(EVENTS)) {
      const operation = doc.operations[`${kind}Events`]
      expect(operation, kind).toBeDefined()
      const listed = (operation.messages as Array<{ $ref: string }>).map((r) => r.$ref)
      for (const [type, schema] of Object.entries(types) as Array<[string, TSchema]>) {
        const name = `${kind}.${type}`
        const m = doc.components.messages[name]
        expect(m, name).toBeDefined()
        expect(doc.channels.live.messages[name]).toEqual({ $ref: `#/components/messages/${name}` })
        expect(listed).toContain(`#/channels/live/messages/${name}`)
        expect(m.payload.properties.type).toEqual({ const: type, type: 'string' })
        expect(m.payload.properties.data).toEqual(plain(schema))
        const example = m.examples[0].payload
        expect(example.topic.startsWith(`${kind}:`)).toBe(true)
        expect(TypeCompiler.Compile(schema).Check(example.data), `${name} example`).toBe(true)
      }
    }
    // Nothing in the document that the catalog does not have.
    const documented = Object.keys(doc.channels.live.messages).filter((n) => n.includes('.'))
    expect(documented.sort()).toEqual(Object.entries(EVENTS).flatMap(([kind, types]) => Object.keys(types).map((type) => `${kind}.${type}`)).sort())
  })

  test('every WebSocket route is a channel, declaring its access, summary and description; /asyncapi.json stays out of the OpenAPI paths', async () => {
    const routes = (t.server.app.routes as any[]).filter((r) => r.method === 'WS')
    expect(routes.map((r) => r.path).sort()).toEqual(['/ws', '/ws/vms/:id/logs', '/ws/vms/:id/terminal', '/ws/workstations/:id/logs', '/ws/workstations/:id/terminal'])
    const byAddress = new Map(Object.values(doc.channels).map((c: any) => [c.address, c]))
    for (const r of routes) {
      const channel: any = byAddress.get(r.path.replaceAll(/:(\w+)/g, '{$1}'))
      expect(channel, r.path).toBeDefined()
      const detail = r.hooks.detail
      expect(detail.summary).toBeString()
      expect(detail.description).toBeString()
      expect(channel['x-access']).toEqual(detail['x-access'])
      expect(channel.title).toBe(detail.summary)
    }
    const access = Object.fromEntries(routes.map((r) => [r.path, r.hooks.detail['x-access']]))
    expect(access).toEqual({
      '/ws': 'signed-in',
      '/ws/workstations/:id/terminal': { resource: 'workstation', action: 'shell', object: true },
      '/ws/vms/:id/terminal': { resource: 'vm', action: 'shell', object: true },
      '/ws/workstations/:id/logs': { resource: 'workstation', action: 'read', object: true },
      '/ws/vms/:id/logs': { resource: 'vm', action: 'read', object: true },
    })
    const self = (t.server.app.routes as any[]).find((r) => r.path === '/asyncapi.json')
    expect(self.hooks.detail.hide).toBe(true)
    const openapi = (await (await fetch(`${t.url}/swagger/json`)).json()) as { paths: Record<string, unknown> }
    expect(Object.keys(openapi.paths).filter((p) => p === '/asyncapi.json' || p.startsWith('/ws'))).toEqual([])
  })
})

/** Compiled catalog schemas, by `<kind>.<type>`. */
const compiled = new Map<string, ReturnType<typeof TypeCompiler.Compile>>()

/** Why an event frame does not match the catalog (empty when it does). */
function problems(frame: any): string[] {
  const kind = String(frame.topic).split(':')[0]!
  const types = (EVENTS as Record<string, Record<string, TSchema>>)[kind]
  if (!types) return [`${frame.topic}: no such topic kind in the catalog`]
  const schema = types[frame.type]
  if (!schema) return [`${frame.topic}: event type ${JSON.stringify(frame.type)} is not in the catalog`]
  const key = `${kind}.${frame.type}`
  let check = compiled.get(key)
  if (!check) compiled.set(key, (check = TypeCompiler.Compile(schema)))
  return [...check.Errors(frame.data)].map((e) => `${key} ${e.path || '/'}: ${e.message} (data: ${JSON.stringify(frame.data)})`)
}

describe.skipIf(!docker)('real events validate against the catalog', () => {
  test('a workstation, a VM, DataKits, a built-in and a container training run, a chat, a pipeline run and a CodeSheet: every event received matches its topic kind and type', async () => {
    const u = await t.user()
    const c = await wsClient(t.url, u.token)
    const watch = async (topic: string) => {
      const id = `sub-${topic}`
      c.send({ op: 'subscribe', topic, since: 0, id })
      await c.next((m) => m.op === 'ack' && m.id === id)
    }
    const event = (topic: string, pred: (m: any) => boolean, timeoutMs = 60_000) => c.next((m) => m.op === 'event' && m.topic === topic && pred(m), timeoutMs)
    const ok = async (method: string, path: string, body?: unknown, status = 200) => {
      const r = await t.json(method, path, { token: u.token, body })
      if (r.status !== status) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`)
      return r.body.data
    }
    await watch(`user:${u.id}`)
    let terminal: WsClient | undefined
    let logs: WsClient | undefined

    const workstation = async () => {
      const w = await ok('POST', '/api/workstations', { name: 'events-ws', description: 'A workstation for the event catalog', function: 'DEVELOPMENT', resources: { cpu: 0.5, memory: 64 } }, 201)
      const topic = `workstation:${w.id}`
      await watch(topic)
      await event(topic, (m) => m.type === 'status' && m.data.status === 'STOPPED')
      await ok('PATCH', `/api/workstations/${w.id}`, { name: 'events-ws-2', nature: ['events'] })
      await event(topic, (m) => m.type === 'updated')
      await ok('POST', `/api/workstations/${w.id}/start`, undefined, 202)
      await event(topic, (m) => m.type === 'status' && m.data.status === 'RUNNING')
      await event(topic, (m) => m.type === 'activity')
      // Its terminal and log follower, whose text frames must match the container protocol.
      terminal = await wsClient(t.url, u.token, { path: `/ws/workstations/${w.id}/terminal?cols=80&rows=24` })
      await terminal.next((m) => m.op === 'session')
      terminal.send({ op: 'resize', cols: 100, rows: 30 })
      terminal.send('echo hi; exit 3\n')
      expect(await terminal.next((m) => m.op === 'exit')).toEqual({ op: 'exit', code: 3 })
      expect((await terminal.closed).code).toBe(1000)
      logs = await wsClient(t.url, u.token, { path: `/ws/workstations/${w.id}/logs?tail=5` })
      await docker!.exec(`quadrax-workstation-${w.id}`, ['sh', '-c', 'echo followed > /proc/1/fd/1'])
      await logs.next((m) => m.op === 'log' && m.line === 'followed')
      await ok('POST', `/api/workstations/${w.id}/stop`, undefined, 202)
      await event(topic, (m) => m.type === 'status' && m.data.status === 'STOPPED' && m.data.previous === 'STOPPING')
      await logs.next((m) => m.op === 'end', 30_000)
      expect((await logs.closed).code).toBe(1000)
      await ok('DELETE', `/api/workstations/${w.id}`)
      await event(topic, (m) => m.type === 'deleted')
    }

    const vm = async () => {
      const v = await ok('POST', '/api/vms', { name: 'events-vm', size: { cpu: 0.5, memory: 64 } }, 201)
      const topic = `vm:${v.id}`
      await watch(topic)
      await event(topic, (m) => m.type === 'status' && m.data.status === 'STOPPED')
      await ok('PATCH', `/api/vms/${v.id}`, { name: 'events-vm-2' })
      await ok('POST', `/api/vms/${v.id}/resize`, { cpu: 0.5, memory: 96 })
      await event(topic, (m) => m.type === 'updated' && m.data.changes.resources !== undefined)
      await ok('DELETE', `/api/vms/${v.id}`)
      await event(topic, (m) => m.type === 'deleted')
    }

    const upload = async (name: string, csv: string) => {
      const form = await multipartBytes([
        { name: 'dataset', filename: `${name}.csv`, contentType: 'text/csv', data: csv },
        { name: 'name', value: name },
      ])
      const r = await postUpload(t.url, u.token, form)
      if (r.status !== 201) throw new Error(`upload: ${r.status} ${JSON.stringify(r.body)}`)
      const id = r.body.data.id as string
      await watch(`datakit:${id}`)
      return id
    }
    const settled = (id: string) => event(`datakit:${id}`, (m) => m.type === 'status' && m.data.status !== 'PROCESSING')

    const datakits = async () => {
      const good = await upload('events-kit', toDelimited(sampleRows(20)))
      expect((await settled(good)).data.status).toBe('READY')
      await ok('PATCH', `/api/datakits/${good}`, { name: 'events-kit-2', description: 'renamed' })
      await event(`datakit:${good}`, (m) => m.type === 'updated')
      // Too many fields on line 51: profiling refuses it, naming the line.
      const lines = toDelimited(sampleRows(60)).split('\n')
      lines[50] = '50,user 50,Lima,75,2024-01-23,false,note,extra,fields'
      const bad = await upload('events-broken', lines.join('\n'))
      expect((await settled(bad)).data.status).toBe('FAILED')
      for (const id of [good, bad]) {
        await ok('DELETE', `/api/datakits/${id}`)
        await event(`datakit:${id}`, (m) => m.type === 'deleted')
      }
    }

    const runs = async () => {
      const kit = await upload('events-train', toDelimited(customers({ rows: 200, seed: 7 })))
      expect((await settled(kit)).data.status).toBe('READY')
      const model = await ok('POST', '/api/models', { name: 'events-model', type: 'CLASSIFICATION', framework: 'TENSORFLOW' }, 201)
      const finished = (runId: string) => event(`run:${runId}`, (m) => m.type === 'status' && ['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(m.data.status), 90_000)
      const builtin = await ok('POST', `/api/models/${model.id}/train`, { datakitId: kit, target: 'purchased', params: { epochs: 2, seed: 1 } }, 202)
      await watch(`run:${builtin.id}`)
      expect((await finished(builtin.id)).data.status).toBe('SUCCEEDED')
      const script = 'echo "reading input"; echo "{\\"metric\\": \\"loss\\", \\"value\\": 0.5, \\"step\\": 1}"; echo trained > /output/model.txt; echo done >&2'
      const container = await ok('POST', `/api/models/${model.id}/train`, { datakitId: kit, target: 'purchased', image: TEST_IMAGE, command: ['sh', '-c', script], resources: { cpu: 0.5, memory: 64 } }, 202)
      await watch(`run:${container.id}`)
      expect((await finished(container.id)).data.status).toBe('SUCCEEDED')
      await event(`run:${container.id}`, (m) => m.type === 'logs')
    }

    const chat = async () => {
      const s = await ok('POST', '/api/ai/sessions', { title: 'events' }, 201)
      const topic = `chat:${s.id}`
      await watch(topic)
      const first = await ok('POST', `/api/ai/sessions/${s.id}/messages`, { content: 'Hi!' }, 202)
      await event(topic, (m) => m.type === 'done' && m.data.message.id === first.assistantMessage.id)
      await ok('PATCH', `/api/ai/sessions/${s.id}`, { title: 'events, renamed' })
      await event(topic, (m) => m.type === 'session')
      ai.behave({ failures: [{ status: 400, times: 1, message: 'Unsupported parameter' }] })
      const second = await ok('POST', `/api/ai/sessions/${s.id}/messages`, { content: 'Again?' }, 202)
      await event(topic, (m) => m.type === 'error' && m.data.messageId === second.assistantMessage.id)
      await ok('DELETE', `/api/ai/sessions/${s.id}`)
      await event(topic, (m) => m.type === 'deleted')
    }

    const pipelines = async () => {
      const script = 'echo "preparing"; echo "{\\"output\\": \\"rows\\", \\"value\\": 42}"'
      const steps = [
        { id: 'start', kind: 'empty' },
        { id: 'prep', kind: 'container.run', needs: ['start'], with: { image: TEST_IMAGE, command: ['sh', '-c', script], resources: { cpu: 0.5, memory: 64 } } },
      ]
      const p = await ok('POST', '/api/pipelines', { name: 'events-pipeline', definition: { steps } }, 201)
      await ok('PATCH', `/api/pipelines/${p.id}`, { definition: { steps, timeoutSeconds: 600 } })
      const schedule = await ok('POST', `/api/pipelines/${p.id}/schedules`, { cron: '0 3 * * *', enabled: false }, 201)
      await ok('DELETE', `/api/pipelines/${p.id}/schedules/${schedule.id}`)
      const run = await ok('POST', `/api/pipelines/${p.id}/runs`, {}, 202)
      const topic = `pipeline-run:${run.id}`
      await watch(topic)
      const ended = await event(topic, (m) => m.type === 'status' && ['SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMED_OUT'].includes(m.data.status), 90_000)
      expect(ended.data.status).toBe('SUCCEEDED')
      await event(topic, (m) => m.type === 'step' && m.data.id === 'prep' && m.data.status === 'SUCCEEDED')
      await event(topic, (m) => m.type === 'logs' && m.data.stepId === 'prep')
      await ok('DELETE', `/api/pipelines/${p.id}`)
    }

    const codesheets = async () => {
      const w = await ok('POST', '/api/workstations', { name: 'events-sheets', description: 'A workstation for the CodeSheet events', function: 'DEVELOPMENT', resources: { cpu: 0.5, memory: 64 } }, 201)
      await watch(`workstation:${w.id}`)
      await event(`workstation:${w.id}`, (m) => m.type === 'status' && m.data.status === 'STOPPED')
      await ok('POST', `/api/workstations/${w.id}/start`, undefined, 202)
      await event(`workstation:${w.id}`, (m) => m.type === 'status' && m.data.status === 'RUNNING')
      const s = await ok('POST', '/api/codesheets', { name: 'events-sheet', workstationId: w.id, kernel: 'shell' }, 201)
      const topic = `codesheet:${s.id}`
      await watch(topic)
      const cell = await ok('POST', `/api/codesheets/${s.id}/cells`, { version: 1, type: 'code', source: 'echo one' }, 201)
      const extra = await ok('POST', `/api/codesheets/${s.id}/cells`, { version: 2, type: 'markdown', source: '# notes' }, 201)
      await ok('PATCH', `/api/codesheets/${s.id}/cells/${cell.cell.id}`, { version: 3, source: 'echo two; echo err >&2' })
      await ok('DELETE', `/api/codesheets/${s.id}/cells/${extra.cell.id}`, { version: 4 })
      const run = await ok('POST', `/api/codesheets/${s.id}/cells/${cell.cell.id}/run`, {}, 202)
      await event(topic, (m) => m.type === 'execution' && m.data.executionId === run.executionId && m.data.status === 'ok')
      await event(topic, (m) => m.type === 'output')
      await event(topic, (m) => m.type === 'kernel' && m.data.state === 'idle')
      await ok('PATCH', `/api/codesheets/${s.id}`, { version: 5, name: 'events-sheet-2' })
      await ok('DELETE', `/api/codesheets/${s.id}`, { version: 6 })
      await event(topic, (m) => m.type === 'deleted')
    }

    try {
      await Promise.all([workstation(), vm(), datakits(), runs(), chat(), pipelines(), codesheets()])
      // The owner's topic carries the compute, run and DataKit events too.
      for (const type of ['status', 'updated', 'deleted', 'model-run.status', 'datakit.status', 'datakit.updated', 'datakit.deleted', 'pipeline-run.status', 'pipeline.created', 'pipeline.updated', 'pipeline.deleted', 'pipeline.schedule']) {
        await event(`user:${u.id}`, (m) => m.type === type)
      }

      const frames = c.messages.filter((m) => m.op === 'event')
      // Every event of the catalog was seen at least once: no schema goes unchecked.
      const seen = new Set(frames.map((m) => `${m.topic.split(':')[0]}.${m.type}`))
      const catalog = Object.entries(EVENTS).flatMap(([kind, types]) => Object.keys(types).map((type) => `${kind}.${type}`))
      expect(catalog.filter((k) => !seen.has(k))).toEqual([])
      // …and each one matches its schema; a type the catalog does not have is a failure.
      expect(frames.flatMap(problems)).toEqual([])
      // Every frame on the socket is a protocol message.
      const frame = TypeCompiler.Compile(ServerMessage)
      expect(c.messages.filter((m) => !frame.Check(m))).toEqual([])

      // The container sockets sent only their protocol's text frames (binary frames are screen output).
      const text = (client: WsClient | undefined) => (client?.messages ?? []).filter((m) => !(m instanceof ArrayBuffer || m instanceof Blob || m instanceof Buffer))
      const terminalFrame = TypeCompiler.Compile(TerminalServerMessage)
      const logFrame = TypeCompiler.Compile(LogServerMessage)
      expect(text(terminal).length).toBeGreaterThanOrEqual(2)
      expect(text(terminal).filter((m) => !terminalFrame.Check(m))).toEqual([])
      expect(text(logs).length).toBeGreaterThanOrEqual(2)
      expect(text(logs).filter((m) => !logFrame.Check(m))).toEqual([])

      // The check can fail: a field the schema does not name, a wrong type, an unknown event.
      const sample = frames.find((m) => m.type === 'status' && m.topic.startsWith('workstation:'))
      expect(problems({ ...sample, data: { ...sample.data, extra: 1 } })).not.toEqual([])
      expect(problems({ ...sample, data: { ...sample.data, status: 'ASLEEP' } })).not.toEqual([])
      expect(problems({ ...sample, type: 'exploded' })).toEqual([`${sample.topic}: event type "exploded" is not in the catalog`])
    } finally {
      c.close()
      terminal?.close()
      logs?.close()
    }
  }, 240_000)
})
