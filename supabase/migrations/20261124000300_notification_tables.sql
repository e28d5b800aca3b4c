-- The four notification tables. Written to converge from two starting points: an empty
-- database (create table) and a database the original notification worker ran on, with rows
-- (create table if not exists is then a no-op and the alter statements add what notifier needs).
-- Nothing here drops or rewrites user data.

create table if not exists notification_jobs (
  id uuid primary key default gen_random_uuid(),
  recipient_id uuid not null references recipients (id) on delete cascade,
  group_id uuid references recipient_groups (id) on delete cascade,
  update_id uuid references memories (id) on delete cascade,
  scheduled_for timestamptz not null default now(),
  processed_at timestamptz,
  notification_type varchar(20) not null,
  urgency_level varchar(10) not null default 'normal',
  delivery_method varchar(10) not null,
  status varchar(20) not null default 'pending',
  content jsonb not null default '{}',
  metadata jsonb default '{}',
  message_id text,
  failure_reason text,
  retry_count integer default 0,
  max_retries integer default 3,
  created_at timestamptz default now(),
  updated_at timestamptz default now()
);

-- Lease and fencing (docs/state-machine.md): a claim sets lease_token and locked_until; an
-- attempt starts only with the current token; the reaper returns expired leases.
alter table notification_jobs add column if not exists lease_token uuid;
alter table notification_jobs add column if not exists locked_until timestamptz;
alter table notification_jobs add column if not exists locked_by text;
alter table notification_jobs add column if not exists attempt_started_at timestamptz;
alter table notification_jobs add column if not exists idempotency_key text;

-- 'queued' (claimed and handed to Redis) is the one status notifier adds to the original six.
alter table notification_jobs drop constraint if exists notification_jobs_status_check;
alter table notification_jobs add constraint notification_jobs_status_check
  check (status in ('pending', 'queued', 'processing', 'sent', 'failed', 'skipped', 'cancelled'));
alter table notification_jobs drop constraint if exists notification_jobs_notification_type_check;
alter table notification_jobs add constraint notification_jobs_notification_type_check
  check (notification_type in ('immediate', 'digest', 'milestone'));
alter table notification_jobs drop constraint if exists notification_jobs_urgency_level_check;
alter table notification_jobs add constraint notification_jobs_urgency_level_check
  check (urgency_level in ('normal', 'urgent', 'low'));
alter table notification_jobs drop constraint if exists notification_jobs_delivery_method_check;
alter table notification_jobs add constraint notification_jobs_delivery_method_check
  check (delivery_method in ('email', 'sms', 'whatsapp', 'push'));

create table if not exists notification_delivery_logs (
  id uuid primary key default gen_random_uuid(),
  job_id uuid references notification_jobs (id) on delete cascade,
  recipient_id uuid not null references recipients (id) on delete cascade,
  group_id uuid references recipient_groups (id) on delete cascade,
  delivery_method varchar(10) not null,
  status varchar(20) not null,
  provider_message_id text,
  provider_response jsonb,
  delivery_time timestamptz default now(),
  error_code text,
  error_message text,
  delivery_duration_ms integer,
  created_at timestamptz default now()
);
alter table notification_delivery_logs add column if not exists attempt integer;
alter table notification_delivery_logs add column if not exists provider text;
-- 'unknown': the worker was lost between the provider call and recording its outcome.
alter table notification_delivery_logs drop constraint if exists notification_delivery_logs_status_check;
alter table notification_delivery_logs add constraint notification_delivery_logs_status_check
  check (status in ('delivered', 'failed', 'bounced', 'muted', 'blocked', 'unknown'));

create table if not exists digest_schedules (
  id uuid primary key default gen_random_uuid(),
  recipient_id uuid not null references recipients (id) on delete cascade,
  group_id uuid references recipient_groups (id) on delete cascade,
  frequency varchar(10) not null check (frequency in ('daily', 'weekly', 'monthly')),
  delivery_time time not null default '09:00:00',
  delivery_day integer,
  timezone text not null default 'UTC',
  max_updates_per_digest integer default 10,
  include_content_types text[] default array['photo', 'text', 'video', 'milestone'],
  is_active boolean default true,
  last_digest_sent timestamptz,
  next_digest_scheduled timestamptz,
  digest_settings jsonb default '{}',
  created_at timestamptz default now(),
  updated_at timestamptz default now(),
  unique (recipient_id, group_id, frequency)
);

create table if not exists notification_preferences_cache (
  id uuid primary key default gen_random_uuid(),
  recipient_id uuid not null references recipients (id) on delete cascade,
  group_id uuid references recipient_groups (id) on delete cascade,
  effective_frequency varchar(20) default 'immediate',
  effective_channels text[] default array['email'],
  effective_content_types text[] default array['photo', 'text', 'video', 'milestone'],
  source varchar(20) default 'default',
  is_muted boolean default false,
  muted_until timestamptz,
  cache_expires_at timestamptz default (now() + interval '1 hour'),
  created_at timestamptz default now(),
  updated_at timestamptz default now(),
  unique (recipient_id, group_id)
);

-- Migrations applied by `notifier migrate` (supabase db push keeps its own record).
create table if not exists notifier_schema_migrations (
  version text primary key,
  name text not null,
  checksum text not null,
  applied_at timestamptz not null default now()
);

-- Urgency as a sortable rank; immutable so an index can be built on it.
create or replace function notification_urgency_rank(p_urgency varchar) returns smallint
language sql immutable parallel safe set search_path = pg_catalog as $$
  select case p_urgency when 'urgent' then 0 when 'normal' then 1 else 2 end::smallint
$$;

-- The claim: due pending jobs, most urgent first, oldest first (claim_notification_jobs).
create index if not exists notification_jobs_due_idx on notification_jobs
  (notification_urgency_rank(urgency_level), scheduled_for, id) where status = 'pending';
-- The reaper: leases that may have expired (release_expired_notification_leases).
create index if not exists notification_jobs_lease_idx on notification_jobs (locked_until)
  where status in ('queued', 'processing');
-- Owner checks in RLS and enqueue, and the foreign key's cascade.
create index if not exists notification_jobs_recipient_idx on notification_jobs (recipient_id);
-- Idempotent enqueue: one job per recipient and caller-chosen key.
create unique index if not exists notification_jobs_idempotency_idx on notification_jobs
  (recipient_id, idempotency_key) where idempotency_key is not null;
-- Health and retry: failed jobs by recency.
create index if not exists notification_jobs_failed_idx on notification_jobs (updated_at)
  where status = 'failed';
-- A job's attempts, and the cascade from jobs.
create index if not exists notification_delivery_logs_job_idx on notification_delivery_logs (job_id);
-- Owner reads of logs through RLS.
create index if not exists notification_delivery_logs_recipient_idx
  on notification_delivery_logs (recipient_id);
-- Success rate and metrics over the last 24 hours.
create index if not exists notification_delivery_logs_time_idx
  on notification_delivery_logs (delivery_time);
