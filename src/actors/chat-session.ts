/**
 * The `chat-session` actor: one per AI assistant conversation, the only writer of its session
 * row and messages.
 *
 * A send persists the user's message and an empty assistant message (status `streaming`),
 * then starts the generation as background work, so the mailbox stays free for `cancel`.
 * The generation reads the conversation and the user's own resources, asks the model, and
 * reports back to this actor with `self.tell`:
 * - `delta`: tokens coalesced into chunks (every DELTA_FLUSH_MS or DELTA_MAX_TOKENS tokens),
 *   each one an outbox event on `chat:<id>` — durable, numbered, resumable, in order;
 * - `finish`: the final text (exactly the concatenation of the deltas), usage, finish reason
 *   and status completed | cancelled | interrupted | failed; errors also go out as an
 *   `error` event.
 * Only one generation runs per session (`generating_id`); a second send gets 409. A durable
 * reminder set when the generation starts ends it as interrupted if no `finish` ever comes
 * (the process generating it died), keeping the text its deltas had already streamed.
 *
 * Events on `chat:<id>`: `message` {message} (the user's), `started` {messageId,
 * userMessageId, model}, `delta` {messageId, index, text}, `done` {message} (the assistant's,
 * final), `error` {messageId, code, message}, `session` {session}, `deleted` {id}.
 */
import { Type as T, type Static } from '@sinclair/typebox'
import { AppError, ConflictError, NotFoundError, RateLimitedError } from '../core/errors.ts'
import type { Logger } from '../core/logger.ts'
import type { Metrics } from '../core/metrics.ts'
import type { Db, Sql } from '../store/db.ts'
import * as chat from '../store/chat.ts'
import { MAX_NAMES_PER_KIND, TOKENS_REPLY_PRIMING, buildSystemPrompt, estimateMessageTokens, fitHistory } from '../engines/llm/context.ts'
import { AiContextTooLongError, AiNotConfiguredError } from '../engines/llm/errors.ts'
import type { ChatModel, ChatResult } from '../engines/llm/model.ts'
import { iso } from '../core/time.ts'
import { defineActor, type ActorRef, type Replied, type TurnContext } from './runtime/index.ts'

export const CHAT_SESSION_KIND = 'chat-session'

/** Longest user message, in characters (the context budget may refuse shorter ones: 422). */
export const MAX_MESSAGE_CHARS = 32_000
export const MAX_TITLE_CHARS = 200
export const DEFAULT_TITLE = 'New chat'

/**
 * Delta coalescing: one outbox event per token would be one turn (a transaction) per token;
 * 50 ms is below what a reader perceives as lag, and 32 tokens bounds a burst.
 */
const DELTA_FLUSH_MS = 50
const DELTA_MAX_TOKENS = 32

/** Slack after the model's own overall timeout before a silent generation is declared lost. */
const WATCHDOG_GRACE_MS = 30_000

const Id = T.String({ format: 'uuid' })
const ErrorInfo = T.Object({ code: T.String(), message: T.String() })

export const ChatSessionMessage = T.Union([
  T.Object({ type: T.Literal('create'), userId: Id, title: T.String({ minLength: 1, maxLength: MAX_TITLE_CHARS }) }),
  T.Object({ type: T.Literal('rename'), userId: Id, title: T.String({ minLength: 1, maxLength: MAX_TITLE_CHARS }) }),
  T.Object({ type: T.Literal('remove'), userId: Id }),
  T.Object({ type: T.Literal('send'), userId: Id, content: T.String({ minLength: 1, maxLength: MAX_MESSAGE_CHARS }) }),
  T.Object({ type: T.Literal('cancel'), userId: Id }),
  // Reports of the background generation (never sent by the HTTP edge).
  T.Object({ type: T.Literal('delta'), generationId: Id, index: T.Integer({ minimum: 0 }), text: T.String() }),
  T.Object({
    type: T.Literal('finish'),
    generationId: Id,
    /** Whose budget the tokens count against (also when the session is gone by then). */
    userId: Id,
    content: T.String(),
    status: T.Union([T.Literal('completed'), T.Literal('cancelled'), T.Literal('interrupted'), T.Literal('failed')]),
    model: T.Union([T.String(), T.Null()]),
    finishReason: T.Union([T.String(), T.Null()]),
    usage: T.Union([
      T.Object({ promptTokens: T.Integer({ minimum: 0 }), completionTokens: T.Integer({ minimum: 0 }), totalTokens: T.Integer({ minimum: 0 }), estimated: T.Boolean() }),
      T.Null(),
    ]),
    error: T.Union([ErrorInfo, T.Null()]),
  }),
  /** The watchdog reminder: ends a generation nobody reported on. */
  T.Object({ type: T.Literal('expire'), generationId: Id }),
])
export type ChatSessionMessage = Static<typeof ChatSessionMessage>
type Finish = Omit<Extract<ChatSessionMessage, { type: 'finish' }>, 'userId'>

