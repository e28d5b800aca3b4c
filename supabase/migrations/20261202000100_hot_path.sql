-- The hot path, cheaper in PostgreSQL's own CPU (measured with perf and per-backend CPU time;
-- docs/performance.md). Same behaviour, same signatures and grants; one new function.
--
-- 1. complete_notification_jobs records a batch of accepted messages in one statement. A worker
--    gathers the successes that finish while its previous record is in flight (it never waits
--    for more), so a batch pays the fixed cost of a statement once (≈ 0.4 ms of backend CPU:
--    executor start-up, opening the tables' indexes, re-reading their CHECK constraints, the
--    trigger queue, the commit) and ≈ 0.07 ms per job on top: 0.46 ms per job one by one,
--    0.15 ms in batches of 5, 0.07 ms in batches of 64.
--    complete_notification_job becomes this function for one send.
-- 2. start_notification_attempts starts its claims set-wise (one statement, not one per claim):
--    0.19 → 0.08 ms per job in batches of 64.
-- 3. The helpers enqueue_notification_job calls, and the due index's expression, were SQL
--    functions with a SET clause. Such a function is never inlined, and until PostgreSQL 18 it
--    is parsed and planned again each time the calling statement runs, which for a plpgsql
--    caller is every call. As plpgsql their plans are cached per session; the two constants
--    lose their SET clause (they name nothing a search_path could redirect) and are folded
--    where used. Enqueue: 0.53 → ≈ 0.17 ms of backend CPU per call.

create or replace function notification_content_max_depth() returns integer
language sql immutable parallel safe as $$ select 32 $$;

create or replace function notification_content_max_bytes() returns integer
language sql immutable parallel safe as $$ select 65536 $$;

-- The nesting bound of 20261201000600, same walk; as plpgsql its recursive query is planned
-- once per session instead of on every enqueue.
create or replace function notifier_jsonb_depth(p_value jsonb, p_limit integer)
returns integer
language plpgsql immutable set search_path = pg_catalog as $$
begin
  if jsonb_typeof(p_value) is null or jsonb_typeof(p_value) not in ('object', 'array') then
    return 0;
  end if;
  return (
    with recursive walk(v, d) as (
      select p_value, 1
      union all
      select c.value, w.d + 1
        from walk w
        cross join lateral (
          select e.value from jsonb_each(case when jsonb_typeof(w.v) = 'object' then w.v end) e
          union all
          select a.value from jsonb_array_elements(case when jsonb_typeof(w.v) = 'array' then w.v end) a
        ) c
       where w.d <= p_limit and jsonb_typeof(c.value) in ('object', 'array')
    )
    select max(d) from walk);
end
$$;

-- Evaluated for every row written to the due index: as plpgsql it is no longer parsed and
-- planned per statement. Same results, so the index stays valid; never inlined, so the
-- claim's ORDER BY still matches the index expression.
create or replace function notification_urgency_rank(p_urgency varchar) returns smallint
language plpgsql immutable parallel safe set search_path = pg_catalog as $$
begin
  return case p_urgency when 'urgent' then 0 when 'normal' then 1 else 2 end;
end
$$;

create or replace function notifier_role_is_end_user(p_role text) returns boolean
language plpgsql stable set search_path = pg_catalog as $$
begin
  if p_role is null or not exists (select 1 from pg_roles where rolname = p_role) then
    return false;
  end if;
  if pg_has_role(p_role, 'service_role', 'member') then
    return false;
  end if;
  return pg_has_role(p_role, 'authenticated', 'member') or pg_has_role(p_role, 'anon', 'member');
end
$$;

create or replace function notifier_caller_is_end_user() returns boolean
language plpgsql stable set search_path = pg_catalog, public as $$
declare
  v_role text := current_setting('role', true);
begin
  if coalesce(v_role, 'none') <> 'none' then
    return notifier_role_is_end_user(v_role);
  end if;
  if notifier_role_is_end_user(session_user::text) then
    return true;
  end if;
  return coalesce(auth.role() <> 'service_role', false);
