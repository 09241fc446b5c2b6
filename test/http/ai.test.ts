/**
 * The AI assistant's chat sessions end to end: REST routes, the chat-session actor, the
 * answer streaming over /ws, against a local OpenAI-compatible server speaking the real wire
 * format (test/support/openai-server.ts). Pacing is driven by gates the test opens.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'bun:test'
import { loadConfig } from '../../src/config.ts'
import { createLogger } from '../../src/core/logger.ts'
import { aiFeature } from '../../src/features/ai.ts'
import { startServer, type RunningServer } from '../../src/server.ts'
import { absentDockerSocket, tempDataDir, testServer, PASSWORD, type TestServer } from '../support/app.ts'
import { testDatabase } from '../support/db.ts'
import { Gate, startOpenAiServer, type OpenAiTestServer } from '../support/openai-server.ts'
import { wsClient, type WsClient } from '../support/ws.ts'
import { until } from '../support/until.ts'

let ai: OpenAiTestServer
let t: TestServer
beforeAll(async () => {
  ai = await startOpenAiServer()
  t = await testServer(
    { OPENAI_API_KEY: ai.apiKey, OPENAI_BASE_URL: ai.baseURL, OPENAI_MODEL: 'gpt-test', OPENAI_MAX_RETRIES: '2', AI_DAILY_TOKEN_BUDGET: '0' },
    { features: [aiFeature] },
  )
})
afterAll(async () => {
  await t.stop()
  await ai.stop()
})
beforeEach(() => ai.behave({}))

type User = Awaited<ReturnType<TestServer['user']>>

async function newSession(u: User, title?: string): Promise<string> {
  const r = await t.json('POST', '/api/ai/sessions', { token: u.token, body: title === undefined ? {} : { title } })
  expect(r.status).toBe(201)
  return r.body.data.id
}

async function send(u: User, sessionId: string, content: string) {
  const r = await t.json('POST', `/api/ai/sessions/${sessionId}/messages`, { token: u.token, body: { content } })
  expect(r.status).toBe(202)
  return r.body.data as { userMessage: any; assistantMessage: any; topic: string; since: number }
}

/** A socket subscribed to the session's topic (from `since` when given). */
async function watch(u: User, sessionId: string, since?: number): Promise<WsClient> {
  const c = await wsClient(t.url, u.token)
  c.send({ op: 'subscribe', topic: `chat:${sessionId}`, id: 'sub', ...(since !== undefined ? { since } : {}) })
  await c.next((m) => m.op === 'ack' && m.id === 'sub')
  return c
}

const events = (c: WsClient, type: string, messageId?: string) =>
  c.messages.filter((m) => m.op === 'event' && m.type === type && (messageId === undefined || m.data.messageId === messageId || m.data.message?.id === messageId))
const streamed = (c: WsClient, messageId: string) => events(c, 'delta', messageId).map((e) => e.data.text as string).join('')
const done = (c: WsClient, messageId: string) => c.next((m) => m.op === 'event' && m.type === 'done' && m.data.message.id === messageId)

/** Resolves once the deltas of `messageId` add up to `text` (the client saw exactly that much). */
function streamedUpTo(c: WsClient, messageId: string, text: string): Promise<unknown> {
  return c.next(() => streamed(c, messageId) === text)
}


async function messages(u: User, sessionId: string) {
  const r = await t.json('GET', `/api/ai/sessions/${sessionId}/messages?limit=100`, { token: u.token })
  expect(r.status).toBe(200)
  return r.body.data as any[]
}

