/**
 * /api/ai: the AI assistant's chat sessions. Writes go to the session's `chat-session` actor
 * (src/actors/chat-session.ts); reads are plain SQL. Answers stream over /ws on `chat:<id>`.
 *
 * Who may do what: a session belongs to the user who created it. Any role may chat, VIEWER
 * included — the assistant only talks and changes nothing of the platform, which is all a
 * VIEWER is kept from. Another user gets 404 on every route (as if the session did not
 * exist); an admin may read a session and its messages (as the /ws hub lets admins watch
 * every topic) but not write to it.
 *
 * Without OPENAI_API_KEY every /api/ai route answers 503 "AI assistant not configured" and
 * /health shows `ai: disabled`; the rest of the platform is unaffected.
 */
import { Elysia, t } from 'elysia'
import * as chat from '../store/chat.ts'
import * as outbox from '../store/outbox.ts'
import { AiNotConfiguredError } from '../engines/llm/errors.ts'
import {
  CHAT_SESSION_KIND,
  DEFAULT_TITLE,
  MAX_MESSAGE_CHARS,
  MAX_TITLE_CHARS,
  chatTopic,
  serializeMessage,
  serializeSession,
  type ChatSessionMessage,
  type SentReply,
} from '../actors/chat-session.ts'
import type { Replied } from '../actors/runtime/index.ts'
import { authorize, Envelope, errors, ok, requireAction, type HttpDeps } from './context.ts'
import { access } from '../auth/route-access.ts'

/** Example values of the documented schemas (the OpenAPI document shows them). */
const EXAMPLE = (() => {
  const sessionId = '7c1e4b2a-5d3f-4a8e-9b6c-2f0d1e3a4b5c'
  const session = { id: sessionId, title: 'Churn model questions', generating: false, generatingMessageId: null, createdAt: '2026-12-04T10:15:00.000Z', updatedAt: '2026-12-04T10:16:12.000Z' }
  const asked = { sessionId, role: 'user' as const, model: null, finishReason: null, usage: null, error: null, completedAt: null }
  const question = { ...asked, id: 'b5d8f3e1-2c4a-4f6b-9d7e-0a1b2c3d4e5f', content: 'How do I train a churn model on my customers DataKit?', status: 'completed' as const, createdAt: '2026-12-04T10:16:10.000Z' }
  const answer = {
    id: 'e2a9c4f1-6b7d-4e3a-8c5f-1a2b3c4d5e6f',
    sessionId,
    role: 'assistant' as const,
    content: 'Create a model with `POST /api/models`, then start a run with `POST /api/models/{id}/train` naming your DataKit and its target column, e.g. `churned`.',
    status: 'completed' as const,
    model: 'gpt-4o-mini',
    finishReason: 'stop',
    usage: { promptTokens: 412, completionTokens: 38, totalTokens: 450, estimated: false },
    error: null,
    createdAt: '2026-12-04T10:16:10.001Z',
    completedAt: '2026-12-04T10:16:12.000Z',
  }
  const streaming = { ...answer, content: '', status: 'streaming' as const, finishReason: null, usage: null, completedAt: null }
  return { sessionId, session, question, answer, streaming }
})()

