-- Notifications (issue 17): in-app notifications, each user's e-mail preferences, the mail
-- outbox, the notifier's cursor over each user's events, and password-reset tokens.
-- Writers: src/store/notifications.ts (notifications, notification_cursors),
-- notifications-preferences.ts, notifications-mail.ts, password-resets.ts.

-- One row per thing a user was told. `kind` names the template (src/engines/mail/templates.ts),
-- `data` what it says. Rows are inserted in the transaction of what caused them: the notifier's
-- turn for those derived from actor events, the password change's for a password change.
-- `dedupe_key`: one notification per cause (a run's terminal status, a lockout window).
-- `email`: what became of the e-mail at creation — `unavailable` (no SMTP_HOST), `opted_out`
-- (the user's preference), `queued` (a row in notification_mails, `mail_id`).
-- `announced_at`: when the `notification` event went out on `user:<id>` (null: not yet).
create table notifications (
  id uuid primary key,
  user_id uuid not null references users(id) on delete cascade,
  kind text not null,
  data jsonb not null default '{}',
  dedupe_key text,
  email text not null check (email in ('unavailable', 'opted_out', 'queued')),
  mail_id uuid,
  created_at timestamptz not null default now(),
  read_at timestamptz,
  announced_at timestamptz
);
create unique index notifications_dedupe on notifications (user_id, dedupe_key) where dedupe_key is not null;
-- GET /api/notifications: unread first, newest first.
create index notifications_list on notifications (user_id, (read_at is not null), created_at desc, id desc);
create index notifications_unannounced on notifications (user_id) where announced_at is null;

-- A user's e-mail choice per kind; no row: the default (on). Security kinds are never stored off.
create table notification_preferences (
  user_id uuid not null references users(id) on delete cascade,
  kind text not null,
  email boolean not null,
  updated_at timestamptz not null default now(),
  primary key (user_id, kind)
);

-- The mail outbox. A row is written in the same transaction as what caused it and sent by a
-- job (BullMQ with REDIS_URL, in-process alone) whose id is the row's id. Sending claims the
-- row first (`sending`, with a lease in `claimed_until`), so two nodes never both send it;
-- a node that dies mid-send leaves a claim that expires and is taken again.
-- `to_address` is the address at the time it was written; `data` what the template needs,
-- secrets (a reset link's token) sealed under `data.sealed` and removed once sent or dropped.
create table notification_mails (
  id uuid primary key,
  user_id uuid references users(id) on delete cascade,
  kind text not null,
  to_address text not null,
  data jsonb not null default '{}',
  status text not null default 'pending' check (status in ('pending', 'sending', 'sent', 'failed')),
  attempts integer not null default 0,
  last_error text,
  next_attempt_at timestamptz not null default now(),
  claimed_by text,
  claimed_until timestamptz,
  created_at timestamptz not null default now(),
  sent_at timestamptz
);
create index notification_mails_due on notification_mails (next_attempt_at) where status in ('pending', 'sending');

-- The notifier actor's state (src/actors/notifier.ts): how far it has read `user:<id>` in the
-- actor outbox, and whether the storage warning is out (re-armed below 90 %).
create table notification_cursors (
  user_id uuid primary key references users(id) on delete cascade,
  seq bigint not null,
  storage_warned boolean not null default false
);
-- Users who had events before notifications existed start at their topic's head: the past is
-- not announced.
insert into notification_cursors (user_id, seq)
  select u.id, t.seq from actor_outbox_topics t join users u on t.topic = 'user:' || u.id::text;

-- Password-reset tokens: only their SHA-256 is kept. Single use (`used_at`), valid until
-- `expires_at` (PASSWORD_RESET_TTL_MINUTES); a reset or a password change spends every other
-- open token of the user.
create table password_resets (
  id uuid primary key,
  user_id uuid not null references users(id) on delete cascade,
  token_hash text not null unique,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  used_at timestamptz,
  ip text
);
create index password_resets_open on password_resets (user_id) where used_at is null;