describe('sessions', () => {
  test('create, read, list with cursor pagination, rename, delete', async () => {
    const u = await t.user()
    const bare = await t.call('POST', '/api/ai/sessions', { token: u.token }) // no body at all
    expect(bare.status).toBe(201)
    const a = await t.json('POST', '/api/ai/sessions', { token: u.token, body: {} })
    expect(a.status).toBe(201)
    expect(a.body).toEqual({
      success: true,
      data: { id: expect.any(String), title: 'New chat', generating: false, generatingMessageId: null, createdAt: expect.any(String), updatedAt: expect.any(String) },
    })
    const b = await newSession(u, 'Feature engineering')
    const c = await newSession(u, 'Third')

    const page1 = await t.json('GET', '/api/ai/sessions?limit=2', { token: u.token })
    expect(page1.status).toBe(200)
    expect(page1.body.data.map((s: any) => s.id)).toEqual([c, b]) // newest first
    expect(page1.body.data[0].lastMessageAt).toBeNull()
    expect(page1.body.meta).toEqual({ nextCursor: expect.any(String), limit: 2 })
    const page2 = await t.json('GET', `/api/ai/sessions?limit=2&cursor=${page1.body.meta.nextCursor}`, { token: u.token })
    expect(page2.body.data.map((s: any) => s.id)).toEqual([a.body.data.id, ((await bare.json()) as any).data.id])
    expect(page2.body.meta.nextCursor).toBeNull()

    const got = await t.json('GET', `/api/ai/sessions/${b}`, { token: u.token })
    expect(got.body.data).toMatchObject({ id: b, title: 'Feature engineering', generating: false })
    const renamed = await t.json('PATCH', `/api/ai/sessions/${b}`, { token: u.token, body: { title: 'Renamed' } })
    expect(renamed.status).toBe(200)
    expect(renamed.body.data.title).toBe('Renamed')
    expect((await t.json('GET', `/api/ai/sessions/${b}`, { token: u.token })).body.data.title).toBe('Renamed')

    const del = await t.json('DELETE', `/api/ai/sessions/${b}`, { token: u.token })
    expect(del).toMatchObject({ status: 200, body: { success: true, data: { id: b } } })
    expect((await t.json('GET', `/api/ai/sessions/${b}`, { token: u.token })).status).toBe(404)
    expect((await t.json('GET', `/api/ai/sessions/${b}/messages`, { token: u.token })).status).toBe(404)
  })

  test('bodies are validated: unknown fields, empty titles and messages are 400', async () => {
    const u = await t.user()
    const id = await newSession(u)
    expect((await t.json('POST', '/api/ai/sessions', { token: u.token, body: { title: 'x', owner: 'me' } })).status).toBe(400)
    expect((await t.json('PATCH', `/api/ai/sessions/${id}`, { token: u.token, body: { title: '' } })).status).toBe(400)
    const empty = await t.json('POST', `/api/ai/sessions/${id}/messages`, { token: u.token, body: { content: '' } })
    expect(empty.status).toBe(400)
    expect(empty.body.details[0].field).toBe('content')
    expect((await t.json('GET', '/api/ai/sessions/not-a-uuid', { token: u.token })).status).toBe(400)
    // Within the length limit but over the prompt budget (AI_CONTEXT_TOKENS 8000 ≈ 32,000 characters).
    const long = await t.json('POST', `/api/ai/sessions/${id}/messages`, { token: u.token, body: { content: 'x'.repeat(32_000) } })
    expect(long.status).toBe(422)
    expect(long.body.error).toContain('too long')
    expect((await t.json('GET', '/api/ai/sessions')).status).toBe(401)
  })
})

