-- The audit log: every state-changing request and every security event, as a hash chain.
-- Written only by src/store/audit.ts (the request hook, the auth layer and the retention
-- actor all go through it). Rows hold who, what, on what, with what outcome, from where —
-- never a secret and never a request body.
--
-- Tamper evidence: each event's `hash` is SHA-256 over the previous event's hash and the
-- event's own canonical content (src/store/audit-chain.ts). `audit_chain` is the chain's
-- head — the last event's seq and hash — updated in the same statement or transaction as
-- every append, so writers (any node, any transaction) are serialised by its row lock and
-- the chain never forks. Retention removes a prefix of the chain and leaves a checkpoint:
-- the last removed event's seq and hash, from which the rest still verifies.

create table audit_events (
  -- Chain order: 1, 2, 3… without gaps (a gap is a removed event).
  seq bigint primary key check (seq >= 1),
  -- Random (v4), shown by the API; events are found by seq, so it has no index of its own (a
  -- random uuid is the dearest index to keep up, paid on every request).
  id uuid not null,
  at timestamptz not null,
  -- No foreign keys: the record outlives whatever it names.
  actor_id uuid,
  -- The actor's e-mail when the event happened (a login attempt: the e-mail typed).
  actor_email text,
  -- The organisation the event belongs to (organisations are not built yet: null).
  org_id uuid,
  -- `<type>.<verb>`, e.g. model.deploy (checked by the writer).
  action text not null,
  target_type text,
  target_id text,
  outcome text not null check (outcome in ('success', 'denied', 'failed')),
  -- The HTTP status the request was answered with.
  status smallint,
  ip text,
  user_agent text,
  request_id text,
  -- A few typed facts the writer names (a role change's from/to, a throttle rule); never a body.
  detail jsonb,
  -- Hex SHA-256, computed by the writer (not checked here: a regex per insert, on every request).
  prev_hash text not null,
  hash text not null
);
-- Times follow seq (nearly): a block-range index answers from/to for a fraction of a btree's upkeep.
create index idx_audit_events_at on audit_events using brin (at);
create index idx_audit_events_actor on audit_events (actor_id, seq) where actor_id is not null;
create index idx_audit_events_action on audit_events (action text_pattern_ops, seq);
create index idx_audit_events_target on audit_events (target_id, seq) where target_id is not null;
create index idx_audit_events_org on audit_events (org_id, seq) where org_id is not null;

-- The chain's head: one row. seq 0 and 64 zeros before the first event.
create table audit_chain (
  singleton boolean primary key default true check (singleton),
  seq bigint not null check (seq >= 0),
  hash text not null check (hash ~ '^[0-9a-f]{64}$')
);
insert into audit_chain (singleton, seq, hash) values (true, 0, repeat('0', 64));

-- Retention: one row per sweep that removed events. The newest is where verification starts.
create table audit_checkpoints (
  -- The last removed event: its seq, hash and time.
  seq bigint primary key,
  hash text not null check (hash ~ '^[0-9a-f]{64}$'),
  at timestamptz not null,
  removed integer not null check (removed >= 1),
  created_at timestamptz not null default now()
);
