-- Operations: pause and resume claiming, retry failed jobs in bulk, and an index for the
-- "finished in the last 24 h" figures of `notifier status`, /health and /metrics.
-- Applies on an empty database and over the original schema with rows: it creates one table
-- (one row), adds one index, adds functions and replaces the pause extension point that
-- claim_notification_jobs calls. Nothing here drops or rewrites user data.

-- One row: whether pollers may claim. Kept in Postgres so a pause survives every restart and
-- holds for every poller at once. Read only by notifier's functions and the service role.
create table if not exists notifier_control (
  id boolean primary key default true check (id),   -- at most one row
  paused boolean not null default false,
  paused_at timestamptz,
  paused_by text,
  reason text,
  updated_at timestamptz not null default now()
);
insert into notifier_control (id) values (true) on conflict (id) do nothing;

alter table notifier_control enable row level security;
revoke all on notifier_control from public, anon, authenticated;
grant select, insert, update on notifier_control to service_role;

-- Jobs that finished (sent, failed, skipped, cancelled) in a time window: status, health and
-- metrics count them over the last 24 h instead of scanning the whole table.
create index if not exists notification_jobs_processed_idx on notification_jobs (processed_at)
  where processed_at is not null;

-- Pause (true) or resume (false) claiming; returns the control row as it now is. Resuming
-- wakes the pollers (NOTIFY notifier_jobs_due) so the backlog moves at once.
-- The row lock taken here conflicts with the FOR SHARE lock each claim takes on the same row,
-- so once a pause has committed no claim that started before it is still running, and every
-- later claim sees it: after `notifier pause` returns, what is queued or processing is all
-- that remains in flight.
create or replace function set_notifier_paused(
  p_paused boolean, p_by text default null, p_reason text default null
) returns table (paused boolean, paused_at timestamptz, paused_by text, reason text, updated_at timestamptz)
language plpgsql security definer set search_path = public, pg_temp as $$
#variable_conflict use_column
begin
  if p_paused is null then
    raise exception 'set_notifier_paused needs true (pause) or false (resume)' using errcode = '22023';
  end if;
  insert into notifier_control as c (id, paused, paused_at, paused_by, reason, updated_at)
  values (true, p_paused, case when p_paused then now() end, case when p_paused then p_by end,
          case when p_paused then p_reason end, now())
  on conflict (id) do update
     set paused = excluded.paused,
         -- pausing twice keeps the first pause's time; resuming clears who and why
         paused_at = case when excluded.paused then coalesce(case when c.paused then c.paused_at end, now()) end,
         paused_by = case when excluded.paused then coalesce(excluded.paused_by, c.paused_by) end,
         reason = case when excluded.paused then coalesce(excluded.reason, c.reason) end,
         updated_at = now();
  if not p_paused then
    perform pg_notify('notifier_jobs_due', '');  -- wake listening pollers now, not at their next poll
  end if;
  return query select c.paused, c.paused_at, c.paused_by, c.reason, c.updated_at
                 from notifier_control c where c.id;
end
$$;

-- True while claiming is paused: replaces the extension point of 20261124000400, which
-- claim_notification_jobs calls. FOR SHARE: see set_notifier_paused.
create or replace function notifier_claims_paused() returns boolean
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_paused boolean;
begin
  select c.paused into v_paused from notifier_control c where c.id for share;
  return coalesce(v_paused, false);
end
$$;


-- failed → pending, due now, with a fresh attempt budget (retry_count 0), for the operator's
-- `notifier retry --failed`. Filters: failed at or after p_since (processed_at), and a
-- failure_reason matching the ILIKE pattern p_reason_like. Jobs whose outcome was unknown
-- (failure_reason 'outcome unknown: ...', NOTIFIER_UNKNOWN_OUTCOME=fail: the provider may have
-- delivered them) are left alone unless p_include_unknown, since a resend may duplicate. The
-- previous failure is kept in metadata.manual_retry. p_dry_run counts without changing
-- anything. Returns the count.
create or replace function retry_failed_notification_jobs(
  p_since timestamptz default null, p_reason_like text default null, p_dry_run boolean default false,
  p_include_unknown boolean default false
) returns integer
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_count integer;
begin
  if coalesce(p_dry_run, false) then
    select count(*) into v_count from notification_jobs j
     where j.status = 'failed'
       and (p_since is null or coalesce(j.processed_at, j.updated_at) >= p_since)
       and (p_reason_like is null or j.failure_reason ilike p_reason_like)
       and (coalesce(p_include_unknown, false)
            or coalesce(j.failure_reason, '') not like 'outcome unknown%');
    return v_count;
  end if;
  update notification_jobs j
     set status = 'pending', retry_count = 0, scheduled_for = now(), processed_at = null,
         lease_token = null, locked_until = null, locked_by = null, attempt_started_at = null,
         metadata = coalesce(j.metadata, '{}'::jsonb) || jsonb_build_object('manual_retry',
           jsonb_build_object('at', now(), 'previous_failure_reason', j.failure_reason,
                              'previous_retry_count', j.retry_count)),
         failure_reason = null, updated_at = now()
   where j.status = 'failed'
     and (p_since is null or coalesce(j.processed_at, j.updated_at) >= p_since)
     and (p_reason_like is null or j.failure_reason ilike p_reason_like)
     and (coalesce(p_include_unknown, false)
          or coalesce(j.failure_reason, '') not like 'outcome unknown%');
  get diagnostics v_count = row_count;
  return v_count;
end
$$;

-- Functions: the service role only.
call notifier_restrict_to_service_role(
  'set_notifier_paused', 'notifier_claims_paused', 'retry_failed_notification_jobs');
