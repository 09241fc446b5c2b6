-- Models, their training runs (MLflow-style params, tags and metric history), the versions
-- successful runs register, aliases, and which version is deployed for serving.

create table models (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references users (id) on delete cascade,
  name text not null,
  description text,
  type text not null check (type in ('CLASSIFICATION', 'REGRESSION')),
  framework text not null check (framework in ('TENSORFLOW', 'PYTORCH', 'SKLEARN', 'XGBOOST', 'CUSTOM')),
  -- The workstation the model belongs to, if any. No foreign key: a model (and its served
  -- versions) outlives the workstation it was developed on.
  workstation_id uuid,
  -- Runs in QUEUED or RUNNING, and the outcome of the last run to end: kept by the model-run
  -- actor in its turns, so `status` below is always consistent with the runs.
  active_runs integer not null default 0 check (active_runs >= 0),
  last_run_status text check (last_run_status in ('SUCCEEDED', 'FAILED', 'CANCELLED')),
  latest_version integer not null default 0,
  deployed_version integer,
  deployed_alias text,
  deployed_at timestamptz,
  -- Derived, never written: no code path can forget to update it.
  status text generated always as (
    case
      when deployed_version is not null then 'DEPLOYED'
      when active_runs > 0 then 'TRAINING'
      when latest_version > 0 then 'TRAINED'
      when last_run_status = 'FAILED' then 'FAILED'
      else 'DRAFT'
    end
  ) stored,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
-- Registered model names are unique per owner, as in MLflow's registry.
create unique index idx_models_user_name on models (user_id, lower(name));
create index idx_models_user_created on models (user_id, created_at, id);
create index idx_models_status on models (user_id, status, created_at, id);

-- One row per training run; the row is the model-run actor's state.
create table model_runs (
  id uuid primary key,
  model_id uuid not null references models (id) on delete cascade,
  user_id uuid not null references users (id) on delete cascade,
  run_kind text not null check (run_kind in ('BUILTIN', 'CONTAINER')),
  status text not null check (status in ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
  -- The train request as accepted (datakit, target, features, algorithm, params, image, command…).
  spec jsonb not null,
  datakit_id uuid,
  datakit_version integer,
  timeout_seconds integer not null check (timeout_seconds > 0),
  error text,
  version integer,
  -- How many times the run was started again after its node went away.
  attempts integer not null default 0,
  created_at timestamptz not null default now(),
  started_at timestamptz,
  finished_at timestamptz,
  updated_at timestamptz not null default now()
);
create index idx_model_runs_model on model_runs (model_id, created_at, id);
create index idx_model_runs_active on model_runs (user_id) where status in ('QUEUED', 'RUNNING');

-- MLflow's params and tags: one value per key and run.
create table model_run_params (
  run_id uuid not null references model_runs (id) on delete cascade,
  key text not null,
  value text not null,
  primary key (run_id, key)
);
create table model_run_tags (
  run_id uuid not null references model_runs (id) on delete cascade,
  key text not null,
  value text not null,
  primary key (run_id, key)
);

-- Metric history: every (key, value, step, timestamp) a run logged.
create table model_run_metrics (
  seq bigint generated always as identity primary key,
  run_id uuid not null references model_runs (id) on delete cascade,
  key text not null,
  value double precision not null,
  step bigint not null default 0,
  at timestamptz not null
);
create index idx_model_run_metrics_run on model_run_metrics (run_id, key, step);

-- The latest value per key (highest step, then latest time), as MLflow keeps it: what run
-- filters (`metrics.val_accuracy > 0.9`) and orderings read.
create table model_run_latest_metrics (
  run_id uuid not null references model_runs (id) on delete cascade,
  key text not null,
  value double precision not null,
  step bigint not null,
  at timestamptz not null,
  primary key (run_id, key)
);

-- Version N of a model: registered by its N-th successful run, with the artifact on disk
-- (a directory under MODEL_DIR, path stored relative to it).
create table model_versions (
  model_id uuid not null references models (id) on delete cascade,
  version integer not null check (version > 0),
  run_id uuid references model_runs (id) on delete set null,
  artifact_path text not null,
  -- 'quadrax.tabular' (servable by the built-in predictor) or 'files' (a container's output).
  artifact_format text not null check (artifact_format in ('quadrax.tabular', 'files')),
  input_schema jsonb,
  metrics jsonb not null default '{}',
  files jsonb not null default '[]',
  bytes bigint not null default 0,
  created_at timestamptz not null default now(),
  primary key (model_id, version)
);

-- MLflow-style aliases (`production`, `champion`…) pointing at one version each.
create table model_aliases (
  model_id uuid not null,
  alias text not null,
  version integer not null,
  updated_at timestamptz not null default now(),
  primary key (model_id, alias),
  foreign key (model_id, version) references model_versions (model_id, version) on delete cascade
);

alter table models add constraint models_deployed_version_fk
  foreign key (id, deployed_version) references model_versions (model_id, version);
