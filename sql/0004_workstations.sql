-- Workstations and VMs: each row is owned by one actor (kind `workstation` or `vm`) and backed
-- by at most one container on the engine, named after the row's id. Per-user compute quota
-- overrides (NULL = the configured default).

create table workstations (
  id uuid primary key,
  owner_id uuid not null references users (id) on delete cascade,
  name text not null,
  description text not null,
  function text not null check (function in ('DEVELOPMENT', 'TRAINING', 'PROCESSING')),
  nature text[] not null default '{}',
  cpu double precision not null check (cpu > 0),
  memory_mb integer not null check (memory_mb > 0),
  storage_mb integer not null default 0 check (storage_mb >= 0),
  gpu boolean not null default false,
  image text not null,
  status text not null check (status in ('CREATING', 'STOPPED', 'STARTING', 'RUNNING', 'STOPPING', 'ERROR')),
  status_reason text,
  container_id text,
  -- Bumped on every start: idle-check reminders carry it, so one from an earlier run is ignored.
  generation integer not null default 0,
  -- A transition in progress and what follows it (restart, resize, why a stop happened).
  lifecycle jsonb not null default '{}',
  last_activity_at timestamptz,
  started_at timestamptz,
  stopped_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index idx_workstations_user_id on workstations (owner_id, created_at, id);
-- Quota sums and boot-time reconciliation read only the rows that hold a container's resources.
create index idx_workstations_active on workstations (owner_id) where status in ('CREATING', 'STARTING', 'RUNNING', 'STOPPING');

create table vms (
  id uuid primary key,
  owner_id uuid not null references users (id) on delete cascade,
  name text not null,
  description text not null default '',
  image text not null,
  runtime text not null,
  cpu double precision not null check (cpu > 0),
  memory_mb integer not null check (memory_mb > 0),
  disk_mb integer not null default 0 check (disk_mb >= 0),
  gpu boolean not null default false,
  status text not null check (status in ('CREATING', 'STOPPED', 'STARTING', 'RUNNING', 'STOPPING', 'ERROR')),
  status_reason text,
  container_id text,
  generation integer not null default 0,
  lifecycle jsonb not null default '{}',
  last_activity_at timestamptz,
  started_at timestamptz,
  stopped_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index idx_vms_user_id on vms (owner_id, created_at, id);
create index idx_vms_active on vms (owner_id) where status in ('CREATING', 'STARTING', 'RUNNING', 'STOPPING');

-- An admin's override of a user's compute quota; a NULL column falls back to the default.
create table user_quotas (
  user_id uuid primary key references users (id) on delete cascade,
  max_running integer check (max_running >= 0),
  max_cpu double precision check (max_cpu >= 0),
  max_memory_mb integer check (max_memory_mb >= 0),
  updated_by uuid references users (id) on delete set null,
  updated_at timestamptz not null default now()
);
