/**
 * The AI assistant's tables (sql/0005_chat.sql): chat sessions, their messages, the per-user
 * daily token ledger, and the read-only summary of a user's own resources that goes into
 * the assistant's system prompt.
 */
import type postgres from 'postgres'
import { timed, type Db } from './db.ts'
import { decodeCursor, toPage, type Page } from './pagination.ts'

type ChatRole = 'user' | 'assistant' | 'system'
type ChatMessageStatus = 'completed' | 'streaming' | 'cancelled' | 'interrupted' | 'failed'

export interface ChatSessionRow {
  id: string
  userId: string
  title: string
  /** The assistant message being generated; null when the session is idle. */
  generatingId: string | null
  createdAt: Date
  updatedAt: Date
}

export interface ChatSessionListRow extends ChatSessionRow {
  /** Time of the newest message, null for an empty session. */
  lastMessageAt: Date | null
}

export interface ChatMessageRow {
  id: string
  sessionId: string
  role: ChatRole
  content: string
  status: ChatMessageStatus
  model: string | null
  finishReason: string | null
  promptTokens: number | null
  completionTokens: number | null
  totalTokens: number | null
  usageEstimated: boolean | null
  errorCode: string | null
  errorMessage: string | null
  createdAt: Date
  completedAt: Date | null
}

const SESSION = (sql: Db) => sql`id, user_id as "userId", title, generating_id as "generatingId", created_at as "createdAt", updated_at as "updatedAt"`

// Fragments are for pool reads only: inside an actor turn, ctx.tx runs every tagged template
// it is given as a query of its own, so the functions a turn calls spell their columns out.
const MESSAGE = (sql: Db) => sql`
  id, session_id as "sessionId", role, content, status, model, finish_reason as "finishReason",
  prompt_tokens as "promptTokens", completion_tokens as "completionTokens", total_tokens as "totalTokens",
  usage_estimated as "usageEstimated", error_code as "errorCode", error_message as "errorMessage",
  "timestamp" as "createdAt", completed_at as "completedAt"`

// ---- sessions ------------------------------------------------------------------------------

export const findSession = timed('chat.findSession', async function findSession(sql: Db, id: string): Promise<ChatSessionRow | undefined> {
  const [row] = await sql<ChatSessionRow[]>`
    select id, user_id as "userId", title, generating_id as "generatingId", created_at as "createdAt", updated_at as "updatedAt"
    from chat_sessions where id = ${id}`
  return row
})

/** Insert or update a session from the actor's state (its persist). */
export function saveSession(sql: Db, s: ChatSessionRow) {
  return sql`
    insert into chat_sessions (id, user_id, title, generating_id, created_at, updated_at)
    values (${s.id}, ${s.userId}, ${s.title}, ${s.generatingId}, ${s.createdAt}, ${s.updatedAt})
    on conflict (id) do update set title = excluded.title, generating_id = excluded.generating_id, updated_at = excluded.updated_at`
}

/** Delete a session; its messages go with it (on delete cascade). */
export function deleteSession(sql: Db, id: string) {
  return sql`delete from chat_sessions where id = ${id}`
}

/** A user's sessions, newest first (a chat list shows the latest conversations on top). */
export const listSessions = timed('chat.listSessions', async function listSessions(sql: Db, opts: { userId: string; limit: number; cursor?: string }): Promise<Page<ChatSessionListRow>> {
  const c = decodeCursor(opts.cursor)
  const rows = await sql<(ChatSessionListRow & { cursorAt: string })[]>`
    select ${SESSION(sql)}, created_at::text as "cursorAt",
      (select max(m."timestamp") from chat_messages m where m.session_id = s.id) as "lastMessageAt"
    from chat_sessions s
    where user_id = ${opts.userId}
      ${c ? sql`and (created_at, id) < (${c.t}::text::timestamptz, ${c.id}::uuid)` : sql``}
    order by created_at desc, id desc
    limit ${opts.limit + 1}`
  return toPage(rows, opts.limit)
})

// ---- messages ------------------------------------------------------------------------------

export interface NewChatMessage {
  id: string
  sessionId: string
  role: ChatRole
  content: string
  status: ChatMessageStatus
  model?: string | null
}

/**
 * Insert messages in the given order. Each row's `timestamp` is clock_timestamp() plus its
 * position in microseconds, so rows written together keep their order even when the clock
 * reads the same value twice.
 */