describe('streaming answers', () => {
  test('tokens arrive in order over /ws and the persisted answer is their concatenation', async () => {
    const u = await t.user()
    const id = await newSession(u)
    const tokens = Array.from({ length: 30 }, (_, i) => `t${i} `)
    const gate = new Gate()
    ai.behave({ tokens, gate })
    const c = await watch(u, id)
    const sent = await send(u, id, 'Explain overfitting')
    const mid = sent.assistantMessage.id
    expect(sent.userMessage).toMatchObject({ role: 'user', content: 'Explain overfitting', status: 'completed' })
    expect(sent.assistantMessage).toMatchObject({ role: 'assistant', content: '', status: 'streaming', model: 'gpt-test' })
    expect(sent.topic).toBe(`chat:${id}`)

    // While it streams, the session says so.
    expect((await t.json('GET', `/api/ai/sessions/${id}`, { token: u.token })).body.data).toMatchObject({ generating: true, generatingMessageId: mid })

    // Release the tokens in three batches, each only after the client saw the previous one.
    for (const upTo of [10, 20, 30]) {
      gate.release(10)
      await streamedUpTo(c, mid, tokens.slice(0, upTo).join(''))
    }
    gate.open()
    const final = await done(c, mid)
    const deltas = events(c, 'delta', mid)
    expect(deltas.length).toBeGreaterThanOrEqual(3)
    expect(deltas.map((d) => d.data.index)).toEqual(deltas.map((_, i) => i))
    const seqs = c.messages.filter((m) => m.op === 'event').map((m) => m.seq)
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b))
    expect(final.data.message).toMatchObject({ id: mid, status: 'completed', content: tokens.join(''), finishReason: 'stop', error: null })
    expect(final.data.message.usage).toMatchObject({ completionTokens: 30, estimated: false })
    expect(events(c, 'message')[0].data.message.id).toBe(sent.userMessage.id)
    expect(events(c, 'started')[0].data).toEqual({ messageId: mid, userMessageId: sent.userMessage.id, model: 'gpt-test' })
    expect(events(c, 'error')).toEqual([])

    const stored = await messages(u, id)
    expect(stored.map((m) => [m.role, m.status, m.content])).toEqual([
      ['user', 'completed', 'Explain overfitting'],
      ['assistant', 'completed', tokens.join('')],
    ])
    expect(stored[1].content).toBe(streamed(c, mid))
    expect(stored[1]).toEqual({
      id: mid,
      sessionId: id,
      role: 'assistant',
      content: tokens.join(''),
      status: 'completed',
      model: 'gpt-test',
      finishReason: 'stop',
      usage: { promptTokens: expect.any(Number), completionTokens: 30, totalTokens: expect.any(Number), estimated: false },
      error: null,
      createdAt: expect.any(String),
      completedAt: expect.any(String),
    })
    expect((await t.json('GET', `/api/ai/sessions/${id}`, { token: u.token })).body.data.generating).toBe(false)

    // The request the provider got: streamed, with usage, system prompt first, the question last.
    const req = ai.requests.at(-1)!
    expect(req.body).toMatchObject({ model: 'gpt-test', stream: true, stream_options: { include_usage: true }, max_completion_tokens: 1024 })
    expect(req.body.messages.map((m) => m.role)).toEqual(['system', 'user'])
    expect(req.body.messages[1]!.content).toBe('Explain overfitting')
    c.close()
  })

  test('a late subscriber resumes from `since` and gets every event of the answer, once', async () => {
    const u = await t.user()
    const id = await newSession(u)
    ai.behave({ tokens: ['a', 'b', 'c'] })
    const watcher = await watch(u, id)
    const sent = await send(u, id, 'hi')
    await done(watcher, sent.assistantMessage.id)
    watcher.close()
    const late = await watch(u, id, sent.since)
    const replayed = await done(late, sent.assistantMessage.id)
    const types = late.messages.filter((m) => m.op === 'event').map((m) => m.type)
    expect(types[0]).toBe('message')
    expect(types[1]).toBe('started')
    expect(types.at(-1)).toBe('done')
    expect(streamed(late, sent.assistantMessage.id)).toBe('abc')
    expect(replayed.data.message.content).toBe('abc')
    late.close()
  })

  test('the conversation so far goes with the next question', async () => {
    const u = await t.user()
    const id = await newSession(u)
    const c = await watch(u, id)
    ai.behave({ tokens: ['First', ' answer'] })
    await done(c, (await send(u, id, 'first question')).assistantMessage.id)
    ai.behave({ tokens: ['Second'] })
    await done(c, (await send(u, id, 'second question')).assistantMessage.id)
    const req = ai.requests.at(-1)!
    expect(req.body.messages.map((m) => [m.role, m.role === 'system' ? '…' : m.content])).toEqual([
      ['system', '…'],
      ['user', 'first question'],
      ['assistant', 'First answer'],
      ['user', 'second question'],
    ])

    // The stored conversation, paginated both ways.
    const all = await messages(u, id)
    expect(all.map((m) => m.content)).toEqual(['first question', 'First answer', 'second question', 'Second'])
    const p1 = await t.json('GET', `/api/ai/sessions/${id}/messages?limit=3`, { token: u.token })
    const p2 = await t.json('GET', `/api/ai/sessions/${id}/messages?limit=3&cursor=${p1.body.meta.nextCursor}`, { token: u.token })
    expect([...p1.body.data, ...p2.body.data].map((m: any) => m.id)).toEqual(all.map((m) => m.id))
    expect(p2.body.meta.nextCursor).toBeNull()
    const d1 = await t.json('GET', `/api/ai/sessions/${id}/messages?limit=2&order=desc`, { token: u.token })
    const d2 = await t.json('GET', `/api/ai/sessions/${id}/messages?limit=2&order=desc&cursor=${d1.body.meta.nextCursor}`, { token: u.token })
    expect([...d1.body.data, ...d2.body.data].map((m: any) => m.id)).toEqual(all.map((m) => m.id).reverse())
    const listed = await t.json('GET', '/api/ai/sessions', { token: u.token })
    expect(listed.body.data[0].lastMessageAt).toBe(all[3].createdAt)
    c.close()
  })

  test('one answer at a time: a second send is 409; cancel keeps the partial text, marked cancelled', async () => {
    const u = await t.user()
    const id = await newSession(u)
    const gate = new Gate()
    ai.behave({ tokens: ['one ', 'two ', 'three ', 'four ', 'five '], gate })
    const c = await watch(u, id)
    const sent = await send(u, id, 'count to five')
    const mid = sent.assistantMessage.id
    const second = await t.json('POST', `/api/ai/sessions/${id}/messages`, { token: u.token, body: { content: 'again' } })
    expect(second.status).toBe(409)
    expect(second.body.details).toEqual([{ field: 'generatingMessageId', message: mid }])

    gate.release(2)
    await streamedUpTo(c, mid, 'one two ')
    const cancel = await t.json('POST', `/api/ai/sessions/${id}/cancel`, { token: u.token })
    expect(cancel).toMatchObject({ status: 202, body: { success: true, data: { messageId: mid, cancelling: true } } })
    const final = await done(c, mid)
    expect(final.data.message).toMatchObject({ status: 'cancelled', content: 'one two ', error: null })
    expect(final.data.message.usage.estimated).toBe(true)
    expect(streamed(c, mid)).toBe('one two ')
    const stored = await messages(u, id)
    expect(stored[1]).toMatchObject({ id: mid, status: 'cancelled', content: 'one two ' })

    // Nothing left to cancel; the session takes a new message again.
    expect((await t.json('POST', `/api/ai/sessions/${id}/cancel`, { token: u.token })).body.data).toEqual({ messageId: null, cancelling: false })
    ai.behave({ tokens: ['ok'] })
    await done(c, (await send(u, id, 'again')).assistantMessage.id)
    c.close()
  })
})