end
$$;

create or replace function digest_schedule_covers(p_recipient_id uuid, p_group_id uuid)
returns boolean
language plpgsql stable set search_path = public, pg_temp as $$
begin
  return exists (
    select 1 from digest_schedules s
     where s.recipient_id = p_recipient_id and s.is_active is not false
       and s.next_digest_scheduled is not null
       and (s.group_id = p_group_id
            or (s.group_id is null and not exists (
                  select 1 from digest_schedules o
                   where o.recipient_id = p_recipient_id and o.group_id = p_group_id
                     and o.is_active is not false and o.next_digest_scheduled is not null))));
end
$$;

create or replace function digest_holds_job(
  p_recipient_id uuid, p_group_id uuid, p_notification_type varchar, p_urgency_level varchar,
  p_content jsonb
) returns boolean
language plpgsql stable set search_path = public, pg_temp as $$
begin
  return case
    when p_notification_type = 'digest' then coalesce(jsonb_typeof(p_content -> 'items'), '') <> 'array'
    when p_notification_type <> 'immediate' or p_urgency_level = 'urgent' then false
    else coalesce((select p.effective_frequency <> 'immediate'
                     from notification_preferences_cache p
                    where p.recipient_id = p_recipient_id
                      and (p.group_id = p_group_id or p.group_id is null)
                    order by (p.group_id is null)  -- a group-specific row wins
                    limit 1), false)
  end
  and digest_schedule_covers(p_recipient_id, p_group_id);
end
$$;

create or replace function notification_enqueue_status(
  p_recipient_id uuid, p_group_id uuid, p_notification_type varchar, p_urgency_level varchar,
  p_content jsonb
) returns varchar
language plpgsql stable security definer set search_path = public, pg_temp as $$
begin
  return case when digest_holds_job(p_recipient_id, p_group_id, p_notification_type,
                                    p_urgency_level, p_content)
              then 'held' else 'pending' end;
end
$$;

-- processing → sent for each accepted message of a batch, with the rules of 20261201000110's
-- complete_notification_job row for row (the job is sent whatever its token, unless already
-- sent or skipped; a `delivered` log row for every send; outcome_unknown_at cleared), in one
-- statement. Returns each job id with whether its token was still current. Rows are found by
-- primary key only (`id = any(...)`: an index probe per job, whatever the table's size or
-- statistics) and locked in id order, so two overlapping batches cannot deadlock; a job id
-- that is not in the table returns nothing. `p_sends`: [{job_id, lease_token, provider,
-- provider_message_id, provider_response, duration_ms}, ...]. complete_notification_job, below,
-- is now this function for one send, so the rules live here only.
create or replace function complete_notification_jobs(p_sends jsonb)
returns table (job_id uuid, token_matched boolean)
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  if p_sends is null or jsonb_typeof(p_sends) <> 'array' then
    raise exception 'complete_notification_jobs needs a JSON array of sends' using errcode = '22023';
  end if;
  return query
  with sends as (
    select s.job_id, s.lease_token, s.provider, s.provider_message_id, s.provider_response,
           s.duration_ms
      from jsonb_to_recordset(p_sends) as s(job_id uuid, lease_token uuid, provider text,
             provider_message_id text, provider_response jsonb, duration_ms integer)
  ),
  locked as materialized (
    select j.id, j.recipient_id, j.group_id, j.delivery_method, j.retry_count, j.status,
           j.lease_token
      from notification_jobs j
     where j.id = any(array(select sends.job_id from sends))
     order by j.id
       for update
  ),
  logged as (
    insert into notification_delivery_logs (job_id, recipient_id, group_id, delivery_method,
      status, provider_message_id, provider_response, error_code, error_message,
      delivery_duration_ms, attempt, provider)
    select l.id, l.recipient_id, l.group_id, l.delivery_method, 'delivered',
           s.provider_message_id, s.provider_response, null, null, s.duration_ms,
           l.retry_count + 1, s.provider
      from sends s join locked l on l.id = s.job_id
  ),
  marked as (
    update notification_jobs j
       set status = 'sent', message_id = s.provider_message_id, processed_at = now(),
           failure_reason = null, outcome_unknown_at = null, updated_at = now()
      from sends s
     where j.id = any(array(select l.id from locked l
                             where l.status in ('pending', 'queued', 'processing', 'failed',
                                                'cancelled')))
       and s.job_id = j.id
  )
  select l.id, (l.lease_token is not distinct from s.lease_token and l.status = 'processing')
    from sends s join locked l on l.id = s.job_id;
