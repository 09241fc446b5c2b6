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
import { authorize, bearer, Envelope, errors, ok, requireAction, type HttpDeps } from './context.ts'

namespace AiModel {
  export const session = t.Object(
    {
      id: t.String({ format: 'uuid' }),
      title: t.String(),
      generating: t.Boolean({ description: 'An answer is being generated (a send now gets 409)' }),
      generatingMessageId: t.Union([t.String(), t.Null()]),
      createdAt: t.String({ format: 'date-time' }),
      updatedAt: t.String({ format: 'date-time' }),
      lastMessageAt: t.Optional(t.Union([t.String({ format: 'date-time' }), t.Null()])),
    },
    { title: 'ChatSession' },
  )
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
    { title: 'ChatMessage' },
  )
  export const create = t.Object(
    { title: t.Optional(t.String({ minLength: 1, maxLength: MAX_TITLE_CHARS, error: `Title must be 1–${MAX_TITLE_CHARS} characters` })) },
    { additionalProperties: false },
  )
  export const patch = t.Object(
    { title: t.String({ minLength: 1, maxLength: MAX_TITLE_CHARS, error: `Title must be 1–${MAX_TITLE_CHARS} characters` }) },
    { additionalProperties: false },
  )
  export const send = t.Object(
    { content: t.String({ minLength: 1, maxLength: MAX_MESSAGE_CHARS, error: `Message must be 1–${MAX_MESSAGE_CHARS} characters` }) },
    { additionalProperties: false },
  )
  export const sent = t.Object({
    userMessage: message,
    assistantMessage: message,
    topic: t.String({ description: 'Subscribe to it on /ws to receive the answer' }),
    since: t.Integer({ description: 'Subscribe with this `since` to receive every event of this answer, even those sent before you subscribed' }),
  })
  export const cancelled = t.Object({
    messageId: t.Union([t.String(), t.Null()], { description: 'The answer being cancelled; null when none was being generated' }),
    cancelling: t.Boolean(),
  })
  export const deleted = t.Object({ id: t.String({ format: 'uuid' }) })
  export const messagesQuery = t.Object({
    ...Envelope.pageQuery,
    order: t.Optional(t.Union([t.Literal('asc'), t.Literal('desc')], { description: 'asc (default): conversation order; desc: newest first' })),
  })
  export const listQuery = t.Object(Envelope.pageQuery)
}

const idParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid chat session id' }) })
const TAGS = ['AI Assistant']

/** The /api/ai routes over an actor system where the `chat-session` kind is registered. */
export function aiRoutes(deps: HttpDeps, configured: boolean) {
  const ask = (id: string, message: ChatSessionMessage) => deps.actors.ask(CHAT_SESSION_KIND, id, message)
  const session = async (id: string, message: ChatSessionMessage) => serializeSession((await ask(id, message)) as Replied<chat.ChatSessionRow>)

  /**
   * The caller and the session, if the access policy lets the caller do `action` to it: an
   * admin reads anyone's session, only its owner talks in it (404 otherwise). The session's
   * actor checks the owner again on every write.
   */
  const access = (request: Request, id: string, action: 'read' | 'chat') =>
    authorize(deps, request, { resource: 'chat', action, label: 'Chat session', load: () => chat.findSession(deps.sql, id) })
  const readable = async (request: Request, id: string) => (await access(request, id, 'read')).obj

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
          detail: { summary: 'Start a chat session with the AI assistant', tags: TAGS, security: bearer },
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
          response: { 200: Envelope.list(AiModel.session), ...errors(400, 401, 503) },
          detail: { summary: 'Your chat sessions, newest first (cursor pagination)', tags: TAGS, security: bearer },
        },
      )
      .get('/sessions/:id', async ({ request, params }) => ok(serializeSession(await readable(request, params.id))), {
        params: idParams,
        response: { 200: Envelope.data(AiModel.session), ...errors(400, 401, 404, 503) },
        detail: { summary: 'A chat session', tags: TAGS, security: bearer },
      })
      .patch(
        '/sessions/:id',
        async ({ request, params, body }) => {
          const { me } = await access(request, params.id, 'chat')
          return ok(await session(params.id, { type: 'rename', userId: me.userId, title: body.title }))
        },
        {
          params: idParams,
          body: AiModel.patch,
          response: { 200: Envelope.data(AiModel.session), ...errors(400, 401, 404, 503) },
          detail: { summary: 'Rename a chat session', tags: TAGS, security: bearer },
        },
      )
      .delete(
        '/sessions/:id',
        async ({ request, params }) => {
          const { me } = await access(request, params.id, 'chat')
          return ok((await ask(params.id, { type: 'remove', userId: me.userId })) as { id: string })
        },
        {
          params: idParams,
          response: { 200: Envelope.data(AiModel.deleted), ...errors(400, 401, 404, 503) },
          detail: { summary: 'Delete a chat session and its messages (an answer in progress is stopped)', tags: TAGS, security: bearer },
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
          detail: { summary: "A session's messages (conversation order; cursor pagination)", tags: TAGS, security: bearer },
        },
      )
      .post(
        '/sessions/:id/messages',
        async ({ request, params, body, set }) => {
          const { me } = await access(request, params.id, 'chat')
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
            summary: 'Send a message; answers 202 at once while the answer streams on /ws (topic chat:<id>)',
            description:
              'Events on `chat:<id>`: `message` {message}, `started` {messageId, userMessageId, model}, `delta` {messageId, index, text}, ' +
              '`done` {message} (final: completed | cancelled | interrupted | failed), `error` {messageId, code, message}. ' +
              '409 while an answer is being generated; 429 when the daily token budget is used up (details: dailyTokenBudget, tokensUsedToday, resetsAt).',
            tags: TAGS,
            security: bearer,
          },
        },
      )
      .post(
        '/sessions/:id/cancel',
        async ({ request, params, set }) => {
          const { me } = await access(request, params.id, 'chat')
          const r = (await ask(params.id, { type: 'cancel', userId: me.userId })) as { messageId: string | null; cancelling: boolean }
          set.status = 202
          return ok(r)
        },
        {
          params: idParams,
          response: { 202: Envelope.data(AiModel.cancelled), ...errors(400, 401, 404, 503) },
          detail: {
            summary: 'Stop the answer being generated; its text so far is kept, marked cancelled (a `done` event follows)',
            tags: TAGS,
            security: bearer,
          },
        },
      )
  )
}