describe('deleting mid-answer', () => {
  test('stops the generation, and the tokens it used still count against the budget', async () => {
    const u = await t.user()
    const id = await newSession(u)
    const gate = new Gate()
    ai.behave({ tokens: ['some', ' words', ' more'], gate })
    const c = await watch(u, id)
    const sent = await send(u, id, 'hi')
    gate.release(1)
    await streamedUpTo(c, sent.assistantMessage.id, 'some')
    const del = await t.json('DELETE', `/api/ai/sessions/${id}`, { token: u.token })
    expect(del.status).toBe(200)
    expect(await c.next((m) => m.op === 'event' && m.type === 'deleted')).toMatchObject({ data: { id } })
    await until(async () => ai.openStreams === 0, 'the provider stream to close')
    await until(async () => (await t.db.sql`select tokens from chat_token_usage where user_id = ${u.id}`).length > 0, 'the usage to be recorded')
    expect((await t.db.sql`select 1 from chat_messages where session_id = ${id}`).length).toBe(0)
    c.close()
  })
})

describe('provider failures', () => {
  test('429 from the provider is retried, then the answer streams', async () => {
    const u = await t.user()
    const id = await newSession(u)
    const before = ai.requests.length
    ai.behave({ tokens: ['after', ' retry'], failures: [{ status: 429, times: 2, retryAfterMs: 5 }] })
    const c = await watch(u, id)
    const sent = await send(u, id, 'hello')
    const final = await done(c, sent.assistantMessage.id)
    expect(final.data.message).toMatchObject({ status: 'completed', content: 'after retry' })
    expect(ai.requests.slice(before).map((r) => r.status)).toEqual([429, 429, 200])
    expect(events(c, 'error')).toEqual([])
    c.close()
  })

  test('a stream cut midway keeps the partial answer marked interrupted, and an error event arrives', async () => {
    const u = await t.user()
    const id = await newSession(u)
    const gate = new Gate()
    ai.behave({ tokens: ['par', 'tial', ' never', ' sent'], gate, cutAfterTokens: 2 })
    const c = await watch(u, id)
    const sent = await send(u, id, 'tell me')
    const mid = sent.assistantMessage.id
    gate.release(2)
    await streamedUpTo(c, mid, 'partial')
    gate.release(1) // the cut
    const final = await done(c, mid)
    expect(final.data.message).toMatchObject({ status: 'interrupted', content: 'partial', error: { code: 'ai_provider_unavailable' } })
    const err = await c.next((m) => m.op === 'event' && m.type === 'error')
    expect(err.data).toEqual({ messageId: mid, code: 'ai_provider_unavailable', message: expect.stringContaining('incomplete') })
    expect((await messages(u, id))[1]).toMatchObject({ status: 'interrupted', content: 'partial' })
    c.close()
  })

  test('a request the provider refuses fails with no text and an error event', async () => {
    const u = await t.user()
    const id = await newSession(u)
    ai.behave({ failures: [{ status: 400, times: 1, message: 'Unsupported parameter' }] })
    const c = await watch(u, id)
    const sent = await send(u, id, 'hello')
    const final = await done(c, sent.assistantMessage.id)
    expect(final.data.message).toMatchObject({ status: 'failed', content: '', error: { code: 'ai_provider_rejected' } })
    const err = await c.next((m) => m.op === 'event' && m.type === 'error')
    expect(err.data.message).toContain('Unsupported parameter')
    expect((await t.json('GET', `/api/ai/sessions/${id}`, { token: u.token })).body.data.generating).toBe(false)
    c.close()
  })
})

