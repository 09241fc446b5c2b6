-- What organisations hold. A DataKit, a model (with its runs and versions), a pipeline (with
-- its versions, schedules and runs) or a CodeSheet with an `org_id` is shared in that org; a
-- workstation or VM with one is still personal, but its compute counts against the org's
-- quota. Each column is written by its table's own store, on create or on a move. An org
-- cannot be deleted while it holds anything (`on delete restrict`): nothing is lost by it.

alter table datakits add column org_id uuid references orgs (id) on delete restrict;
alter table models add column org_id uuid references orgs (id) on delete restrict;
alter table pipelines add column org_id uuid references orgs (id) on delete restrict;
alter table codesheets add column org_id uuid references orgs (id) on delete restrict;
alter table workstations add column org_id uuid references orgs (id) on delete restrict;
alter table vms add column org_id uuid references orgs (id) on delete restrict;

create index idx_datakits_org on datakits (org_id, created_at, id) where org_id is not null;
create index idx_models_org on models (org_id, created_at, id) where org_id is not null;
create index idx_pipelines_org on pipelines (org_id, created_at, id) where org_id is not null;
create index idx_codesheets_org on codesheets (org_id, created_at, id) where org_id is not null;
create index idx_workstations_org_active on workstations (org_id) where org_id is not null and status in ('CREATING', 'STARTING', 'RUNNING', 'STOPPING');
create index idx_vms_org_active on vms (org_id) where org_id is not null and status in ('CREATING', 'STARTING', 'RUNNING', 'STOPPING');

-- An org's quotas. The `limit_*` columns are the ceiling a platform admin set (NULL: the
-- configured default, ORG_DEFAULT_*); the others are what the org's admins chose within it
-- (NULL: the ceiling). Written only by src/store/quotas.ts (compute) and the DataKit store's
-- storage accounting reads `storage_bytes`/`limit_storage_bytes` through it.
create table org_quotas (
  org_id uuid primary key references orgs (id) on delete cascade,
  max_running integer check (max_running >= 0),
  max_cpu double precision check (max_cpu >= 0),
  max_memory_mb integer check (max_memory_mb >= 0),
  storage_bytes bigint check (storage_bytes >= 0),
  limit_running integer check (limit_running >= 0),
  limit_cpu double precision check (limit_cpu >= 0),
  limit_memory_mb integer check (limit_memory_mb >= 0),
  limit_storage_bytes bigint check (limit_storage_bytes >= 0),
  updated_by uuid references users (id) on delete set null,
  updated_at timestamptz not null default now()
);
