-- One writer per table: a model's row belongs to its `model` actor, its runs and versions to
-- the `model-run` actors. The counters the run actors kept on `models` (active runs, the last
-- run's outcome, the latest version) and the status generated from them are dropped: they
-- are read from model_runs and model_versions when a model is read (src/store/models.ts), so
-- nothing outside the model's own actor writes its row, and nothing can leave them stale.
drop index if exists idx_models_status;
alter table models drop column status;
alter table models drop column active_runs;
alter table models drop column last_run_status;
alter table models drop column latest_version;

-- What a model's status is read from: its active runs, and its runs in the order they ended.
create index idx_model_runs_model_status on model_runs (model_id, status, finished_at);