end
$$;

-- The one-send form (same signature, so the grants of 20261124000500 stay): a batch of one.
create or replace function complete_notification_job(
  p_job_id uuid, p_lease_token uuid, p_provider text, p_provider_message_id text,
  p_provider_response jsonb default null, p_duration_ms integer default null
) returns boolean
language sql security definer set search_path = public, pg_temp as $$
  select coalesce((
    select c.token_matched
      from complete_notification_jobs(jsonb_build_array(jsonb_build_object(
             'job_id', p_job_id, 'lease_token', p_lease_token, 'provider', p_provider,
             'provider_message_id', p_provider_message_id,
             'provider_response', p_provider_response, 'duration_ms', p_duration_ms))) c
  ), false)
$$;

call notifier_restrict_to_service_role('complete_notification_jobs');

-- queued → processing for every claim whose token is still current, as in 20261201000500, in
-- three set-wise steps instead of a statement per claim (0.19 → ≈ 0.0x ms of backend CPU per job).
-- The rows are still found by primary key only: the lock and the update read
-- `id = any(...)` and nothing else, and the token and status are checked on the locked rows,
-- outside that scan, so no statistics can turn it into a scan of the lease index (the flip
-- 20261201000500 describes) or into a hash join over the whole table. The recipient
-- row is turned into JSON once per job instead of once per field.
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
  -- Claims to a suppressed address end `skipped` here, with a `blocked` log row, and are never
  -- returned: no provider request (20261201000400, delivery feedback).
  perform notifier_skip_suppressed_claims(p_claims);
  return query
  with claims as (
    select distinct (c ->> 'job_id')::uuid as job_id, (c ->> 'lease_token')::uuid as token
      from jsonb_array_elements(p_claims) c
  ),
  locked as materialized (
    select j.id, j.lease_token, j.status
      from notification_jobs j
     where j.id = any(array(select claims.job_id from claims))
     order by j.id
       for update
  ),
  current_claims as materialized (
    -- a stale or duplicate copy has another token or status here: nothing to send
    select l.id from locked l join claims c on c.job_id = l.id and c.token = l.lease_token
     where l.status = 'queued'
  ),
  started as (
    update notification_jobs j
       set status = 'processing', attempt_started_at = now(),
           locked_until = now() + make_interval(secs => p_lease_seconds), updated_at = now()
     where j.id = any(array(select current_claims.id from current_claims))
    returning j.*
  )
  select s.id, s.lease_token, s.recipient_id, s.group_id, s.update_id, s.notification_type,
         s.urgency_level, s.delivery_method, s.content, s.metadata, s.retry_count,
         s.max_retries, s.scheduled_for, s.created_at,
         (select jsonb_build_object(
                   'id', s.recipient_id, 'name', r.doc ->> 'name', 'email', r.doc ->> 'email',
                   'phone', r.doc ->> 'phone', 'timezone', r.doc ->> 'timezone',
                   'preference_token', r.doc ->> 'preference_token',
                   'is_active', coalesce((r.doc ->> 'is_active')::boolean, true))
            from (select to_jsonb(rr) as doc from recipients rr where rr.id = s.recipient_id) r),
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
    from started s
   order by s.id;
end
$$;
