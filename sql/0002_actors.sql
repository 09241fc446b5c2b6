-- Actor runtime (src/actors/runtime): shard epochs for fencing, the inbox that makes a
-- redelivered message apply once, the outbox with a per-topic sequence, durable reminders,
-- and a generic state table for kinds that do not keep their state in tables of their own.

-- One row per shard. Every change of owner bumps `epoch`; every turn's transaction checks,
-- under a share lock, that the epoch is still the one its node claimed (actor_fence below).
create table actor_shards (
  shard integer primary key,
  epoch bigint not null default 0,
  owner text,
  claimed_at timestamptz
);

-- One row per applied message. The primary key is what recognises a redelivery; the reply is
-- kept so the redelivered ask gets the same answer. Rows older than the retention are pruned.
-- The message id leads the key: the runtime's own ids are time-ordered (UUIDv7), so nearly
-- every insert lands on the rightmost leaf instead of splitting pages all over the index.
create table actor_inbox (
  kind text not null,
  actor_id text not null,
  message_id text not null,
  reply jsonb,
  at timestamptz not null default now(),
  primary key (message_id, kind, actor_id)
);
-- Rows arrive in time order, so a BRIN index serves the pruning for almost no write cost.
create index idx_actor_inbox_at on actor_inbox using brin (at);

-- The last sequence number handed out per topic. Bumping it takes the row lock, so two
-- transactions writing the same topic get consecutive, gap-free numbers in commit order.
create table actor_outbox_topics (
  topic text primary key,
  seq bigint not null
);

-- Committed events, readable by (topic, seq): WebSocket subscribers resume from here.
create table actor_outbox (
  topic text not null,
  seq bigint not null,
  type text not null,
  data jsonb not null,
  at timestamptz not null default now(),
  primary key (topic, seq)
);
create index idx_actor_outbox_at on actor_outbox using brin (at);

-- Durable reminders. `shard` lets each node poll only the shards it owns.
create table actor_reminders (
  id uuid primary key,
  shard integer not null,
  kind text not null,
  actor_id text not null,
  due_at timestamptz not null,
  message jsonb not null,
  created_at timestamptz not null default now()
);
create index idx_actor_reminders_due on actor_reminders (shard, due_at);

-- State of kinds that define no load/persist of their own.
create table actor_state (
  kind text not null,
  actor_id text not null,
  state jsonb not null,
  updated_at timestamptz not null default now(),
  primary key (kind, actor_id)
);

-- The fencing check, first statement of every turn transaction. A turn holds a shared advisory
-- lock on its shards until it commits; a new owner takes the same locks exclusively before it
-- bumps the epochs (actor-shards.ts). So either the bump waits until the turn commits (and the
-- new owner then loads what it wrote), or the turn waits for the bump and then reads the new
-- epoch and fails here: a node that lost a shard can never commit for it. Advisory locks live in
-- shared memory only, so unlike a row lock this writes no WAL and makes no multixact when
-- several transactions check the same shard at once. Locks are taken in shard order, as the
-- claim takes them, so the two cannot deadlock.
create function actor_fence(p_shards integer[], p_epochs bigint[]) returns void
language plpgsql as $$
begin
  -- The caller passes (shard, epoch) pairs sorted by shard. Each check runs after its lock is
  -- granted, and in READ COMMITTED each statement of a function takes a fresh snapshot, so it
  -- sees a bump committed while the lock was awaited.
  for i in 1 .. coalesce(array_length(p_shards, 1), 0) loop
    perform pg_advisory_xact_lock_shared(1363231572, p_shards[i]);
    if not exists (select 1 from actor_shards where shard = p_shards[i] and epoch = p_epochs[i]) then
      raise exception 'shard % has a newer owner: this node may not write its actors', p_shards[i]
        using errcode = 'QXF01';
    end if;
  end loop;
end $$;