describe('context', () => {
  test("the system prompt describes the caller's own resources and nobody else's", async () => {
    const a = await t.user()
    const b = await t.user()
    const sql = t.db.sql
    for (const [owner, prefix] of [[a.id, 'alpha'], [b.id, 'beta']] as const) {
      await sql`insert into workstations (id, owner_id, name, description, function, cpu, memory_mb, image, status)
                values (${crypto.randomUUID()}, ${owner}, ${`${prefix}-workstation`}, 'a test workstation', 'DEVELOPMENT', 1, 512, 'quadrax/busybox:test', 'STOPPED')`
      await sql`insert into datakits (id, owner_id, name, status, current_version)
                values (${crypto.randomUUID()}, ${owner}, ${`${prefix}-data`}, 'READY', 1)`
      await sql`insert into models (user_id, name, type, framework) values (${owner}, ${`${prefix}-model`}, 'CLASSIFICATION', 'TENSORFLOW')`
    }
    const id = await newSession(a)
    const c = await watch(a, id)
    await done(c, (await send(a, id, 'what do I have?')).assistantMessage.id)
    const system = ai.requests.at(-1)!.body.messages[0]!
    expect(system.role).toBe('system')
    expect(system.content).toContain('QUADRAX ML')
    // FRONTEND_URL: where links to the web app's pages point.
    expect(system.content).toMatch(/The web app is at https?:\/\/\S+: links to its pages start there\./)
    expect(system.content).toContain('- Workstations (1): "alpha-workstation"')
    expect(system.content).toContain('- DataKits (1): "alpha-data"')
    expect(system.content).toContain('- Models (1): "alpha-model"')
    expect(system.content).not.toContain('beta')
    c.close()
  })
})