export const insertMessages = timed('chat.insertMessages', async function insertMessages(sql: Db, messages: readonly NewChatMessage[]): Promise<ChatMessageRow[]> {
  const json = messages.map((m, ord) => ({ id: m.id, session_id: m.sessionId, role: m.role, content: m.content, status: m.status, model: m.model ?? null, ord }))
  return sql<ChatMessageRow[]>`
    insert into chat_messages (id, session_id, role, content, status, model, "timestamp")
    select id, session_id, role, content, status, model, clock_timestamp() + make_interval(secs => ord / 1e6)
    from jsonb_to_recordset(${sql.json(json as unknown as postgres.JSONValue)})
      as m (id uuid, session_id uuid, role text, content text, status text, model text, ord int)
    order by ord
    returning id, session_id as "sessionId", role, content, status, model, finish_reason as "finishReason",
      prompt_tokens as "promptTokens", completion_tokens as "completionTokens", total_tokens as "totalTokens",
      usage_estimated as "usageEstimated", error_code as "errorCode", error_message as "errorMessage",
      "timestamp" as "createdAt", completed_at as "completedAt"`
})

export interface MessageOutcome {
  content: string
  status: Exclude<ChatMessageStatus, 'streaming'>
  model?: string | null
  finishReason?: string | null
  usage?: { promptTokens: number; completionTokens: number; totalTokens: number; estimated: boolean } | null
  error?: { code: string; message: string } | null
}

/** Record how an assistant message ended. */
export const finishMessage = timed('chat.finishMessage', async function finishMessage(sql: Db, id: string, o: MessageOutcome): Promise<ChatMessageRow | undefined> {
  const [row] = await sql<ChatMessageRow[]>`
    update chat_messages set
      content = ${o.content},
      status = ${o.status},
      model = coalesce(${o.model ?? null}, model),
      finish_reason = ${o.finishReason ?? null},
      prompt_tokens = ${o.usage?.promptTokens ?? null},
      completion_tokens = ${o.usage?.completionTokens ?? null},
      total_tokens = ${o.usage?.totalTokens ?? null},
      usage_estimated = ${o.usage ? o.usage.estimated : null},
      error_code = ${o.error?.code ?? null},
      error_message = ${o.error?.message ?? null},
      completed_at = clock_timestamp()
    where id = ${id}
    returning id, session_id as "sessionId", role, content, status, model, finish_reason as "finishReason",
      prompt_tokens as "promptTokens", completion_tokens as "completionTokens", total_tokens as "totalTokens",
      usage_estimated as "usageEstimated", error_code as "errorCode", error_message as "errorMessage",
      "timestamp" as "createdAt", completed_at as "completedAt"`
  return row
})

/** A session's messages in conversation order (`desc`: newest first), keyset-paginated on (timestamp, id). */
export const listMessages = timed('chat.listMessages', async function listMessages(sql: Db, opts: { sessionId: string; limit: number; cursor?: string; order?: 'asc' | 'desc' }): Promise<Page<ChatMessageRow>> {
  const c = decodeCursor(opts.cursor)
  const desc = opts.order === 'desc'
  const after = c
    ? desc
      ? sql`and ("timestamp", id) < (${c.t}::text::timestamptz, ${c.id}::uuid)`
      : sql`and ("timestamp", id) > (${c.t}::text::timestamptz, ${c.id}::uuid)`
    : sql``
  const rows = await sql<(ChatMessageRow & { cursorAt: string })[]>`
    select ${MESSAGE(sql)}, "timestamp"::text as "cursorAt"
    from chat_messages
    where session_id = ${opts.sessionId} ${after}
    order by ${desc ? sql`"timestamp" desc, id desc` : sql`"timestamp", id`}
    limit ${opts.limit + 1}`
  return toPage(rows, opts.limit)
})

/**
 * The conversation as the model should see it, oldest first: user and assistant messages
 * with text (a failed answer has none; one still streaming is the answer being asked for).
 *
 * Only the newest messages that could fit a prompt of `budgetTokens` are read. Two bounds,
 * both exact for the estimator in src/engines/llm/context.ts (every message costs at least 3 framing
 * tokens plus one for its text, and a text of n characters at least n/4 tokens): at most
 * budget/4 rows, and no row whose newer neighbours alone already hold 4 × budget characters.
 */
export const conversation = timed('chat.conversation', async function conversation(sql: Db, sessionId: string, budgetTokens: number): Promise<{ role: 'user' | 'assistant'; content: string }[]> {
  const maxRows = Math.max(1, Math.ceil(budgetTokens / 4))
  const maxChars = budgetTokens * 4
  const rows = await sql<{ role: 'user' | 'assistant'; content: string }[]>`
    select role, content from (
      select role, content, "timestamp", id,
        coalesce(sum(length(content)) over (order by "timestamp" desc, id desc rows between unbounded preceding and 1 preceding), 0) as newer
      from chat_messages
      where session_id = ${sessionId} and role in ('user', 'assistant') and status <> 'streaming' and content <> ''
      order by "timestamp" desc, id desc
      limit ${maxRows}
    ) recent
    where newer <= ${maxChars}
    order by "timestamp", id`
  return rows
})

