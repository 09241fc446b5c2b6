-- Audit events a change commits with, before they join the chain.
--
-- A change made by an actor's turn (starting a workstation, deploying a model, deleting a
-- DataKit) commits in the turn's transaction, not the request's. The request that asked for it
-- hands the turn its event as it stands (action, target, actor, IP, request id) under a key of
-- its own, and the turn inserts it here in its own transaction: the change and its record
-- commit together, and no lock is shared between turns. The request's outcome, recorded once
-- it is answered, joins the chain with that key as its event id. The audit log's sweep
-- (src/store/audit.ts recoverPending) drops rows whose key is in the chain and moves the others
-- — their node died between the commit and the answer — into it, as what committed.
-- Inserted by the actor runtime's turns (through the audit log's own statement in
-- src/store/audit-pending.ts) and emptied only by src/store/audit.ts. No index: rows are written
-- once, on every audited change, and read only by the sweep, in bulk.
create table audit_pending (
  -- The request's: every turn it set off carries the same one; its event's id in the chain.
  key uuid not null,
  -- The event (src/store/audit-chain.ts AuditEvent, time as ISO 8601): what is known when the
  -- change commits, never a secret or a body. json, not jsonb: stored as sent, it costs every
  -- audited change less, and only the sweep ever reads it.
  event json not null,
  created_at timestamptz not null default now()
);