/** What a `send` replies: the two messages it recorded. */
export interface SentReply {
  userMessage: chat.ChatMessageRow
  assistantMessage: chat.ChatMessageRow
}

/** The session row, or null for an id with no session (never created, or deleted). */
export type ChatSessionState = chat.ChatSessionRow | null

/**
 * A session as its `session` event carries it (the API shows sessions the same way). Takes a
 * row, or a reply that crossed nodes (times already text).
 */
export function serializeSession(s: Replied<chat.ChatSessionRow & { lastMessageAt?: Date | null }>) {
  return {
    id: s.id,
    title: s.title,
    generating: s.generatingId !== null,
    generatingMessageId: s.generatingId,
    createdAt: iso(s.createdAt),
    updatedAt: iso(s.updatedAt),
    ...(s.lastMessageAt !== undefined ? { lastMessageAt: iso(s.lastMessageAt) } : {}),
  }
}

/** A message as the `message` and `done` events carry it (the API shows messages the same way). */
export function serializeMessage(m: Replied<chat.ChatMessageRow>) {
  return {
    id: m.id,
    sessionId: m.sessionId,
    role: m.role,
    content: m.content,
    status: m.status,
    model: m.model,
    finishReason: m.finishReason,
    usage:
      m.totalTokens === null
        ? null
        : { promptTokens: m.promptTokens ?? 0, completionTokens: m.completionTokens ?? 0, totalTokens: m.totalTokens, estimated: m.usageEstimated === true },
    error: m.errorCode === null ? null : { code: m.errorCode, message: m.errorMessage ?? '' },
    createdAt: iso(m.createdAt),
    completedAt: iso(m.completedAt),
  }
}

export const chatTopic = (sessionId: string) => `chat:${sessionId}`

export interface ChatSessionOptions {
  /** Undefined when OPENAI_API_KEY is not set: sends are refused with AiNotConfiguredError. */
  model: ChatModel | undefined
  /** The pool, for the generation's reads (conversation, resources) outside any turn. */
  sql: Sql
  logger: Logger
  metrics?: Metrics
  /** Prompt budget (system prompt + history), AI_CONTEXT_TOKENS. */
  contextTokens: number
  /** The web app's URL (FRONTEND_URL), named in the system prompt so links point there. */
  webAppUrl?: string
  /** Upper bound on one answer, AI_MAX_REPLY_TOKENS. */
  maxReplyTokens: number
  /** Tokens per user per UTC day; 0 = unlimited. AI_DAILY_TOKEN_BUDGET. */
  dailyTokenBudget: number
  /** The model's overall timeout (OPENAI_TIMEOUT_MS): after it (plus slack) the watchdog fires. */
  generationTimeoutMs: number
  /** Told about every provider outcome (undefined = success), for the health probe. */
  onProviderOutcome?: (error: AppError | undefined) => void
}

/** Seconds until the next UTC midnight, when the daily budget starts over. */
function untilUtcMidnight(now = new Date()): { seconds: number; at: Date } {
  const at = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1))
  return { seconds: Math.max(1, Math.ceil((at.getTime() - now.getTime()) / 1000)), at }
}

