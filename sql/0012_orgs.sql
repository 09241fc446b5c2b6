-- Organisations: teams that share DataKits, models (with their runs and versions), pipelines
-- and CodeSheets. Written only by src/store/orgs.ts (orgs, members, invitations, quotas); the
-- shared objects carry an `org_id` (NULL: personal), set by their own store on create or move.
--
-- Roles, highest first: OWNER > ADMIN > MEMBER > VIEWER (src/auth/policy.ts says what each
-- may do). An org always keeps at least one OWNER; nobody grants a role above their own.

create table orgs (
  id uuid primary key,
  name text not null check (length(name) between 1 and 100),
  -- URL-safe and unique: lower-case letters, digits and inner hyphens.
  slug text not null unique check (slug ~ '^[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?$'),
  created_by uuid references users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table org_members (
  org_id uuid not null references orgs (id) on delete cascade,
  user_id uuid not null references users (id) on delete cascade,
  role text not null check (role in ('OWNER', 'ADMIN', 'MEMBER', 'VIEWER')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (org_id, user_id)
);
-- "My orgs", and the policy's lookup of one caller's role (the primary key serves it too).
create index idx_org_members_user on org_members (user_id, org_id);

-- An invitation: a single-use link token (only its SHA-256 is kept) for one e-mail address.
create table org_invitations (
  id uuid primary key,
  org_id uuid not null references orgs (id) on delete cascade,
  -- Lower-cased; accepted only by the signed-in user with this e-mail.
  email text not null,
  role text not null check (role in ('OWNER', 'ADMIN', 'MEMBER', 'VIEWER')),
  token_hash bytea not null unique,
  invited_by uuid references users (id) on delete set null,
  expires_at timestamptz not null,
  accepted_at timestamptz,
  accepted_by uuid references users (id) on delete set null,
  revoked_at timestamptz,
  created_at timestamptz not null default now()
);
create index idx_org_invitations_org on org_invitations (org_id, created_at, id);
-- At most one pending invitation per address and org (a new one replaces the old).
create unique index idx_org_invitations_pending on org_invitations (org_id, email) where accepted_at is null and revoked_at is null;
