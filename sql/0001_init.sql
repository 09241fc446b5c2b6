-- Users and their login sessions.

create table users (
  id uuid primary key default gen_random_uuid(),
  email text not null,
  first_name text not null,
  last_name text not null,
  organization text,
  role text not null default 'USER' check (role in ('ADMIN', 'USER', 'VIEWER')),
  password_hash text not null,
  is_active boolean not null default true,
  failed_logins integer not null default 0,
  first_failed_login_at timestamptz,
  locked_until timestamptz,
  password_changed_at timestamptz not null default now(),
  last_login_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
-- Emails are stored lower-cased; the guide's index doubles as the uniqueness rule.
create unique index idx_users_email on users (email);
create index idx_users_created on users (created_at, id);

-- One row per login. The refresh token is single-use: each refresh replaces refresh_hash
-- and bumps refresh_generation; presenting an older generation revokes the whole session.
create table sessions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references users (id) on delete cascade,
  refresh_hash text not null,
  refresh_generation integer not null default 0,
  user_agent text,
  ip text,
  created_at timestamptz not null default now(),
  last_refreshed_at timestamptz,
  expires_at timestamptz not null,
  revoked_at timestamptz,
  revoked_reason text
);
create index idx_sessions_user on sessions (user_id) where revoked_at is null;
