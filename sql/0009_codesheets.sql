-- CodeSheets: notebooks whose code cells run on a kernel inside a workstation's container.
-- Every row here is written by the sheet's `codesheet` actor (src/actors/codesheets/): the
-- document (the sheet, its cells), its executions (a queue run one at a time) and the cells'
-- outputs, each persisted as it arrives. A sheet belongs to its workstation's owner and goes
-- with the workstation.

create table codesheets (
  id uuid primary key,
  owner_id uuid not null references users (id) on delete cascade,
  workstation_id uuid not null references workstations (id) on delete cascade,
  name text not null,
  kernel text not null check (kernel in ('python3', 'shell')),
  -- Bumped by every edit of the document (name, kernel, metadata, cells added, edited, moved or
  -- deleted); executions and their outputs do not bump it. Writes name the version they edit.
  version integer not null default 1 check (version >= 1),
  -- The notebook's own metadata (kernelspec, language_info, …), kept for export as imported.
  metadata json not null default '{}',
  -- As the node hosting the sheet's actor last saw its kernel; `kernel_node` is that node.
  kernel_state text not null default 'none' check (kernel_state in ('none', 'starting', 'idle', 'busy', 'dead')),
  kernel_node text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index idx_codesheets_owner on codesheets (owner_id, created_at, id);
create index idx_codesheets_workstation on codesheets (workstation_id, created_at, id);
-- Sheets whose kernel a node may have left behind (looked at when a node starts).
create index idx_codesheets_kernel on codesheets (id) where kernel_state <> 'none';

create table codesheet_cells (
  sheet_id uuid not null references codesheets (id) on delete cascade,
  -- nbformat 4.5 cell ids: 1–64 of [A-Za-z0-9_-], unique within the sheet (kept through import/export).
  id text not null check (id ~ '^[A-Za-z0-9_-]{1,64}$'),
  -- 0, 1, 2, … in the sheet's order; shifted when cells are added, moved or deleted.
  position integer not null check (position >= 0),
  type text not null check (type in ('code', 'markdown', 'raw')),
  source text not null,
  metadata json not null default '{}',
  -- nbformat `attachments` of markdown and raw cells (null: none).
  attachments json,
  execution_count integer,
  primary key (sheet_id, id),
  unique (sheet_id, position) deferrable initially deferred
);

-- One run of one code cell. Queued in `n` order and run one at a time per sheet.
create table codesheet_executions (
  id uuid primary key,
  n bigint generated always as identity,
  sheet_id uuid not null references codesheets (id) on delete cascade,
  cell_id text not null,
  status text not null check (status in ('queued', 'running', 'ok', 'error', 'interrupted', 'timed_out', 'cancelled', 'failed')),
  -- The cell's source when the run was asked for (what runs, as in Jupyter); dropped once it ended.
  code text,
  timeout_seconds integer check (timeout_seconds > 0),
  execution_count integer,
  error text,
  requested_by uuid,
  queued_at timestamptz not null default now(),
  started_at timestamptz,
  ended_at timestamptz
);
create index idx_codesheet_executions_sheet on codesheet_executions (sheet_id, n);
create index idx_codesheet_executions_cell on codesheet_executions (sheet_id, cell_id, n);
create index idx_codesheet_executions_active on codesheet_executions (sheet_id, n) where status in ('queued', 'running');

-- A cell's outputs, one nbformat 4 output object per row, numbered from 0 as they arrive. Each
-- new output is an insert; a stream output that goes on (more text of the same stream) updates
-- its own small row (at most a few KiB, src/actors/codesheets/outputs.ts), so appending never
-- rewrites the cell's other outputs. `json`, not jsonb: stored as it came, parsed only on read.
create table codesheet_outputs (
  sheet_id uuid not null,
  cell_id text not null,
  seq integer not null check (seq >= 0),
  output json not null,
  -- UTF-8 bytes of the output's JSON (the cell's are capped by CODESHEET_MAX_OUTPUT_BYTES).
  bytes integer not null check (bytes >= 0),
  execution_id uuid,
  primary key (sheet_id, cell_id, seq),
  foreign key (sheet_id, cell_id) references codesheet_cells (sheet_id, id) on delete cascade
);