describe('access', () => {
  test('another user cannot read, change, use or subscribe to a session (404 / forbidden)', async () => {
    const owner = await t.user()
    const other = await t.user()
    const id = await newSession(owner, 'private')
    const c = await watch(owner, id)
    await done(c, (await send(owner, id, 'secret question')).assistantMessage.id)
    c.close()

    const tok = { token: other.token }
    expect((await t.json('GET', `/api/ai/sessions/${id}`, tok)).status).toBe(404)
    expect((await t.json('GET', `/api/ai/sessions/${id}/messages`, tok)).status).toBe(404)
    expect((await t.json('PATCH', `/api/ai/sessions/${id}`, { ...tok, body: { title: 'mine' } })).status).toBe(404)
    expect((await t.json('POST', `/api/ai/sessions/${id}/messages`, { ...tok, body: { content: 'hi' } })).status).toBe(404)
    expect((await t.json('POST', `/api/ai/sessions/${id}/cancel`, tok)).status).toBe(404)
    expect((await t.json('DELETE', `/api/ai/sessions/${id}`, tok)).status).toBe(404)
    const list = await t.json('GET', '/api/ai/sessions', tok)
    expect(list.body.data).toEqual([])

    const spy = await wsClient(t.url, other.token)
    spy.send({ op: 'subscribe', topic: `chat:${id}`, id: 's', since: 0 })
    expect(await spy.next((m) => m.op === 'error' && m.id === 's')).toEqual({ op: 'error', code: 'forbidden', message: 'You cannot subscribe to this topic', id: 's', topic: `chat:${id}` })
    expect(spy.messages.filter((m) => m.op === 'event')).toEqual([])
    spy.close()

    // Still the owner's, untouched.
    const mine = await messages(owner, id)
    expect(mine.map((m) => m.content)).toEqual(['secret question', 'Hello, world!'])
    expect((await t.json('GET', `/api/ai/sessions/${id}`, { token: owner.token })).body.data.title).toBe('private')
  })

  test('an admin may read a session but not write to it; a VIEWER may chat', async () => {
    const owner = await t.user()
    const id = await newSession(owner)
    const admin = await t.admin()
    expect((await t.json('GET', `/api/ai/sessions/${id}`, { token: admin.token })).status).toBe(200)
    expect((await t.json('GET', `/api/ai/sessions/${id}/messages`, { token: admin.token })).status).toBe(200)
    expect((await t.json('POST', `/api/ai/sessions/${id}/messages`, { token: admin.token, body: { content: 'hi' } })).status).toBe(404)

    const viewer = await t.user({ role: 'VIEWER' })
    const vid = await newSession(viewer)
    const c = await watch(viewer, vid)
    const final = await done(c, (await send(viewer, vid, 'hi')).assistantMessage.id)
    expect(final.data.message.status).toBe('completed')
    c.close()
  })
})

