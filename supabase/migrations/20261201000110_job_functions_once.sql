-- The job state functions of 20261124000400_job_functions.sql, redefined (same signatures,
-- same grants: create or replace keeps them) on the columns of 20261201000100_job_state_columns:
-- * a worker's transition finds its job through notifier_lock_leased_job, defined once here;
-- * none clears a lease itself: notification_jobs_clear_lease does, whenever the status leaves
--   queued/processing;
-- * retry_count and max_retries are NOT NULL, so they are read as they are;
-- * an unknown outcome is outcome_unknown_at, set by record_unknown_notification_outcome and
--   cleared by the next attempt with a known outcome (see that column's comment).
-- Behaviour is otherwise unchanged. enqueue_notification_job and cleanup_notification_data are
-- not redefined here.

-- The job that a worker's lease token holds, locked FOR UPDATE for the transition that follows,
-- or null (every field null: test `.id is null`) when the token is no longer current or the job
-- is no longer processing: a stale or duplicate copy of the job, re-claimed after its lease
-- expired, or already finished. Every caller then changes nothing. Internal: only the state
-- functions call it, as their owner, so it runs with its caller's rights (no SECURITY DEFINER)
-- and no client may execute it.
create or replace function notifier_lock_leased_job(p_job_id uuid, p_lease_token uuid)
returns notification_jobs
language sql volatile set search_path = public, pg_temp as $$
  select j.* from notification_jobs j
   where j.id = p_job_id and j.lease_token = p_lease_token and j.status = 'processing'
   for update
$$;

-- queued → pending for claims the poller could not hand to Redis (Redis down mid-enqueue),
-- so they do not wait for their lease to expire. Only while the token is still current.
create or replace function release_notification_claims(p_claims jsonb) returns integer
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_released integer;
begin
  update notification_jobs j
     set status = 'pending', updated_at = now()
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
         s.urgency_level, s.delivery_method, s.content, s.metadata, s.retry_count,
         s.max_retries, s.scheduled_for, s.created_at,
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

-- One attempt's row in the delivery log (called by the outcome functions only).
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
    p_job.retry_count + 1, p_provider)
$$;

-- processing → sent. The provider accepted the message, so the job is sent even if its lease
-- token changed meanwhile, or the reaper already gave up on it, or it was cancelled after the
-- reaper returned it (sending again would duplicate, and the record must say what happened);
-- returns false in those cases so the worker can log it. It locks the job by id, not through
-- notifier_lock_leased_job, for that reason. A known outcome: outcome_unknown_at is cleared.
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
           failure_reason = null, outcome_unknown_at = null, updated_at = now()
     where id = p_job_id;
  end if;
  return v_token_matched;
end
$$;

-- processing → pending (retry later) or failed (no retries left), after a transient error.
-- Backoff: p_backoff_base_seconds * 2^retry_count, capped, with full jitter in its upper half;
-- a provider's retry-after hint wins when it is longer. Returns the new status, or null when
-- the token is not current.
create or replace function retry_notification_job(
  p_job_id uuid, p_lease_token uuid, p_provider text, p_error_code text, p_error_message text,
  p_provider_response jsonb default null, p_duration_ms integer default null,
  p_retry_after_seconds double precision default null,
  p_backoff_base_seconds double precision default 30,
  p_backoff_cap_seconds double precision default 3600
) returns varchar
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_job notification_jobs := notifier_lock_leased_job(p_job_id, p_lease_token);
  v_delay double precision;
begin
  if v_job.id is null then
    return null;
  end if;
  perform notifier_log_attempt(v_job, 'failed', p_provider, null, p_provider_response,
    p_error_code, p_error_message, p_duration_ms);
  if v_job.retry_count >= v_job.max_retries then
    update notification_jobs
       set status = 'failed', processed_at = now(), outcome_unknown_at = null,
           failure_reason = format('gave up after %s attempts: %s', v_job.retry_count + 1,
                                   p_error_message),
           updated_at = now()
     where id = p_job_id;
    return 'failed';
  end if;
  v_delay := least(p_backoff_cap_seconds, p_backoff_base_seconds * power(2, v_job.retry_count));
  v_delay := v_delay * (0.5 + random() / 2);
  v_delay := greatest(v_delay, least(coalesce(p_retry_after_seconds, 0), 86400));
  update notification_jobs
     set status = 'pending', retry_count = retry_count + 1,
         scheduled_for = now() + make_interval(secs => v_delay),
         failure_reason = p_error_message, outcome_unknown_at = null, updated_at = now()
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
  v_job := notifier_lock_leased_job(p_job_id, p_lease_token);
  if v_job.id is null then
    return false;
  end if;
  perform notifier_log_attempt(v_job, p_log_status, p_provider, null, p_provider_response,
    p_error_code, p_error_message, p_duration_ms);
  update notification_jobs
     set status = 'failed', failure_reason = p_error_message, processed_at = now(),
         outcome_unknown_at = null, updated_at = now()
   where id = p_job_id;
  return true;