/**
 * The text streamed so far for an answer, put back together from its `delta` events in the
 * outbox. Used only when the process that was generating it is gone (a crash, a restart):
 * the deltas are the one durable record of the partial text, and keeping it is the promise.
 * Reads the runtime's outbox table directly, by primary-key prefix (topic).
 */
export const streamedText = timed('chat.streamedText', async function streamedText(sql: Db, topic: string, messageId: string): Promise<string> {
  const [row] = await sql<{ text: string | null }[]>`
    select string_agg(data->>'text', '' order by seq) as text
    from actor_outbox
    where topic = ${topic} and type = 'delta' and data->>'messageId' = ${messageId}`
  return row?.text ?? ''
})

// ---- token budget ---------------------------------------------------------------------------

/** Tokens `userId` spent today (UTC). */
export const tokensUsedToday = timed('chat.tokensUsedToday', async function tokensUsedToday(sql: Db, userId: string): Promise<number> {
  const [row] = await sql<{ tokens: number }[]>`
    select tokens from chat_token_usage where user_id = ${userId} and day = (now() at time zone 'utc')::date`
  return row?.tokens ?? 0
})

/** Add `tokens` to today's (UTC) total of `userId`. */
export function addTokenUsage(sql: Db, userId: string, tokens: number) {
  return sql`
    insert into chat_token_usage (user_id, day, tokens)
    values (${userId}, (now() at time zone 'utc')::date, ${tokens})
    on conflict (user_id, day) do update set tokens = chat_token_usage.tokens + excluded.tokens`
}

// ---- the user's own resources, for the system prompt ------------------------------------------

export interface OwnedResources {
  count: number
  /** Most recently changed first, at most `limit`. */
  names: string[]
}

export interface UserResources {
  workstations: OwnedResources
  datakits: OwnedResources
  models: OwnedResources
}

/**
 * Where each kind of resource may live. Those tables belong to other features (and may not
 * exist in a deployment or a test database that lacks them), so they are looked up in the
 * catalog rather than assumed: a missing table or column means "none", never an error.
 */
const SOURCES: Record<keyof UserResources, string[]> = {
  workstations: ['workstations'],
  datakits: ['datakits', 'data_kits'],
  models: ['models'],
}
const OWNER_COLUMNS = ['user_id', 'owner_id']
const ORDER_COLUMNS = ['updated_at', 'created_at']

interface TableShape {
  table: string
  owner: string
  softDelete: boolean
  order: string | undefined
}

/** The resource tables present in the current schema, and the columns we need from them. */
async function resourceTables(sql: Db): Promise<Map<string, TableShape>> {
  const tables = Object.values(SOURCES).flat()
  const cols = await sql<{ table: string; column: string }[]>`
    select table_name as table, column_name as column
    from information_schema.columns
    where table_schema = current_schema() and table_name in ${sql(tables)}`
  const byTable = new Map<string, Set<string>>()
  for (const c of cols) byTable.set(c.table, (byTable.get(c.table) ?? new Set()).add(c.column))
  const out = new Map<string, TableShape>()
  for (const [table, columns] of byTable) {
    const owner = OWNER_COLUMNS.find((c) => columns.has(c))
    if (!owner || !columns.has('name')) continue
    out.set(table, { table, owner, softDelete: columns.has('deleted_at'), order: ORDER_COLUMNS.find((c) => columns.has(c)) })
  }
  return out
}

/**
 * How many workstations, DataKits and models `userId` owns, with the names of the `limit`
 * most recent of each. Every query filters on the owner column: nothing of another user's
 * can reach the assistant's prompt.
 */
export const userResources = timed('chat.userResources', async function userResources(sql: Db, userId: string, limit: number): Promise<UserResources> {
  const shapes = await resourceTables(sql)
  const one = async (kind: keyof UserResources): Promise<OwnedResources> => {
    const shape = SOURCES[kind].map((t) => shapes.get(t)).find((s) => s !== undefined)
    if (!shape) return { count: 0, names: [] }
    const live = shape.softDelete ? sql`and deleted_at is null` : sql``
    const order = shape.order ? sql`order by ${sql(shape.order)} desc nulls last` : sql``
    const [counted] = await sql<{ n: number }[]>`
      select count(*)::int as n from ${sql(shape.table)} where ${sql(shape.owner)} = ${userId} ${live}`
    const names = await sql<{ name: string }[]>`
      select name::text as name from ${sql(shape.table)} where ${sql(shape.owner)} = ${userId} ${live} ${order} limit ${limit}`
    return { count: counted?.n ?? 0, names: names.map((r) => r.name) }
  }
  const [workstations, datakits, models] = await Promise.all([one('workstations'), one('datakits'), one('models')])
  return { workstations, datakits, models }
})