namespace AiModel {
  const sessionFields = {
    id: t.String({ format: 'uuid' }),
    title: t.String(),
    generating: t.Boolean({ description: 'An answer is being generated (a send now gets 409)' }),
    generatingMessageId: t.Union([t.String(), t.Null()], { description: 'The assistant message being generated, if any' }),
    createdAt: t.String({ format: 'date-time' }),
    updatedAt: t.String({ format: 'date-time' }),
    lastMessageAt: t.Optional(t.Union([t.String({ format: 'date-time' }), t.Null()], { description: 'In lists: when the last message was written (null: none yet)' })),
  }
  export const session = t.Object(sessionFields, { title: 'ChatSession', examples: [EXAMPLE.session] })
  /** The same, as lists show it (with `lastMessageAt`). */
  export const listed = t.Object(sessionFields, { title: 'ChatSession', examples: [{ ...EXAMPLE.session, lastMessageAt: '2026-12-04T10:16:12.000Z' }] })
  export const message = t.Object(
    {
      id: t.String({ format: 'uuid' }),
      sessionId: t.String({ format: 'uuid' }),
      role: t.Union([t.Literal('user'), t.Literal('assistant'), t.Literal('system')]),
      content: t.String(),
      status: t.Union([t.Literal('completed'), t.Literal('streaming'), t.Literal('cancelled'), t.Literal('interrupted'), t.Literal('failed')], {
        description: 'streaming: answer in progress; cancelled/interrupted: partial text kept; failed: no text, see error',
      }),
      model: t.Union([t.String(), t.Null()]),
      finishReason: t.Union([t.String(), t.Null()], { description: "The provider's finish reason (stop, length, content_filter, …)" }),
      usage: t.Union([
        t.Object({ promptTokens: t.Integer(), completionTokens: t.Integer(), totalTokens: t.Integer(), estimated: t.Boolean({ description: 'Our estimate: the provider reported none (cancelled or interrupted answers)' }) }),
        t.Null(),
      ]),
      error: t.Union([t.Object({ code: t.String(), message: t.String() }), t.Null()]),
      createdAt: t.String({ format: 'date-time' }),
      completedAt: t.Union([t.String({ format: 'date-time' }), t.Null()]),
    },
    { title: 'ChatMessage', examples: [EXAMPLE.answer] },
  )
  export const create = t.Object(
    { title: t.Optional(t.String({ minLength: 1, maxLength: MAX_TITLE_CHARS, description: `Default: "${DEFAULT_TITLE}"`, error: `Title must be 1–${MAX_TITLE_CHARS} characters` })) },
    { additionalProperties: false, examples: [{ title: 'Churn model questions' }] },
  )
  export const patch = t.Object(
    { title: t.String({ minLength: 1, maxLength: MAX_TITLE_CHARS, error: `Title must be 1–${MAX_TITLE_CHARS} characters` }) },
    { additionalProperties: false, examples: [{ title: 'Churn model: training questions' }] },
  )
  export const send = t.Object(
    { content: t.String({ minLength: 1, maxLength: MAX_MESSAGE_CHARS, error: `Message must be 1–${MAX_MESSAGE_CHARS} characters` }) },
    { additionalProperties: false, examples: [{ content: EXAMPLE.question.content }] },
  )
  export const sent = t.Object(
    {
      userMessage: message,
      assistantMessage: message,
      topic: t.String({ description: 'Subscribe to it on /ws to receive the answer' }),
      since: t.Integer({ description: 'Subscribe with this `since` to receive every event of this answer, even those sent before you subscribed' }),
    },
    { examples: [{ userMessage: EXAMPLE.question, assistantMessage: EXAMPLE.streaming, topic: `chat:${EXAMPLE.sessionId}`, since: 41 }] },
  )
  export const cancelled = t.Object(
    {
      messageId: t.Union([t.String(), t.Null()], { description: 'The answer being cancelled; null when none was being generated' }),
      cancelling: t.Boolean(),
    },
    { examples: [{ messageId: EXAMPLE.answer.id, cancelling: true }] },
  )
  export const deleted = t.Object({ id: t.String({ format: 'uuid' }) }, { examples: [{ id: EXAMPLE.sessionId }] })
  export const messagesQuery = t.Object({
    ...Envelope.pageQuery,
    order: t.Optional(t.Union([t.Literal('asc'), t.Literal('desc')], { description: 'asc (default): conversation order; desc: newest first' })),
  })
  export const listQuery = t.Object(Envelope.pageQuery)
}

const idParams = t.Object({ id: t.String({ format: 'uuid', description: 'The chat session id', error: 'Invalid chat session id' }) })
const TAGS = ['AI']
const NOT_CONFIGURED = 'Without `OPENAI_API_KEY` every `/api/ai` route answers 503 `AI assistant not configured`.'

