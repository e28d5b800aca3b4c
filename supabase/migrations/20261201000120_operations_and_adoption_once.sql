-- The operations and adoption functions of 20261124000700_operations.sql and
-- 20261124000800_adoption.sql, redefined (same signatures and grants) on the columns of
-- 20261201000100_job_state_columns: the unknown outcome is read from outcome_unknown_at (never
-- from failure_reason's text), retry_count is NOT NULL, and leases are cleared by the
-- notification_jobs_clear_lease trigger. Behaviour is otherwise unchanged.

-- failed → pending, due now, with a fresh attempt budget (retry_count 0), for the operator's
-- `notifier retry --failed`. Filters: failed at or after p_since (processed_at), and a
-- failure_reason matching the ILIKE pattern p_reason_like. Jobs whose outcome was unknown
-- (outcome_unknown_at set, e.g. with NOTIFIER_UNKNOWN_OUTCOME=fail: the provider may have
-- delivered them) are left alone unless p_include_unknown, since a resend may duplicate,
-- whatever their failure_reason says. The previous failure (reason, retry count, unknown
-- outcome) is kept in metadata.manual_retry, and outcome_unknown_at is cleared: the job starts
-- over. p_dry_run counts without changing anything. Returns the count.
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
       and (coalesce(p_include_unknown, false) or j.outcome_unknown_at is null);
    return v_count;
  end if;
  update notification_jobs j
     set status = 'pending', retry_count = 0, scheduled_for = now(), processed_at = null,
         attempt_started_at = null,
         metadata = coalesce(j.metadata, '{}'::jsonb) || jsonb_build_object('manual_retry',
           jsonb_build_object('at', now(), 'previous_failure_reason', j.failure_reason,
                              'previous_retry_count', j.retry_count,
                              'previous_outcome_unknown_at', j.outcome_unknown_at)),
         failure_reason = null, outcome_unknown_at = null, updated_at = now()
   where j.status = 'failed'
     and (p_since is null or coalesce(j.processed_at, j.updated_at) >= p_since)
     and (p_reason_like is null or j.failure_reason ilike p_reason_like)
     and (coalesce(p_include_unknown, false) or j.outcome_unknown_at is null);
  get diagnostics v_count = row_count;
  return v_count;
end
$$;

-- The jobs the original worker left in flight: `processing` rows notifier never claimed (a
-- notifier attempt always carries a lease token). has_delivered_log: the original worker wrote
-- `sent` before its delivery log, so a `delivered` row means the message went out.
create or replace function list_adoptable_notification_jobs()
returns table (id uuid, retry_count integer, max_retries integer, has_delivered_log boolean)
language sql stable security definer set search_path = public, pg_temp as $$
  select j.id, j.retry_count, j.max_retries,
         exists (select 1 from notification_delivery_logs l
                  where l.job_id = j.id and l.status = 'delivered')
    from notification_jobs j
   where j.status = 'processing' and j.lease_token is null
   order by j.created_at, j.id
$$;

-- processing (left by the original worker) → sent | failed | pending, as the old queue says:
--   'sent'    the old worker's job completed with success: message_id, a `delivered` log row;
--   'failed'  it failed for good (or completed with success false): failure_reason, a log row;
--   'pending' it never started (waiting, prioritized, delayed before any attempt): redeliver;
--   'unknown' no trace, active when the old worker stopped, or an attempt was made (delayed
--             for a retry: the provider may have accepted it): `pending` with
--             outcome_unknown_at set and marked metadata.unknown_outcome (at least once: it may
--             be delivered twice) with an `unknown` log row, as the reaper does.
-- For 'pending' and 'unknown' a `delivered` log row wins: the job becomes `sent`.
-- metadata.adopted records where the verdict came from. p_attempts: attempts the old worker
-- made, so notifier's max_retries still bounds the total. Returns the new status, or null when
-- the job is not (or no longer) an unclaimed `processing` job.
create or replace function adopt_notification_job(
  p_job_id uuid, p_outcome varchar, p_message_id text default null, p_reason text default null,
  p_details jsonb default '{}', p_processed_at timestamptz default null,
  p_attempts integer default 0
) returns varchar
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_job notification_jobs;
  v_log notification_delivery_logs;
  v_adopted jsonb;
begin
  if p_outcome is null or p_outcome not in ('sent', 'failed', 'pending', 'unknown') then
    raise exception 'adopt_notification_job: outcome % is not sent, failed, pending or unknown',
      coalesce(quote_literal(p_outcome), 'NULL') using errcode = '22023';
  end if;
  select * into v_job from notification_jobs
   where id = p_job_id and status = 'processing' and lease_token is null for update;
  if not found then
    return null;
  end if;
  v_adopted := coalesce(p_details, '{}'::jsonb)
    || jsonb_build_object('outcome', p_outcome, 'at', now());

  -- A `delivered` log row means the message went out, whatever the old queue says.
  if p_outcome in ('unknown', 'pending') then
    select * into v_log from notification_delivery_logs l
     where l.job_id = p_job_id and l.status = 'delivered'
     order by l.delivery_time desc nulls last limit 1;
    if found then
      update notification_jobs
         set status = 'sent', message_id = coalesce(message_id, v_log.provider_message_id),
             processed_at = coalesce(processed_at, v_log.delivery_time, now()),
             failure_reason = null, updated_at = now(),
             metadata = coalesce(metadata, '{}'::jsonb)
               || jsonb_build_object('adopted', v_adopted || '{"resolved_by": "delivery_log"}')
       where id = p_job_id;
      return 'sent';
    end if;
  end if;

  if p_outcome = 'unknown' then
    perform notifier_log_attempt(v_job, 'unknown', 'original-worker', null, p_details,
      'UNKNOWN_OUTCOME', 'adopted from the original worker without a trace of its outcome; '
      || 'delivered again, so it may arrive twice', null);
    update notification_jobs
       set status = 'pending', retry_count = greatest(retry_count, p_attempts),
           outcome_unknown_at = now(), updated_at = now(),
           metadata = coalesce(metadata, '{}'::jsonb)
             || jsonb_build_object('adopted', v_adopted, 'unknown_outcome', true)
     where id = p_job_id;
    return 'pending';
  end if;

  -- The old worker's attempt gets a log row unless it wrote one itself.
  if p_outcome = 'sent' then
    if not exists (select 1 from notification_delivery_logs l
                    where l.job_id = p_job_id and l.status = 'delivered') then
      perform notifier_log_attempt(v_job, 'delivered', 'original-worker', p_message_id, p_details,
        null, null, null);
    end if;
    update notification_jobs
       set status = 'sent', message_id = p_message_id,
           processed_at = coalesce(p_processed_at, now()), failure_reason = null,
           updated_at = now(),
           metadata = coalesce(metadata, '{}'::jsonb) || jsonb_build_object('adopted', v_adopted)
     where id = p_job_id;
  elsif p_outcome = 'failed' then
    if not exists (select 1 from notification_delivery_logs l
                    where l.job_id = p_job_id and l.status in ('failed', 'bounced', 'blocked')) then
      perform notifier_log_attempt(v_job, 'failed', 'original-worker', null, p_details,
        'ADOPTED_FAILURE', p_reason, null);
    end if;
    update notification_jobs
       set status = 'failed', failure_reason = coalesce(p_reason, 'failed in the original worker'),
           processed_at = coalesce(p_processed_at, now()), updated_at = now(),
           metadata = coalesce(metadata, '{}'::jsonb) || jsonb_build_object('adopted', v_adopted)
     where id = p_job_id;
  else
    update notification_jobs
       set status = 'pending', retry_count = greatest(retry_count, p_attempts), updated_at = now(),
           metadata = coalesce(metadata, '{}'::jsonb) || jsonb_build_object('adopted', v_adopted)
     where id = p_job_id;
  end if;
  return p_outcome;
end
$$;

-- Hand the queue back to the original worker: afterwards no row has a status it does not know
-- (anything but its six). In one transaction, after pausing claims (set_notifier_paused from
-- 20261124000700_operations.sql: its row lock waits for claims already running, and every
-- later claim sees the pause, so no poller claims what is released here):
--   queued (claimed, maybe in Redis)  → pending at once: the claim's token is cleared (by
--                                       notification_jobs_clear_lease), so a worker that picks
--                                       the RQ job up later drops it;
--   processing past its lease         → as the reaper decides (p_unknown_outcome);
--   digested (20261124000600_digests) → never pending (its content went out, or goes out, in
--                                       its digest job: docs/digests.md): the digest job's
--                                       status when that is terminal, else skipped with
--                                       failure_reason 'carried by digest job <id>';
--   held, or any other status outside
--   the six a later migration adds    → pending, so the original worker delivers it;
--   processing within its lease       → left alone: a notifier worker is sending it now.
-- Each changed row notes metadata.handed_back. Returns one row per outcome; 'in_flight' counts
-- what notifier workers are still sending, which the caller waits for by calling again.
create or replace function hand_back_notification_jobs(p_unknown_outcome varchar default 'retry')
returns table (outcome text, job_count integer)
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_released integer;
  v_in_flight integer;
  r record;
