-- Per-claim work by primary key, so its cost does not grow with the backlog.
--
-- start_notification_attempts (20261201000110) joined its `claims` CTE against notification_jobs
-- in one UPDATE ... FROM. The planner hash-joined it with every `queued` row found through the
-- lease index: ~1,000 rows read to start one job with 1,000 queued, and a cost per notification
-- that grows with the work in flight (quadratic overall). release_notification_claims had the
-- same shape. Both now walk their claims and touch each job by its primary key (one index
-- probe per claim, whatever the backlog); the plan of `where id = $1` cannot flip with
-- statistics. Same signatures, result columns and behaviour; `create or replace` keeps the
-- grants of 20261124000500 (service_role only), and the call below restates them.

-- The job that a worker's lease token holds, locked FOR UPDATE, or null (as in 000110): found by
-- its primary key alone (the locking subquery is planned on its own), then checked, so no
-- statistics can turn the probe into a scan of the lease index.
create or replace function notifier_lock_leased_job(p_job_id uuid, p_lease_token uuid)
returns notification_jobs
language sql volatile set search_path = public, pg_temp as $$
  select j.* from (select * from notification_jobs where id = p_job_id for update) j
   where j.lease_token = p_lease_token and j.status = 'processing'
$$;

-- queued → processing, for each (job id, lease token) whose token is still current; returns
-- what a worker needs to deliver (job, recipient, group, preferences) in one round trip.
-- A stale or duplicate copy of a job gets no row and is therefore never sent. Claims are taken
-- in job-id order, so two workers starting overlapping batches lock rows in the same order.
create or replace function start_notification_attempts(p_claims jsonb, p_lease_seconds integer)
returns table (
  id uuid, lease_token uuid, recipient_id uuid, group_id uuid, update_id uuid,
  notification_type varchar, urgency_level varchar, delivery_method varchar, content jsonb,
  metadata jsonb, retry_count integer, max_retries integer, scheduled_for timestamptz,
  created_at timestamptz, recipient jsonb, group_name text, preferences jsonb
)
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_claim record;
  v_job notification_jobs;
begin
  if p_lease_seconds is null or p_lease_seconds < 1 then
    raise exception 'start_notification_attempts needs a positive lease' using errcode = '22023';
  end if;
  -- Claims to a suppressed address end `skipped` here, with a `blocked` log row, and are never
  -- returned: no provider request (20261201000400, delivery feedback).
  perform notifier_skip_suppressed_claims(p_claims);
  for v_claim in
    select distinct (c ->> 'job_id')::uuid as job_id, (c ->> 'lease_token')::uuid as token
      from jsonb_array_elements(p_claims) c
     order by 1
  loop
    -- The job by its primary key alone, then the token and status checked on the row: a
    -- `status = 'queued'` in the WHERE clause matches the lease index's predicate, and with
    -- statistics taken while nothing was queued the cached plan scanned that index instead
    -- (13 ms a claim with 10,000 queued beside 1 M finished jobs, measured).
    select * into v_job from notification_jobs j where j.id = v_claim.job_id for update;
    continue when not found or v_job.lease_token is distinct from v_claim.token
                  or v_job.status <> 'queued';  -- a stale or duplicate copy: nothing to send
    update notification_jobs j
       set status = 'processing', attempt_started_at = now(),
           locked_until = now() + make_interval(secs => p_lease_seconds), updated_at = now()
     where j.id = v_job.id
    returning j.* into v_job;

    return query
    select v_job.id, v_job.lease_token, v_job.recipient_id, v_job.group_id, v_job.update_id,
           v_job.notification_type, v_job.urgency_level, v_job.delivery_method, v_job.content,
           v_job.metadata, v_job.retry_count, v_job.max_retries, v_job.scheduled_for,
           v_job.created_at,
           (select jsonb_build_object(
                     'id', r.id, 'name', to_jsonb(r) ->> 'name', 'email', to_jsonb(r) ->> 'email',
                     'phone', to_jsonb(r) ->> 'phone', 'timezone', to_jsonb(r) ->> 'timezone',
                     'preference_token', to_jsonb(r) ->> 'preference_token',
                     'is_active', coalesce((to_jsonb(r) ->> 'is_active')::boolean, true))
              from recipients r where r.id = v_job.recipient_id),
           (select to_jsonb(g) ->> 'name' from recipient_groups g where g.id = v_job.group_id),
           (select jsonb_build_object(
                     'is_muted', coalesce(p.is_muted, false), 'muted_until', p.muted_until,
                     'effective_channels', to_jsonb(p.effective_channels),
                     'effective_frequency', p.effective_frequency)
              from notification_preferences_cache p
             where p.recipient_id = v_job.recipient_id
               and (p.group_id = v_job.group_id or p.group_id is null)
             order by (p.group_id is null)   -- a group-specific row wins over the recipient default
             limit 1);
  end loop;
end
$$;

-- queued → pending for claims the poller could not hand to Redis (Redis down mid-enqueue),
-- so they do not wait for their lease to expire. Only while the token is still current.
create or replace function release_notification_claims(p_claims jsonb) returns integer
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_claim record;
  v_job notification_jobs;
  v_released integer := 0;
begin
  for v_claim in
    select distinct (c ->> 'job_id')::uuid as job_id, (c ->> 'lease_token')::uuid as token
      from jsonb_array_elements(p_claims) c
     order by 1
  loop
    select * into v_job from notification_jobs j where j.id = v_claim.job_id for update;
    continue when not found or v_job.lease_token is distinct from v_claim.token
                  or v_job.status <> 'queued';
    update notification_jobs j set status = 'pending', updated_at = now() where j.id = v_job.id;
    v_released := v_released + 1;
  end loop;
  return v_released;
end
$$;

call notifier_restrict_to_service_role(
  'notifier_lock_leased_job', 'start_notification_attempts', 'release_notification_claims'
);