end
$$;

-- processing → skipped: muted, inactive recipient, or channel not allowed. Logged as 'muted'.
create or replace function skip_notification_job(p_job_id uuid, p_lease_token uuid, p_reason text)
returns boolean
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_job notification_jobs := notifier_lock_leased_job(p_job_id, p_lease_token);
begin
  if v_job.id is null then
    return false;
  end if;
  perform notifier_log_attempt(v_job, 'muted', null, null, null, 'SKIPPED', p_reason, null);
  update notification_jobs
     set status = 'skipped', failure_reason = p_reason, processed_at = now(),
         outcome_unknown_at = null, updated_at = now()
   where id = p_job_id;
  return true;
end
$$;

-- processing → pending at p_until without using an attempt: the provider's circuit breaker is
-- open, so no request was made (and outcome_unknown_at, about an earlier attempt, stays).
create or replace function defer_notification_job(
  p_job_id uuid, p_lease_token uuid, p_until timestamptz, p_reason text
) returns boolean
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_job notification_jobs := notifier_lock_leased_job(p_job_id, p_lease_token);
begin
  if v_job.id is null then
    return false;
  end if;
  update notification_jobs
     set status = 'pending', scheduled_for = greatest(p_until, now()),
         metadata = coalesce(metadata, '{}'::jsonb) || jsonb_build_object('last_deferral', p_reason),
         updated_at = now()
   where id = p_job_id;
  return true;
end
$$;

-- processing → pending or failed when the worker knows it cannot tell whether the provider got
-- the message (a read timeout or a dropped connection after the request was written, an
-- unexpected error during the call), and, from the reaper, when its lease expired. The one
-- writer of outcome_unknown_at for notifier's own attempts. Logged as 'unknown';
-- p_unknown_outcome 'retry' redelivers (at least once), 'fail' gives up.
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
  v_job := notifier_lock_leased_job(p_job_id, p_lease_token);
  if v_job.id is null then
    return null;
  end if;
  perform notifier_log_attempt(v_job, 'unknown', p_provider, null, null, 'UNKNOWN_OUTCOME',
    p_error_message, null);
  if p_unknown_outcome = 'fail' or v_job.retry_count >= v_job.max_retries then
    update notification_jobs
       set status = 'failed', processed_at = now(), outcome_unknown_at = now(),
           failure_reason = 'outcome unknown: ' || p_error_message, updated_at = now()
     where id = p_job_id;
    return 'failed';
  end if;
  update notification_jobs
     set status = 'pending', retry_count = retry_count + 1, scheduled_for = now(),
         outcome_unknown_at = now(), failure_reason = p_error_message, updated_at = now(),
         metadata = coalesce(metadata, '{}'::jsonb) || '{"unknown_outcome": true}'::jsonb
   where id = p_job_id;
  return 'pending';
end
$$;

-- The reaper. queued with an expired lease → pending (never started: safe to redo, no attempt
-- used). processing with an expired lease → the outcome is unknown (the worker died during or
-- after the provider call), recorded by record_unknown_notification_outcome: p_unknown_outcome
-- 'retry' redelivers (at least once, may duplicate), 'fail' marks it failed (at most once, may
-- lose). Either way the delivery log says 'unknown'.
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
     set status = 'pending', updated_at = now()
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
     set status = 'cancelled', processed_at = now(), updated_at = now()
   where j.id = p_job_id and j.status in ('pending', 'queued', 'held')
     and (not notifier_caller_is_end_user()
          or exists (select 1 from recipients r
                      where r.id = j.recipient_id and r.parent_id = auth.uid()));
  return found;
end
$$;

-- Internal only: clients never lock a job themselves.
call notifier_restrict_to_service_role('notifier_lock_leased_job');