begin
  perform set_notifier_paused(true, notifier_handback_pauser(), 'handed back to the original worker');
  update notifier_control c set handed_back = true where c.id;

  update notification_jobs set status = 'pending', updated_at = now() where status = 'queued';
  get diagnostics v_released = row_count;
  return query values ('queued → pending', v_released);

  for r in select * from release_expired_notification_leases(p_unknown_outcome, 100000) loop
    if r.outcome = 'unknown_retried' then
      return query values ('processing, lease expired → pending (outcome unknown)', r.job_count);
    elsif r.outcome = 'unknown_failed' then
      return query values ('processing, lease expired → failed (outcome unknown)', r.job_count);
    end if;
  end loop;

  for r in
    with old as (
      select j.id, j.status as old_status,
             case when j.status <> 'digested' then 'pending'
                  else coalesce(d.status, 'skipped') end as new_status,
             case when j.status = 'digested' and d.status is null
                  then format('carried by digest job %s', coalesce(j.digest_job_id::text, '(removed)'))
             end as reason
        from notification_jobs j
        left join notification_jobs d
          on d.id = j.digest_job_id and d.status in ('sent', 'failed', 'skipped', 'cancelled')
       where j.status not in ('pending', 'processing', 'sent', 'failed', 'skipped', 'cancelled')
         for update of j
    ), moved as (
      update notification_jobs j
         set status = old.new_status,
             failure_reason = coalesce(old.reason, j.failure_reason),
             processed_at = case when old.new_status = 'pending' then j.processed_at
                                 else coalesce(j.processed_at, now()) end,
             updated_at = now(),
             metadata = coalesce(j.metadata, '{}'::jsonb) || jsonb_build_object(
               'handed_back', jsonb_build_object('from_status', old.old_status, 'at', now()))
        from old
       where j.id = old.id
      returning old.old_status, j.status
    )
    select format('%s → %s', m.old_status, m.status) as label, count(*)::integer as n
      from moved m group by 1 order by 1
  loop
    return query values (r.label, r.n);
  end loop;

  select count(*)::integer into v_in_flight from notification_jobs
   where status = 'processing' and lease_token is not null;
  return query values ('in_flight', v_in_flight);
end
$$;