/** The /api/ai routes over an actor system where the `chat-session` kind is registered. */
export function aiRoutes(deps: HttpDeps, configured: boolean) {
  const ask = (id: string, message: ChatSessionMessage) => deps.actors.ask(CHAT_SESSION_KIND, id, message)
  const session = async (id: string, message: ChatSessionMessage) => serializeSession((await ask(id, message)) as Replied<chat.ChatSessionRow>)

  /**
   * The caller and the session, if the access policy lets the caller do `action` to it: an
   * admin reads anyone's session, only its owner talks in it (404 otherwise). The session's
   * actor checks the owner again on every write.
   */
  const guard = (request: Request, id: string, action: 'read' | 'chat') =>
    authorize(deps, request, { resource: 'chat', action, label: 'Chat session', load: () => chat.findSession(deps.sql, id) })
  const readable = async (request: Request, id: string) => (await guard(request, id, 'read')).obj

  return (
    new Elysia({ prefix: '/api/ai' })
      // Before validation, so an unconfigured assistant answers 503 whatever the request.
      .onTransform(() => {
        if (!configured) throw new AiNotConfiguredError()
      })
      .post(
        '/sessions',
        async ({ request, body, set }) => {
          const me = await requireAction(deps, request, 'chat', 'chat')
          const created = await session(crypto.randomUUID(), { type: 'create', userId: me.userId, title: body?.title ?? DEFAULT_TITLE })
          set.status = 201
          return ok(created)
        },
        {
          body: t.Optional(AiModel.create),
          response: { 201: Envelope.data(AiModel.session), ...errors(400, 401, 503) },
          detail: {
            summary: 'Start a chat session with the AI assistant',
            description:
              `Creates an empty session (the body is optional; the title defaults to "${DEFAULT_TITLE}", at most ${MAX_TITLE_CHARS} characters) and answers it with 201. ` +
              'Send messages with `POST /api/ai/sessions/{id}/messages`; the answers stream on the WebSocket topic `chat:<id>`. ' +
              NOT_CONFIGURED,
            tags: TAGS,
            ...access.collection('chat', 'chat'),
          },
        },
      )
      .get(
        '/sessions',
        async ({ request, query }) => {
          const me = await requireAction(deps, request, 'chat', 'read')
          const limit = query.limit ?? 20
          const page = await chat.listSessions(deps.sql, { userId: me.userId, limit, cursor: query.cursor })
          return ok(page.items.map(serializeSession), { nextCursor: page.nextCursor, limit })
        },
        {
          query: AiModel.listQuery,
          response: { 200: Envelope.list(AiModel.listed), ...errors(400, 401, 503) },
          detail: {
            summary: 'List your chat sessions',
            description:
              'Your own sessions, newest first, a page at a time (`limit`, `cursor`), each with `lastMessageAt`; admins too see only their own here. ' +
              '400 for a bad `limit` or `cursor`. ' +
              NOT_CONFIGURED,
            tags: TAGS,
            ...access.collection('chat', 'read'),
          },
        },
      )
      .get('/sessions/:id', async ({ request, params }) => ok(serializeSession(await readable(request, params.id))), {
        params: idParams,
        response: { 200: Envelope.data(AiModel.session), ...errors(400, 401, 404, 503) },
        detail: {
          summary: 'Get a chat session',
          description:
            'The session\'s title, times, and whether an answer is being generated (`generating`, `generatingMessageId`). ' +
            '400 when the id is not a UUID, 404 when there is no such session. ' +
            NOT_CONFIGURED,
          tags: TAGS,
          ...access.object('chat', 'read'),
        },
      })
      .patch(
        '/sessions/:id',
        async ({ request, params, body }) => {
          const { me } = await guard(request, params.id, 'chat')
          return ok(await session(params.id, { type: 'rename', userId: me.userId, title: body.title }))
        },
        {
          params: idParams,
          body: AiModel.patch,
          response: { 200: Envelope.data(AiModel.session), ...errors(400, 401, 404, 503) },
          detail: {
            summary: 'Rename a chat session',
            description:
              `Sets the title (1–${MAX_TITLE_CHARS} characters) and answers the session; a \`session\` event {session} follows on \`chat:<id>\`. ` +
              '400 for a bad title or id, 404 when there is no such session. ' +
              NOT_CONFIGURED,
            tags: TAGS,
            ...access.object('chat', 'chat'),
          },
        },
      )
      .delete(
        '/sessions/:id',
        async ({ request, params }) => {
          const { me } = await guard(request, params.id, 'chat')
          return ok((await ask(params.id, { type: 'remove', userId: me.userId })) as { id: string })
        },
        {
          params: idParams,
          response: { 200: Envelope.data(AiModel.deleted), ...errors(400, 401, 404, 503) },
          detail: {
            summary: 'Delete a chat session and its messages',
            description:
              'Deletes the session and all its messages for good; an answer in progress is stopped (the tokens it used still count against the daily budget). ' +
              'A `deleted` event {id} follows on `chat:<id>`. 400 when the id is not a UUID, 404 when there is no such session. ' +
              NOT_CONFIGURED,
            tags: TAGS,
            ...access.object('chat', 'chat'),
          },
        },
      )
      .get(
        '/sessions/:id/messages',
        async ({ request, params, query }) => {
          const s = await readable(request, params.id)
          const limit = query.limit ?? 20
          const page = await chat.listMessages(deps.sql, { sessionId: s.id, limit, cursor: query.cursor, order: query.order })
          return ok(page.items.map(serializeMessage), { nextCursor: page.nextCursor, limit })
        },
        {
          params: idParams,
          query: AiModel.messagesQuery,
          response: { 200: Envelope.list(AiModel.message), ...errors(400, 401, 404, 503) },
          detail: {
            summary: "List a session's messages",
            description:
              'Your messages and the assistant\'s answers, in conversation order (`order=desc`: newest first), a page at a time (`limit`, `cursor`). ' +
              'An answer in progress shows `status: "streaming"` and no text yet (its text arrives as `delta` events on `chat:<id>` and is stored when it ends); ' +
              '`cancelled` and `interrupted` answers keep their partial text, `failed` ones have none and say why in `error`. ' +
              '400 for a bad id, `limit`, `cursor` or `order`; 404 when there is no such session. ' +
              NOT_CONFIGURED,
            tags: TAGS,
            ...access.object('chat', 'read'),
          },
        },
      )
      .post(
        '/sessions/:id/messages',
        async ({ request, params, body, set }) => {
          const { me } = await guard(request, params.id, 'chat')
          const topic = chatTopic(params.id)
          // Read before the send: every event of this answer comes after it.
          const since = await outbox.topicHead(deps.sql, topic)
          const sent = (await ask(params.id, { type: 'send', userId: me.userId, content: body.content })) as Replied<SentReply>
          set.status = 202
          return ok({ userMessage: serializeMessage(sent.userMessage), assistantMessage: serializeMessage(sent.assistantMessage), topic, since })
        },
        {
          params: idParams,
          body: AiModel.send,
          response: { 202: Envelope.data(AiModel.sent), ...errors(400, 401, 404, 409, 422, 429, 503) },
          detail: {
            summary: 'Send a message to the assistant',
            description:
              `Stores your message (1–${MAX_MESSAGE_CHARS.toLocaleString('en-US')} characters) and answers 202 at once with it, the assistant message being generated (\`streaming\`), the \`topic\` and a \`since\`: ` +
              'subscribe to `chat:<id>` on `/ws` with that `since` to receive every event of the answer, even if you subscribe late. ' +
              'Events: `message` {message}, `started` {messageId, userMessageId, model}, `delta` {messageId, index, text}, ' +
              '`done` {message} (final: completed | cancelled | interrupted | failed), `error` {messageId, code, message}. ' +
              '409 while an answer is being generated (one at a time per session; the detail names it); ' +
              '422 when the message alone does not fit the prompt budget (`AI_CONTEXT_TOKENS`); ' +
              '429 when your tokens today reached `AI_DAILY_TOKEN_BUDGET` (with `Retry-After` until UTC midnight and details `dailyTokenBudget`, `tokensUsedToday`, `resetsAt`). ' +
              'Answers are at most `AI_MAX_REPLY_TOKENS` long and bounded in time by `OPENAI_TIMEOUT_MS` and `OPENAI_IDLE_TIMEOUT_MS`. ' +
              NOT_CONFIGURED,
            tags: TAGS,
            ...access.object('chat', 'chat'),
          },
        },
      )
      .post(
        '/sessions/:id/cancel',
        async ({ request, params, set }) => {
          const { me } = await guard(request, params.id, 'chat')
          const r = (await ask(params.id, { type: 'cancel', userId: me.userId })) as { messageId: string | null; cancelling: boolean }
          set.status = 202
          return ok(r)
        },
        {
          params: idParams,
          response: { 202: Envelope.data(AiModel.cancelled), ...errors(400, 401, 404, 503) },
          detail: {
            summary: 'Stop the answer being generated',
            description:
              'Answers 202 with the message being stopped (`cancelling: true`); its text so far is kept, marked `cancelled`, and a `done` event follows on `chat:<id>`. ' +
              'With no answer in progress it changes nothing and answers `messageId: null`, `cancelling: false`. ' +
              '400 when the id is not a UUID, 404 when there is no such session. ' +
              NOT_CONFIGURED,
            tags: TAGS,
            ...access.object('chat', 'chat'),
          },
        },
      )
  )
}
