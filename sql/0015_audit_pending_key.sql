-- Pending audit events are deleted by key in the statement that chains their request's outcome
-- (src/store/audit-rows.ts), a few milliseconds after they were inserted, so the table holds
-- little more than the events of requests in flight. Before, they stayed until the sweep found
-- their key in the chain a minute later: the sweep then joined a minute of pending events with
-- the last eleven minutes of the chain every half minute (0.2–0.3 s of a core at 250 audited
-- writes a second, bench:soak). An index on a table this small costs an insert little.
create index idx_audit_pending_key on audit_pending (key);
