-- Every state change of a notification job is one function here (docs/state-machine.md).
-- Each refuses a transition that is not allowed by matching on the current status and, for
-- the worker's transitions, on the lease token (fencing), so correctness under concurrency
-- lives in this file only. All run as SECURITY DEFINER with a fixed search_path.

-- The original 8-argument enqueue would sit beside the new 9-argument one as an overload and
-- make the 8-argument call ambiguous: drop it (both spellings of its text arguments).
drop function if exists enqueue_notification_job(uuid, uuid, uuid, varchar, varchar, varchar, jsonb, integer);
drop function if exists enqueue_notification_job(uuid, uuid, uuid, text, text, text, jsonb, integer);

-- True when the caller is an end user: a JWT with any role but service_role (PostgREST), or a
-- session whose current role is (a member of) anon or authenticated. Only the service role and
-- direct connections of other roles (the owner, notifier's own login) are trusted.
create or replace function notifier_caller_is_end_user() returns boolean
language sql stable set search_path = pg_catalog, public as $$
  select case
    when auth.role() = 'service_role' then false
    when auth.role() is not null then true
    when coalesce(current_setting('role', true), 'none') = 'none' then false
    else pg_has_role(current_setting('role'), 'authenticated', 'member')
      or pg_has_role(current_setting('role'), 'anon', 'member')
  end
$$;

-- Largest accepted `content`, in bytes of its JSON text (documented in the README).
create or replace function notification_content_max_bytes() returns integer
language sql immutable set search_path = pg_catalog as $$ select 65536 $$;

-- Extension points later migrations replace (create or replace, same signature), so the state
-- functions below are defined once: whether claiming is paused (operations), and the status a
-- new job starts in (digests hold some jobs as `held`).
create or replace function notifier_claims_paused() returns boolean
language sql stable set search_path = pg_catalog as $$ select false $$;

create or replace function notification_enqueue_status(
  p_recipient_id uuid, p_group_id uuid, p_notification_type varchar, p_urgency_level varchar,
  p_content jsonb
) returns varchar
language sql stable set search_path = pg_catalog as $$ select 'pending'::varchar $$;

create or replace function enqueue_notification_job(
  p_recipient_id uuid,
  p_group_id uuid,
  p_update_id uuid,
  p_notification_type varchar default 'immediate',
  p_urgency_level varchar default 'normal',
  p_delivery_method varchar default 'email',
  p_content jsonb default '{}',
  p_schedule_delay_minutes integer default 0,
  p_idempotency_key text default null
) returns uuid
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_recipient jsonb;
  v_group_owner uuid;
  v_job_id uuid;
begin
  if p_recipient_id is null then
    raise exception 'recipient_id is required' using errcode = '22023';
  end if;
  if p_notification_type is null or p_notification_type not in ('immediate', 'digest', 'milestone') then
    raise exception 'unknown notification_type %: expected immediate, digest or milestone',
      coalesce(quote_literal(p_notification_type), 'NULL') using errcode = '22023';
  end if;
  if p_urgency_level is null or p_urgency_level not in ('normal', 'urgent', 'low') then
    raise exception 'unknown urgency_level %: expected normal, urgent or low',
      coalesce(quote_literal(p_urgency_level), 'NULL') using errcode = '22023';
  end if;
  if p_delivery_method is null or p_delivery_method not in ('email', 'sms', 'whatsapp', 'push') then
    raise exception 'unknown delivery_method %: expected email, sms, whatsapp or push',
      coalesce(quote_literal(p_delivery_method), 'NULL') using errcode = '22023';
  end if;
  if p_schedule_delay_minutes is null or p_schedule_delay_minutes < 0 then
    raise exception 'schedule_delay_minutes must be zero or positive, got %',
      coalesce(p_schedule_delay_minutes::text, 'NULL') using errcode = '22023';
  end if;
  if p_content is null or jsonb_typeof(p_content) <> 'object' then
    raise exception 'content must be a JSON object, got %',
      coalesce(jsonb_typeof(p_content), 'NULL') using errcode = '22023';
  end if;
  if octet_length(p_content::text) > notification_content_max_bytes() then
    raise exception 'content is % bytes, more than the limit of % bytes',
      octet_length(p_content::text), notification_content_max_bytes() using errcode = '22023';
  end if;
  if p_idempotency_key is not null and (length(p_idempotency_key) = 0 or length(p_idempotency_key) > 200) then
    raise exception 'idempotency_key must be 1 to 200 characters' using errcode = '22023';
  end if;

  select to_jsonb(r) into v_recipient from recipients r where r.id = p_recipient_id;
  if v_recipient is null then
    raise exception 'recipient % does not exist', p_recipient_id using errcode = '22023';
  end if;
  if notifier_caller_is_end_user()
     and (auth.uid() is null or (v_recipient ->> 'parent_id')::uuid is distinct from auth.uid()) then
    raise exception 'recipient % does not belong to the calling user', p_recipient_id
      using errcode = '42501';
  end if;
  if not coalesce((v_recipient ->> 'is_active')::boolean, true) then
    raise exception 'recipient % is inactive', p_recipient_id using errcode = '22023';
  end if;
  if p_group_id is not null then
    select g.parent_id into v_group_owner from recipient_groups g where g.id = p_group_id;
    if not found then
      raise exception 'group % does not exist', p_group_id using errcode = '22023';
    end if;
    if v_group_owner is distinct from (v_recipient ->> 'parent_id')::uuid then
      raise exception 'recipient % and group % belong to different owners', p_recipient_id, p_group_id
        using errcode = '22023';
    end if;
  end if;

  insert into notification_jobs (recipient_id, group_id, update_id, notification_type,
    urgency_level, delivery_method, content, scheduled_for, idempotency_key, status)
  values (p_recipient_id, p_group_id, p_update_id, p_notification_type, p_urgency_level,
    p_delivery_method, p_content, now() + make_interval(mins => p_schedule_delay_minutes),
    p_idempotency_key,
    notification_enqueue_status(p_recipient_id, p_group_id, p_notification_type, p_urgency_level,
                                p_content))
  on conflict (recipient_id, idempotency_key) where idempotency_key is not null do nothing
  returning id into v_job_id;

  if v_job_id is null then
    select j.id into v_job_id from notification_jobs j
    where j.recipient_id = p_recipient_id and j.idempotency_key = p_idempotency_key;
  end if;
  return v_job_id;
end
$$;

-- Wake pollers (LISTEN notifier_jobs_due) when a job becomes due now.
create or replace function notification_jobs_notify_due() returns trigger
language plpgsql set search_path = public, pg_temp as $$
begin
  perform pg_notify('notifier_jobs_due', '');
  return null;
end
$$;
drop trigger if exists notification_jobs_notify_due on notification_jobs;
create trigger notification_jobs_notify_due
  after insert or update of status, scheduled_for on notification_jobs
  for each row when (new.status = 'pending' and new.scheduled_for <= now())
  execute function notification_jobs_notify_due();

-- pending → queued: claim a batch with a fresh lease token each. SKIP LOCKED lets any number
-- of pollers claim at once without waiting on or double-claiming each other's rows.
create or replace function claim_notification_jobs(
  p_limit integer, p_lease_seconds integer, p_claimed_by text default null
) returns table (id uuid, lease_token uuid, urgency_level varchar, delivery_method varchar)
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  if p_limit is null or p_limit < 1 or p_lease_seconds is null or p_lease_seconds < 1 then
    raise exception 'claim_notification_jobs needs a positive limit and lease' using errcode = '22023';
  end if;
  if notifier_claims_paused() then
    return;
  end if;
  return query
  with due as (
    select j.id from notification_jobs j
    where j.status = 'pending' and j.scheduled_for <= now()
    order by notification_urgency_rank(j.urgency_level), j.scheduled_for, j.id
    limit p_limit
    for update skip locked
  )
  update notification_jobs j
     set status = 'queued', lease_token = gen_random_uuid(),
         locked_until = now() + make_interval(secs => p_lease_seconds),
         locked_by = p_claimed_by, updated_at = now()
    from due where j.id = due.id
  returning j.id, j.lease_token, j.urgency_level, j.delivery_method;
end
$$;

-- queued → pending for claims the poller could not hand to Redis (Redis down mid-enqueue),
-- so they do not wait for their lease to expire. Only while the token is still current.
create or replace function release_notification_claims(p_claims jsonb) returns integer
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_released integer;
begin
  update notification_jobs j
     set status = 'pending', lease_token = null, locked_until = null, locked_by = null,
         updated_at = now()
    from (select (c ->> 'job_id')::uuid as job_id, (c ->> 'lease_token')::uuid as token
            from jsonb_array_elements(p_claims) c) claims
   where j.id = claims.job_id and j.lease_token = claims.token and j.status = 'queued';
  get diagnostics v_released = row_count;
  return v_released;
end
$$;

-- queued → processing, for each (job id, lease token) whose token is still current; returns
-- what a worker needs to deliver (job, recipient, group, preferences) in one round trip.
-- A stale or duplicate copy of a job gets no row and is therefore never sent.
create or replace function start_notification_attempts(p_claims jsonb, p_lease_seconds integer)
returns table (
  id uuid, lease_token uuid, recipient_id uuid, group_id uuid, update_id uuid,
  notification_type varchar, urgency_level varchar, delivery_method varchar, content jsonb,
  metadata jsonb, retry_count integer, max_retries integer, scheduled_for timestamptz,
  created_at timestamptz, recipient jsonb, group_name text, preferences jsonb
)
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  if p_lease_seconds is null or p_lease_seconds < 1 then
    raise exception 'start_notification_attempts needs a positive lease' using errcode = '22023';
  end if;
  return query
  with claims as (
    select (c ->> 'job_id')::uuid as job_id, (c ->> 'lease_token')::uuid as token
    from jsonb_array_elements(p_claims) c
  ), started as (
    update notification_jobs j
       set status = 'processing', attempt_started_at = now(),
           locked_until = now() + make_interval(secs => p_lease_seconds), updated_at = now()
      from claims
     where j.id = claims.job_id and j.lease_token = claims.token and j.status = 'queued'
    returning j.*
  )
  select s.id, s.lease_token, s.recipient_id, s.group_id, s.update_id, s.notification_type,
         s.urgency_level, s.delivery_method, s.content, s.metadata, coalesce(s.retry_count, 0),
         coalesce(s.max_retries, 3), s.scheduled_for, s.created_at,
         (select jsonb_build_object(
                   'id', r.id, 'name', to_jsonb(r) ->> 'name', 'email', to_jsonb(r) ->> 'email',
                   'phone', to_jsonb(r) ->> 'phone', 'timezone', to_jsonb(r) ->> 'timezone',
                   'preference_token', to_jsonb(r) ->> 'preference_token',
                   'is_active', coalesce((to_jsonb(r) ->> 'is_active')::boolean, true))
            from recipients r where r.id = s.recipient_id),
         (select to_jsonb(g) ->> 'name' from recipient_groups g where g.id = s.group_id),
         (select jsonb_build_object(
                   'is_muted', coalesce(p.is_muted, false), 'muted_until', p.muted_until,
                   'effective_channels', to_jsonb(p.effective_channels),
                   'effective_frequency', p.effective_frequency)
            from notification_preferences_cache p
           where p.recipient_id = s.recipient_id
             and (p.group_id = s.group_id or p.group_id is null)
           order by (p.group_id is null)   -- a group-specific row wins over the recipient default
           limit 1)
    from started s;
end
$$;

-- One attempt's row in the delivery log (called by the outcome functions below only).
create or replace function notifier_log_attempt(
  p_job notification_jobs, p_status varchar, p_provider text, p_provider_message_id text,
  p_provider_response jsonb, p_error_code text, p_error_message text, p_duration_ms integer
) returns void
language sql security definer set search_path = public, pg_temp as $$
  insert into notification_delivery_logs (job_id, recipient_id, group_id, delivery_method, status,
    provider_message_id, provider_response, error_code, error_message, delivery_duration_ms,
    attempt, provider)
  values (p_job.id, p_job.recipient_id, p_job.group_id, p_job.delivery_method, p_status,
    p_provider_message_id, p_provider_response, p_error_code, p_error_message, p_duration_ms,
    coalesce(p_job.retry_count, 0) + 1, p_provider)
$$;

-- processing → sent. The provider accepted the message, so the job is sent even if its lease
-- token changed meanwhile, or the reaper already gave up on it, or it was cancelled after the
-- reaper returned it (sending again would duplicate, and the record must say what happened);
-- returns false in those cases so the worker can log it.
create or replace function complete_notification_job(
  p_job_id uuid, p_lease_token uuid, p_provider text, p_provider_message_id text,
  p_provider_response jsonb default null, p_duration_ms integer default null
) returns boolean
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_job notification_jobs;
  v_token_matched boolean;
begin
  select * into v_job from notification_jobs where id = p_job_id for update;
  if not found then
    return false;
  end if;
  v_token_matched := v_job.lease_token is not distinct from p_lease_token and v_job.status = 'processing';
  perform notifier_log_attempt(v_job, 'delivered', p_provider, p_provider_message_id,
    p_provider_response, null, null, p_duration_ms);
  if v_job.status in ('pending', 'queued', 'processing', 'failed', 'cancelled') then
    update notification_jobs
       set status = 'sent', message_id = p_provider_message_id, processed_at = now(),
           failure_reason = null, lease_token = null, locked_until = null, updated_at = now()
     where id = p_job_id;
  end if;
  return v_token_matched;
end
$$;

-- processing → pending (retry later) or failed (no retries left), after a transient error.
-- Backoff: p_backoff_base_seconds * 2^retry_count, capped, with full jitter in its upper half;
-- a provider's retry-after hint wins when it is longer. Returns the new status.
create or replace function retry_notification_job(
  p_job_id uuid, p_lease_token uuid, p_provider text, p_error_code text, p_error_message text,
  p_provider_response jsonb default null, p_duration_ms integer default null,
  p_retry_after_seconds double precision default null,
  p_backoff_base_seconds double precision default 30,
  p_backoff_cap_seconds double precision default 3600
) returns varchar
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_job notification_jobs;
  v_delay double precision;
begin
  select * into v_job from notification_jobs
   where id = p_job_id and lease_token = p_lease_token and status = 'processing' for update;
  if not found then
    return null;
  end if;
  perform notifier_log_attempt(v_job, 'failed', p_provider, null, p_provider_response,
    p_error_code, p_error_message, p_duration_ms);
  if coalesce(v_job.retry_count, 0) >= coalesce(v_job.max_retries, 3) then
    update notification_jobs
       set status = 'failed', processed_at = now(), lease_token = null, locked_until = null,
           failure_reason = format('gave up after %s attempts: %s',
                                   coalesce(v_job.retry_count, 0) + 1, p_error_message),
           updated_at = now()
     where id = p_job_id;
    return 'failed';
  end if;
  v_delay := least(p_backoff_cap_seconds, p_backoff_base_seconds * power(2, coalesce(v_job.retry_count, 0)));
  v_delay := v_delay * (0.5 + random() / 2);
  v_delay := greatest(v_delay, least(coalesce(p_retry_after_seconds, 0), 86400));
  update notification_jobs
     set status = 'pending', retry_count = coalesce(retry_count, 0) + 1,
         scheduled_for = now() + make_interval(secs => v_delay),
         failure_reason = p_error_message, lease_token = null, locked_until = null,
         updated_at = now()
   where id = p_job_id;
  return 'pending';
end
$$;

-- processing → failed at once, after a permanent error (bad address, 4xx, template error).
-- p_log_status: 'failed', 'bounced' (address rejected) or 'blocked' (recipient opted out).
create or replace function fail_notification_job(
  p_job_id uuid, p_lease_token uuid, p_provider text, p_error_code text, p_error_message text,
  p_provider_response jsonb default null, p_duration_ms integer default null,
  p_log_status varchar default 'failed'
) returns boolean
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_job notification_jobs;
begin
  if p_log_status not in ('failed', 'bounced', 'blocked') then
    raise exception 'fail_notification_job: log status % is not failed, bounced or blocked', p_log_status
      using errcode = '22023';
  end if;
  select * into v_job from notification_jobs
   where id = p_job_id and lease_token = p_lease_token and status = 'processing' for update;
  if not found then
    return false;
  end if;
  perform notifier_log_attempt(v_job, p_log_status, p_provider, null, p_provider_response,
    p_error_code, p_error_message, p_duration_ms);
  update notification_jobs
     set status = 'failed', failure_reason = p_error_message, processed_at = now(),
         lease_token = null, locked_until = null, updated_at = now()
   where id = p_job_id;
  return true;
end
$$;

-- processing → skipped: muted, inactive recipient, or channel not allowed. Logged as 'muted'.
create or replace function skip_notification_job(p_job_id uuid, p_lease_token uuid, p_reason text)
returns boolean
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_job notification_jobs;
begin
  select * into v_job from notification_jobs
   where id = p_job_id and lease_token = p_lease_token and status = 'processing' for update;
  if not found then
    return false;
  end if;
  perform notifier_log_attempt(v_job, 'muted', null, null, null, 'SKIPPED', p_reason, null);
  update notification_jobs
     set status = 'skipped', failure_reason = p_reason, processed_at = now(),
         lease_token = null, locked_until = null, updated_at = now()
   where id = p_job_id;
  return true;
end
$$;

-- processing → pending at p_until without using an attempt: the provider's circuit breaker is
-- open, so no request was made.
create or replace function defer_notification_job(
  p_job_id uuid, p_lease_token uuid, p_until timestamptz, p_reason text
) returns boolean
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  update notification_jobs
     set status = 'pending', scheduled_for = greatest(p_until, now()),
         metadata = coalesce(metadata, '{}'::jsonb) || jsonb_build_object('last_deferral', p_reason),
         lease_token = null, locked_until = null, updated_at = now()
   where id = p_job_id and lease_token = p_lease_token and status = 'processing';
  return found;
end
$$;

-- processing → pending or failed when the worker knows it cannot tell whether the provider got
-- the message (a read timeout or a dropped connection after the request was written, an
-- unexpected error during the call), and, from the reaper, when its lease expired. Logged as
-- 'unknown'; p_unknown_outcome 'retry' redelivers (at least once), 'fail' gives up.
create or replace function record_unknown_notification_outcome(
  p_job_id uuid, p_lease_token uuid, p_provider text, p_error_message text,
  p_unknown_outcome varchar default 'retry'
) returns varchar
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_job notification_jobs;
begin
  if p_unknown_outcome not in ('retry', 'fail') then
    raise exception 'unknown-outcome policy must be retry or fail, got %', p_unknown_outcome
      using errcode = '22023';
  end if;
  select * into v_job from notification_jobs
   where id = p_job_id and lease_token = p_lease_token and status = 'processing' for update;
  if not found then
    return null;
  end if;
  perform notifier_log_attempt(v_job, 'unknown', p_provider, null, null, 'UNKNOWN_OUTCOME',
    p_error_message, null);
  if p_unknown_outcome = 'fail' or coalesce(v_job.retry_count, 0) >= coalesce(v_job.max_retries, 3) then
    update notification_jobs
       set status = 'failed', processed_at = now(), lease_token = null, locked_until = null,
           failure_reason = 'outcome unknown: ' || p_error_message, updated_at = now()
     where id = p_job_id;
    return 'failed';
  end if;
  update notification_jobs
     set status = 'pending', retry_count = coalesce(retry_count, 0) + 1, scheduled_for = now(),
         lease_token = null, locked_until = null, failure_reason = p_error_message,
         updated_at = now(),
         metadata = coalesce(metadata, '{}'::jsonb) || '{"unknown_outcome": true}'::jsonb
   where id = p_job_id;
  return 'pending';
end
$$;

-- The reaper. queued with an expired lease → pending (never started: safe to redo, no attempt
-- used). processing with an expired lease → the outcome is unknown (the worker died during or
-- after the provider call): p_unknown_outcome 'retry' redelivers (at least once, may duplicate),
-- 'fail' marks it failed (at most once, may lose). Either way the delivery log says 'unknown'.
create or replace function release_expired_notification_leases(
  p_unknown_outcome varchar default 'retry', p_limit integer default 1000
) returns table (outcome text, job_count integer)
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_requeued integer;
  v_unknown_retry integer := 0;
  v_unknown_fail integer := 0;
  v_job notification_jobs;
begin
  if p_unknown_outcome not in ('retry', 'fail') then
    raise exception 'unknown-outcome policy must be retry or fail, got %', p_unknown_outcome
      using errcode = '22023';
  end if;
  with expired as (
    select j.id from notification_jobs j
     where j.status = 'queued' and j.locked_until < now()
     limit p_limit for update skip locked
  )
  update notification_jobs j
     set status = 'pending', lease_token = null, locked_until = null, locked_by = null,
         updated_at = now()
    from expired where j.id = expired.id;
  get diagnostics v_requeued = row_count;

  for v_job in
    select * from notification_jobs j
     where j.status = 'processing' and j.locked_until < now()
     limit p_limit for update skip locked
  loop
    if record_unknown_notification_outcome(v_job.id, v_job.lease_token, null,
         'the worker was lost during the attempt; the provider may or may not have sent it',
         p_unknown_outcome) = 'failed' then
      v_unknown_fail := v_unknown_fail + 1;
    else
      v_unknown_retry := v_unknown_retry + 1;
    end if;
  end loop;

  return query values ('requeued', v_requeued), ('unknown_retried', v_unknown_retry),
                      ('unknown_failed', v_unknown_fail);
end
$$;

-- pending/queued/held → cancelled (held: a digest item, 20261124000600_digests.sql). An end
-- user may cancel only jobs of their own recipients; a job already being sent cannot be
-- cancelled. Returns whether the job was cancelled.
create or replace function cancel_notification_job(p_job_id uuid) returns boolean
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  update notification_jobs j
     set status = 'cancelled', lease_token = null, locked_until = null, processed_at = now(),
         updated_at = now()
   where j.id = p_job_id and j.status in ('pending', 'queued', 'held')
     and (not notifier_caller_is_end_user()
          or exists (select 1 from recipients r
                      where r.id = j.recipient_id and r.parent_id = auth.uid()));
  return found;
end
$$;

-- cleanup_notification_data(p_days_to_keep) is defined in 20261124000600_digests.sql, where
-- the last status it has to know about (digested) is introduced.