/** An error as a client may see it: AppErrors that are public keep their words; others do not leak. */
function publicError(err: unknown): { code: string; message: string } {
  if (err instanceof AppError && err.expose) return { code: err.code, message: err.message }
  return { code: 'internal_error', message: 'The assistant failed unexpectedly; try again' }
}

/**
 * Collects tokens and hands them on as chunks: when DELTA_MAX_TOKENS are waiting, or
 * DELTA_FLUSH_MS after the first waiting token. `flush()` sends what is left (call it when
 * the stream ends, before reporting the end, so every token precedes the `finish`).
 */
class DeltaCoalescer {
  #buffer: string[] = []
  #timer: ReturnType<typeof setTimeout> | undefined
  #index = 0

  constructor(private readonly send: (index: number, text: string) => void) {}

  push(token: string): void {
    this.#buffer.push(token)
    if (this.#buffer.length >= DELTA_MAX_TOKENS) this.flush()
    else this.#timer ??= setTimeout(() => this.flush(), DELTA_FLUSH_MS)
  }

  flush(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    if (this.#buffer.length === 0) return
    const text = this.#buffer.join('')
    this.#buffer = []
    this.send(this.#index++, text)
  }
}

/**
 * Define the `chat-session` kind over a model. One definition per actor system: the
 * in-flight generations (their cancel handles) are kept in this closure, per process.
 */
export function chatSessionActor(opts: ChatSessionOptions) {
  if (!(opts.contextTokens > 0) || !(opts.maxReplyTokens > 0) || !(opts.generationTimeoutMs > 0)) {
    throw new Error('chat-session: contextTokens, maxReplyTokens and generationTimeoutMs must be > 0')
  }
  if (!(opts.dailyTokenBudget >= 0)) throw new Error('chat-session: dailyTokenBudget must be >= 0')
  const log = opts.logger.child({ component: 'chat-session' })
  const generations = opts.metrics?.counter('ai_generations_total', 'AI assistant answers by final status', ['status'])
  const tokensCounter = opts.metrics?.counter('ai_tokens_total', 'Tokens spent by the AI assistant (prompt, completion)', ['kind'])
  /** Generations running in this process, by assistant message id: their cancel handles. */
  const inflight = new Map<string, AbortController>()

  const owned = (state: ChatSessionState, userId: string): chat.ChatSessionRow => {
    // Another user's session and no session at all look the same: 404.
    if (!state || state.userId !== userId) throw new NotFoundError('Chat session')
    return state
  }

  /** End the generation in this turn: persist the message, count tokens, tell subscribers. */
  async function settle(ctx: TurnContext<ChatSessionMessage>, state: chat.ChatSessionRow, f: Omit<Finish, 'type'>): Promise<ChatSessionState> {
    const row = await chat.finishMessage(ctx.tx, f.generationId, {
      content: f.content,
      status: f.status,
      model: f.model,
      finishReason: f.finishReason,
      usage: f.usage,
      error: f.error,
    })
    if (f.usage && f.usage.totalTokens > 0) {
      await chat.addTokenUsage(ctx.tx, state.userId, f.usage.totalTokens)
      tokensCounter?.inc({ kind: 'prompt' }, f.usage.promptTokens)
      tokensCounter?.inc({ kind: 'completion' }, f.usage.completionTokens)
    }
    generations?.inc({ status: f.status })
    const topic = chatTopic(state.id)
    if (row) ctx.emit(topic, 'done', { message: serializeMessage(row) })
    if (f.error) ctx.emit(topic, 'error', { messageId: f.generationId, ...f.error })
    return { ...state, generatingId: null, updatedAt: new Date() }
  }

  /** The background work of one answer. Reports with `self.tell`; never throws. */
  async function generate(self: ActorRef<ChatSessionMessage>, session: chat.ChatSessionRow, generationId: string, systemSignal: AbortSignal): Promise<void> {
    // Registered before the first await: a cancel handled after this turn finds it.
    const ac = new AbortController()
    inflight.set(generationId, ac)
    const onSystemStop = () => ac.abort()
    systemSignal.addEventListener('abort', onSystemStop, { once: true })
    const coalescer = new DeltaCoalescer((index, text) =>
      self.tell({ type: 'delta', generationId, index, text }, { messageId: `${generationId}:delta:${index}` }),
    )
    const finish = (f: Omit<Finish, 'type' | 'generationId'>) =>
      self.tell({ type: 'finish', generationId, userId: session.userId, ...f }, { messageId: `${generationId}:finish` })
    try {
      const model = opts.model
      if (!model) throw new AiNotConfiguredError()
      const [history, resources, user] = await Promise.all([
        chat.conversation(opts.sql, session.id, opts.contextTokens),
        chat.userResources(opts.sql, session.userId, MAX_NAMES_PER_KIND),
        opts.sql<{ firstName: string; lastName: string }[]>`select first_name as "firstName", last_name as "lastName" from users where id = ${session.userId}`,
      ])
      const u = user[0]
      const system = buildSystemPrompt({ userName: u ? `${u.firstName} ${u.lastName}` : undefined, webAppUrl: opts.webAppUrl, ...resources })
      const fitted = fitHistory(system, history, opts.contextTokens)
      let result: ChatResult
      try {
        result = await model.stream({ messages: fitted.messages, maxTokens: opts.maxReplyTokens, signal: ac.signal }, (token) => coalescer.push(token))
      } finally {
        coalescer.flush()
      }
      opts.onProviderOutcome?.(result.status === 'interrupted' ? result.error : undefined)
      finish({
        content: result.content,
        status: result.status,
        model: result.model,
        finishReason: result.finishReason,
        usage: { ...result.usage, estimated: result.usageEstimated },
        error: result.error ? publicError(result.error) : null,
      })
    } catch (err) {
      if (!(err instanceof AppError && err.expose)) log.error({ err, session: session.id, generationId }, 'generation failed')
      if (err instanceof AppError && !(err instanceof AiContextTooLongError) && !(err instanceof AiNotConfiguredError)) opts.onProviderOutcome?.(err)
      // stream() throws only before its first token, so there is no text to keep.
      finish({ content: '', status: 'failed', model: null, finishReason: null, usage: null, error: publicError(err) })
    } finally {
      inflight.delete(generationId)
      systemSignal.removeEventListener('abort', onSystemStop)
    }
  }

  return defineActor({
    kind: CHAT_SESSION_KIND,
    messages: ChatSessionMessage,
    async load(sql: Db, id: string): Promise<ChatSessionState> {
      return (await chat.findSession(sql, id)) ?? null
    },
    persist: (tx: Db, id: string, state: ChatSessionState) => (state ? chat.saveSession(tx, state) : chat.deleteSession(tx, id)),
    async handle(ctx, state, msg) {
      const topic = chatTopic(ctx.id)
      switch (msg.type) {
        case 'create': {
          if (state) throw new ConflictError('A chat session with this id already exists')
          const now = new Date()
          const session: chat.ChatSessionRow = { id: ctx.id, userId: msg.userId, title: msg.title, generatingId: null, createdAt: now, updatedAt: now }
          return { state: session, reply: session }
        }
        case 'rename': {
          const s = owned(state, msg.userId)
          const next = { ...s, title: msg.title, updatedAt: new Date() }
          ctx.emit(topic, 'session', { session: serializeSession(next) })
          return { state: next, reply: next }
        }
        case 'remove': {
          const s = owned(state, msg.userId)
          if (s.generatingId) inflight.get(s.generatingId)?.abort()
          ctx.emit(topic, 'deleted', { id: s.id })
          return { state: null, reply: { id: s.id } }
        }
        case 'send': {
          const s = owned(state, msg.userId)
          const model = opts.model
          if (!model) throw new AiNotConfiguredError()
          if (s.generatingId) {
            throw new ConflictError('The assistant is still answering in this session; wait for the answer or cancel it', [
              { field: 'generatingMessageId', message: s.generatingId },
            ])
          }
          if (estimateMessageTokens({ role: 'user', content: msg.content }) + TOKENS_REPLY_PRIMING > opts.contextTokens) {
            throw new AiContextTooLongError(`Your message is too long for the AI assistant (limit about ${opts.contextTokens} tokens with the conversation); send a shorter message`)
          }
          if (opts.dailyTokenBudget > 0) {
            const used = await chat.tokensUsedToday(ctx.tx, s.userId)
            if (used >= opts.dailyTokenBudget) {
              const reset = untilUtcMidnight()
              throw new RateLimitedError(`Daily AI token budget used up (${used} of ${opts.dailyTokenBudget} tokens); it resets at ${reset.at.toISOString()}`, reset.seconds, [
                { field: 'dailyTokenBudget', message: String(opts.dailyTokenBudget) },
                { field: 'tokensUsedToday', message: String(used) },
                { field: 'resetsAt', message: reset.at.toISOString() },
              ])
            }
          }
          const generationId = crypto.randomUUID()
          const [userMessage, assistantMessage] = await chat.insertMessages(ctx.tx, [
            { id: crypto.randomUUID(), sessionId: s.id, role: 'user', content: msg.content, status: 'completed' },
            { id: generationId, sessionId: s.id, role: 'assistant', content: '', status: 'streaming', model: model.model },
          ])
          ctx.emit(topic, 'message', { message: serializeMessage(userMessage!) })
          ctx.emit(topic, 'started', { messageId: generationId, userMessageId: userMessage!.id, model: model.model })
          ctx.schedule(new Date(Date.now() + opts.generationTimeoutMs + WATCHDOG_GRACE_MS), { type: 'expire', generationId })
          const session = { ...s, generatingId: generationId, updatedAt: new Date() }
          const self = ctx.self
          ctx.background((signal) => generate(self, session, generationId, signal))
          return { state: session, reply: { userMessage: userMessage!, assistantMessage: assistantMessage! } satisfies SentReply }
        }
        case 'cancel': {
          const s = owned(state, msg.userId)
          const generationId = s.generatingId
          if (!generationId) return { reply: { messageId: null, cancelling: false } }
          const running = inflight.get(generationId)
          if (running) {
            // The generation ends itself as 'cancelled' with what it produced (its finish
            // follows in this mailbox).
            running.abort()
            return { reply: { messageId: generationId, cancelling: true } }
          }
          // Nothing generates it in this process (it was started before a restart, or on a
          // node that has since lost the session): end it here with the text its deltas kept.
          const content = await chat.streamedText(ctx.tx, topic, generationId)
          const next = await settle(ctx, s, { generationId, content, status: 'cancelled', model: null, finishReason: null, usage: null, error: null })
          return { state: next, reply: { messageId: generationId, cancelling: true } }
        }
        case 'delta': {
          // A late report of a generation that already ended (cancelled here, expired) is dropped.
          if (!state || state.generatingId !== msg.generationId) return
          ctx.emit(topic, 'delta', { messageId: msg.generationId, index: msg.index, text: msg.text })
          return
        }
        case 'finish': {
          const { type: _type, userId, ...f } = msg
          if (!state || state.generatingId !== f.generationId) {
            // Ended here already (session deleted, cancelled after a restart, expired), but the
            // provider still billed what it generated: it counts against the budget all the same.
            if (f.usage && f.usage.totalTokens > 0) await chat.addTokenUsage(ctx.tx, userId, f.usage.totalTokens)
            return
          }
          return { state: await settle(ctx, state, f) }
        }
        case 'expire': {
          if (!state || state.generatingId !== msg.generationId) return // it finished in time
          inflight.get(msg.generationId)?.abort()
          log.warn({ session: state.id, generationId: msg.generationId }, 'generation never reported its end; marking it interrupted')
          const content = await chat.streamedText(ctx.tx, topic, msg.generationId)
          const next = await settle(ctx, state, {
            generationId: msg.generationId,
            content,
            status: 'interrupted',
            model: null,
            finishReason: null,
            usage: null,
            error: { code: 'ai_generation_lost', message: 'The answer was interrupted: the server generating it stopped. The text received so far is kept.' },
          })
          return { state: next }
        }
        default: {
          const unhandled: never = msg
          throw new Error(`unhandled chat-session message ${JSON.stringify(unhandled)}`)
        }
      }
    },
  })
}