describe('spend control and configuration', () => {
  test('over the daily token budget a send is 429 with the budget in the details', async () => {
    const limited = await testServer({ OPENAI_API_KEY: ai.apiKey, OPENAI_BASE_URL: ai.baseURL, OPENAI_MODEL: 'gpt-test', AI_DAILY_TOKEN_BUDGET: '50' }, { features: [aiFeature] })
    try {
      const u = await limited.user()
      const s = await limited.json('POST', '/api/ai/sessions', { token: u.token, body: {} })
      const id = s.body.data.id
      ai.behave({ tokens: ['fine'] })
      const c = await wsClient(limited.url, u.token)
      c.send({ op: 'subscribe', topic: `chat:${id}`, id: 'sub' })
      await c.next((m) => m.op === 'ack')
      const first = await limited.json('POST', `/api/ai/sessions/${id}/messages`, { token: u.token, body: { content: 'hi' } })
      expect(first.status).toBe(202)
      const final = await c.next((m) => m.op === 'event' && m.type === 'done')
      const spent = final.data.message.usage.totalTokens as number
      expect(spent).toBeGreaterThan(50) // the system prompt alone is longer than the budget

      const over = await limited.json('POST', `/api/ai/sessions/${id}/messages`, { token: u.token, body: { content: 'more' } })
      expect(over.status).toBe(429)
      expect(Number(over.headers.get('retry-after'))).toBeGreaterThan(0)
      expect(over.body.details).toEqual([
        { field: 'dailyTokenBudget', message: '50' },
        { field: 'tokensUsedToday', message: String(spent) },
        { field: 'resetsAt', message: expect.stringMatching(/T00:00:00\.000Z$/) },
      ])
      // Another user has a budget of their own.
      const v = await limited.user()
      const vs = await limited.json('POST', '/api/ai/sessions', { token: v.token, body: {} })
      expect((await limited.json('POST', `/api/ai/sessions/${vs.body.data.id}/messages`, { token: v.token, body: { content: 'hi' } })).status).toBe(202)
      c.close()
    } finally {
      await limited.stop()
    }
  })

  test('without OPENAI_API_KEY the AI routes answer 503, /health shows ai disabled, the rest works', async () => {
    // No container engine either, whatever this host has: its /health is then 200.
    const off = await testServer({}, { features: [aiFeature], localDockerSocket: absentDockerSocket() })
    try {
      const u = await off.user()
      const notConfigured = { success: false, error: 'AI assistant not configured', details: [] }
      for (const [method, path, body] of [
        ['POST', '/api/ai/sessions', {}],
        ['GET', '/api/ai/sessions', undefined],
        ['POST', `/api/ai/sessions/${crypto.randomUUID()}/messages`, { content: 'hi' }],
        ['POST', `/api/ai/sessions/${crypto.randomUUID()}/messages`, { bad: true }],
      ] as const) {
        const r = await off.json(method, path, { token: u.token, body })
        expect({ path, status: r.status, body: r.body }).toEqual({ path, status: 503, body: notConfigured })
      }
      const health = await off.json('GET', '/health')
      expect(health.status).toBe(200)
      expect(health.body.services.ai).toEqual({ status: 'disabled' })
      expect((await off.json('GET', '/api/auth/me', { token: u.token })).status).toBe(200)
    } finally {
      await off.stop()
    }
    const on = await t.json('GET', '/health')
    expect(on.body.services.ai).toMatchObject({ status: 'healthy' })
  })
})

