-- The AI assistant (src/actors/chat-session.ts): chat sessions, their messages, and the
-- per-user daily token ledger behind the spend control.

-- One row per chat session; the `chat-session` actor with the same id is its only writer.
-- `generating_id` is the assistant message being generated (null when idle): it is what makes
-- "one generation at a time" survive a restart, and what late reports of an ended
-- generation are checked against.
create table chat_sessions (
  id uuid primary key,
  user_id uuid not null references users (id) on delete cascade,
  title text not null,
  generating_id uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index idx_chat_sessions_user on chat_sessions (user_id, created_at, id);

-- Messages in conversation order. `timestamp` is the guide's column name; rows are written
-- with clock_timestamp() (not the transaction's now()) so a user message and the answer
-- inserted in the same turn still sort in the order they were written.
-- status: completed | streaming (answer in progress) | cancelled | interrupted (partial text
-- kept) | failed (no text: the provider refused or never answered; `error` says why).
create table chat_messages (
  id uuid primary key,
  session_id uuid not null references chat_sessions (id) on delete cascade,
  role text not null check (role in ('user', 'assistant', 'system')),
  content text not null,
  status text not null check (status in ('completed', 'streaming', 'cancelled', 'interrupted', 'failed')),
  model text,
  finish_reason text,
  prompt_tokens integer,
  completion_tokens integer,
  total_tokens integer,
  usage_estimated boolean,
  error_code text,
  error_message text,
  "timestamp" timestamptz not null default clock_timestamp(),
  completed_at timestamptz
);
-- The guide's index: a session's messages in order (pagination adds id only to break ties).
create index idx_chat_messages_session on chat_messages (session_id, "timestamp");

-- Tokens spent per user and UTC day. Rows are bumped when an answer ends (usage as reported
-- by the provider, or estimated for cancelled and interrupted answers). Not tied to the
-- sessions: deleting a session does not give its tokens back.
create table chat_token_usage (
  user_id uuid not null references users (id) on delete cascade,
  day date not null,
  tokens bigint not null default 0,
  primary key (user_id, day)
);
