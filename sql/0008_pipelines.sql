-- Pipelines: versioned DAG definitions, their runs and steps (each run an actor of kind
-- `pipeline-run`), the steps' logs, and cron schedules. A pipeline's rows (the pipeline, its
-- versions, its schedules) are written by its `pipeline` actor; a run's rows (the run, its
-- steps, their logs) by its `pipeline-run` actor.

create table pipelines (
  id uuid primary key,
  user_id uuid not null references users (id) on delete cascade,
  name text not null,
  description text,
  -- The current version; its definition is also in pipeline_versions.
  version integer not null default 1 check (version >= 1),
  definition jsonb not null,
  -- Runs admitted (RUNNING, or told to start): at most definition.maxActiveRuns. Kept by the
  -- pipeline actor in its turns, so admission survives restarts.
  active_runs uuid[] not null default '{}',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create unique index idx_pipelines_user_name on pipelines (user_id, lower(name));
create index idx_pipelines_user_created on pipelines (user_id, created_at, id);

create table pipeline_versions (
  pipeline_id uuid not null references pipelines (id) on delete cascade,
  version integer not null check (version >= 1),
  definition jsonb not null,
  created_at timestamptz not null default now(),
  primary key (pipeline_id, version)
);

create table pipeline_schedules (
  id uuid primary key,
  pipeline_id uuid not null references pipelines (id) on delete cascade,
  user_id uuid not null references users (id) on delete cascade,
  cron text not null,
  timezone text not null default 'UTC',
  params jsonb not null default '{}',
  enabled boolean not null default true,
  overlap text not null default 'skip' check (overlap in ('skip', 'allow')),
  catchup text not null default 'none' check (catchup in ('none', 'latest')),
  -- The slot the pending reminder fires for (null: disabled).
  next_run_at timestamptz,
  last_fired_at timestamptz,
  last_run_id uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index idx_pipeline_schedules_pipeline on pipeline_schedules (pipeline_id, created_at, id);

create table pipeline_runs (
  id uuid primary key,
  pipeline_id uuid not null references pipelines (id) on delete cascade,
  user_id uuid not null references users (id) on delete cascade,
  version integer not null,
  status text not null check (status in ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMED_OUT')),
  params jsonb not null default '{}',
  use_cache boolean not null default true,
  schedule_id uuid,
  -- 1, and N+1 with each retry of the run (failed, cancelled and skipped steps run again).
  attempt integer not null default 1 check (attempt >= 1),
  error text,
  created_at timestamptz not null default now(),
  started_at timestamptz,
  ended_at timestamptz
);
create index idx_pipeline_runs_pipeline on pipeline_runs (pipeline_id, created_at, id);
create index idx_pipeline_runs_active on pipeline_runs (pipeline_id, created_at) where status in ('QUEUED', 'RUNNING');
create index idx_pipeline_runs_schedule on pipeline_runs (schedule_id, created_at) where schedule_id is not null;

create table pipeline_run_steps (
  run_id uuid not null references pipeline_runs (id) on delete cascade,
  step_id text not null,
  -- Position in the definition (steps are listed in it order).
  position integer not null,
  user_id uuid not null,
  kind text not null,
  status text not null check (status in ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'SKIPPED', 'CANCELLED', 'UPSTREAM_FAILED')),
  attempts integer not null default 0,
  cached boolean not null default false,
  -- sha256 of the step's kind, resolved `with` and input fingerprints (set when it ran or hit).
  cache_key text,
  outputs jsonb,
  error text,
  -- What the step's current attempt runs: a model run's id, a container job's id.
  external_id uuid,
  -- Compute a container step holds while RUNNING (counted by the compute quota, store/quotas.ts).
  cpu double precision,
  memory_mb integer,
  started_at timestamptz,
  ended_at timestamptz,
  primary key (run_id, step_id)
);
create index idx_pipeline_steps_cache on pipeline_run_steps (user_id, cache_key) where status = 'SUCCEEDED' and cache_key is not null;
create index idx_pipeline_steps_external on pipeline_run_steps (external_id) where external_id is not null;
create index idx_pipeline_steps_compute on pipeline_run_steps (user_id) where status = 'RUNNING' and cpu is not null;

create table pipeline_step_logs (
  run_id uuid not null references pipeline_runs (id) on delete cascade,
  step_id text not null,
  seq bigint not null,
  stream text not null check (stream in ('stdout', 'stderr')),
  line text not null,
  at timestamptz not null default now(),
  primary key (run_id, step_id, seq)
);