describe('recovery', () => {
  test('an answer whose server stopped mid-stream is ended with the text its deltas kept: by cancel, or by the watchdog', async () => {
    await using db = await testDatabase()
    await using dataDir = await tempDataDir()
    const config = loadConfig({
      NODE_ENV: 'test',
      PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
      BCRYPT_ROUNDS: '4',
      JWT_SECRET: 'test-secret-'.padEnd(48, 'x'),
      ADMIN_EMAIL: 'admin@test.local',
      ADMIN_PASSWORD: 'AdminPass123!',
      DATA_DIR: dataDir.path,
      OPENAI_API_KEY: ai.apiKey,
      OPENAI_BASE_URL: ai.baseURL,
      DATABASE_URL: db.url,
    })
    const boot = () => startServer(config, { features: [aiFeature], logger: createLogger(config.logLevel) })
    const call = async (srv: RunningServer, method: string, path: string, token?: string, body?: unknown) => {
      const headers: Record<string, string> = {}
      if (token) headers.authorization = `Bearer ${token}`
      if (body !== undefined) headers['content-type'] = 'application/json'
      const res = await srv.app.handle(new Request(`http://localhost${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) }))
      return { status: res.status, body: (await res.json()) as any }
    }

    const first = await boot()
    let second: RunningServer | undefined
    try {
      const email = `recovery-${crypto.randomUUID().slice(0, 8)}@example.com`
      expect((await call(first, 'POST', '/api/auth/register', undefined, { email, password: PASSWORD, firstName: 'Re', lastName: 'Covery' })).status).toBe(201)
      const token = (await call(first, 'POST', '/api/auth/login', undefined, { email, password: PASSWORD })).body.data.token as string
      const c = await wsClient(first.url, token)
      const started: { session: string; message: string }[] = []
      for (const [tokens, shown] of [[['ab', 'cd', 'ef'], 2], [['x', 'y'], 1]] as const) {
        const session = (await call(first, 'POST', '/api/ai/sessions', token, {})).body.data.id as string
        c.send({ op: 'subscribe', topic: `chat:${session}`, id: session })
        await c.next((m) => m.op === 'ack' && m.id === session)
        const gate = new Gate()
        ai.behave({ tokens: [...tokens], gate })
        const sent = await call(first, 'POST', `/api/ai/sessions/${session}/messages`, token, { content: 'go' })
        expect(sent.status).toBe(202)
        const message = sent.body.data.assistantMessage.id as string
        gate.release(shown)
        await streamedUpTo(c, message, tokens.slice(0, shown).join(''))
        started.push({ session, message })
      }
      c.close()
      await first.stop() // the generations die with it: nobody reports their end

      second = await boot()
      const [a, b] = started as [{ session: string; message: string }, { session: string; message: string }]
      expect((await call(second, 'GET', `/api/ai/sessions/${a.session}`, token)).body.data).toMatchObject({ generating: true, generatingMessageId: a.message })

      // Cancel: nothing generates it any more, so the cancel turn ends it itself.
      expect((await call(second, 'POST', `/api/ai/sessions/${a.session}/cancel`, token)).body.data).toEqual({ messageId: a.message, cancelling: true })
      const msgsA = (await call(second, 'GET', `/api/ai/sessions/${a.session}/messages`, token)).body.data
      expect(msgsA[1]).toMatchObject({ id: a.message, status: 'cancelled', content: 'abcd' })

      // The watchdog reminder's message (due OPENAI_TIMEOUT_MS + 30 s after the start), delivered now.
      await second.http.actors.ask('chat-session', b.session, { type: 'expire', generationId: b.message })
      const msgsB = (await call(second, 'GET', `/api/ai/sessions/${b.session}/messages`, token)).body.data
      expect(msgsB[1]).toMatchObject({ id: b.message, status: 'interrupted', content: 'x', error: { code: 'ai_generation_lost' } })
      expect((await call(second, 'GET', `/api/ai/sessions/${b.session}`, token)).body.data.generating).toBe(false)
      const reminders = await db.sql<{ n: number }[]>`select count(*)::int as n from actor_reminders where kind = 'chat-session'`
      expect(reminders[0]!.n).toBe(2) // one watchdog per generation, durable across the restart
    } finally {
      await first.stop()
      await second?.stop()
    }
  })
})
