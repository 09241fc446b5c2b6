-- DataKits: uploaded datasets. One row per datakit (the `datakit` actor's state) and one per
-- uploaded version (its file, checksum, profiling outcome and profile). Files live under
-- UPLOAD_DIR/datakits, named by `file_id` (a server-generated UUID), never by the client's name.

create table datakits (
  id uuid primary key,
  owner_id uuid not null references users (id) on delete cascade,
  name text not null,
  description text,
  -- The status of the latest version.
  status text not null check (status in ('PROCESSING', 'READY', 'FAILED')),
  current_version integer not null check (current_version >= 1),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
-- Keyset pagination (created_at, id): per owner for users, over everything for admins.
create index idx_datakits_owner_created on datakits (owner_id, created_at, id);
create index idx_datakits_created on datakits (created_at, id);

create table datakit_versions (
  -- Deferred: a create turn writes its first version through the turn's transaction before
  -- the runtime persists the datakit row (the actor's state) at the end of the same turn.
  datakit_id uuid not null references datakits (id) on delete cascade deferrable initially deferred,
  version integer not null check (version >= 1),
  -- Denormalised from datakits so the per-user storage sum is one indexed aggregate.
  owner_id uuid not null,
  uploaded_by uuid references users (id) on delete set null,
  status text not null check (status in ('PROCESSING', 'READY', 'FAILED')),
  -- Why profiling failed, for the uploader (e.g. the CSV line that broke), and that line.
  error text,
  error_line integer,
  format text not null,
  -- The client's file name, sanitised; metadata only (Content-Disposition on download).
  original_name text not null,
  file_id uuid not null unique,
  size_bytes bigint not null check (size_bytes >= 0),
  sha256 text not null,
  -- The Parquet read copy (UPLOAD_DIR/datakits/<file_id>.parquet), once profiled.
  parquet_bytes bigint,
  row_count bigint,
  column_count integer,
  profile jsonb,
  created_at timestamptz not null default now(),
  profiled_at timestamptz,
  primary key (datakit_id, version)
);
create index idx_datakit_versions_owner on datakit_versions (owner_id);
-- Versions left PROCESSING by a stopped node are resumed at boot.
create index idx_datakit_versions_processing on datakit_versions (datakit_id) where status = 'PROCESSING';

-- Per-user storage quota set by an admin; users without a row get USER_STORAGE_QUOTA_BYTES.
create table user_storage_quotas (
  user_id uuid primary key references users (id) on delete cascade,
  quota_bytes bigint not null check (quota_bytes >= 0),
  updated_at timestamptz not null default now()
);
