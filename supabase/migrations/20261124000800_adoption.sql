-- Switching between the original notification worker (TypeScript + BullMQ) and notifier, in
-- both directions, without losing a message (docs/migrating.md).
--   notifier adopt:    list_adoptable_notification_jobs, notification_job_statuses,
--                      adopt_notification_job
--   notifier handback: hand_back_notification_jobs, notifier_handed_back (and a trigger that
--                      keeps new jobs in the original statuses while handed back)
-- Like every state change, each transition is one function that matches on the current status,
-- so running a command twice, or two at once, changes each job at most once.

-- Whether the queue is handed back to the original worker: set by hand_back_notification_jobs,
-- cleared when claims resume (`notifier adopt`, or `notifier resume --force`). A flag of its
-- own, not paused_by: an operator's `notifier pause` after a hand-back overwrites paused_by
-- but must not end the hand-back.
alter table notifier_control add column if not exists handed_back boolean not null default false;

-- The jobs the original worker left in flight: `processing` rows notifier never claimed (a
-- notifier attempt always carries a lease token). has_delivered_log: the original worker wrote
-- `sent` before its delivery log, so a `delivered` row means the message went out.
create or replace function list_adoptable_notification_jobs()
returns table (id uuid, retry_count integer, max_retries integer, has_delivered_log boolean)
language sql stable security definer set search_path = public, pg_temp as $$
  select j.id, coalesce(j.retry_count, 0), coalesce(j.max_retries, 3),
         exists (select 1 from notification_delivery_logs l
                  where l.job_id = j.id and l.status = 'delivered')
    from notification_jobs j
   where j.status = 'processing' and j.lease_token is null
   order by j.created_at, j.id
$$;

-- The status of each job, of the ids given as a JSON array of strings, that exists (jobs the old
-- queue still holds, so adopt can tell notification jobs from anything else in it). Ids that
-- are not UUIDs are simply not notification jobs.
create or replace function notification_job_statuses(p_ids jsonb)
returns table (id uuid, status varchar)
language sql stable security definer set search_path = public, pg_temp as $$
  select j.id, j.status from notification_jobs j
   where j.id = any (array(
     select x::uuid from jsonb_array_elements_text(p_ids) x
      where x ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'))
$$;

-- processing (left by the original worker) → sent | failed | pending, as the old queue says:
--   'sent'    the old worker's job completed with success: message_id, a `delivered` log row;
--   'failed'  it failed for good (or completed with success false): failure_reason, a log row;
--   'pending' it never started (waiting, prioritized, delayed before any attempt): redeliver;
--   'unknown' no trace, active when the old worker stopped, or an attempt was made (delayed
--             for a retry: the provider may have accepted it): `pending` marked
--             metadata.unknown_outcome (at least once: it may be delivered twice) with an
--             `unknown` log row, as the reaper does.
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
       set status = 'pending', retry_count = greatest(coalesce(retry_count, 0), p_attempts),
           locked_by = null, updated_at = now(),
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
       set status = 'pending', retry_count = greatest(coalesce(retry_count, 0), p_attempts),
           locked_by = null, updated_at = now(),
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
--   queued (claimed, maybe in Redis)  → pending at once: the claim's token is cleared, so a
--                                       worker that picks the RQ job up later drops it;
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

  update notification_jobs
     set status = 'pending', lease_token = null, locked_until = null, locked_by = null,
         updated_at = now()
   where status = 'queued';
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
         set status = old.new_status, lease_token = null, locked_until = null, locked_by = null,
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

-- Who pauses claims on a hand-back (notifier_control.paused_by, as `notifier status` shows it).
-- Whether the queue is handed back is notifier_control.handed_back, not this name: an
-- operator's later `notifier pause` replaces paused_by.
create or replace function notifier_handback_pauser() returns text
language sql immutable set search_path = pg_catalog as $$ select 'notifier handback'::text $$;

-- True while the queue is handed back to the original worker (hand_back_*), until claims resume;
-- an operator's pause or resume refused in between does not change it.
create or replace function notifier_handed_back() returns boolean
language sql stable security definer set search_path = public, pg_temp as $$
  select coalesce((select c.handed_back from notifier_control c where c.id), false)
$$;

-- Resuming claims (set_notifier_paused(false), 20261124000700) ends a hand-back: notifier owns
-- the queue again, so new digest items may be `held` again.
create or replace function notifier_control_resume_ends_handback() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  if not new.paused then
    new.handed_back := false;
  end if;
  return new;
end
$$;
drop trigger if exists notifier_control_resume_ends_handback on notifier_control;
create trigger notifier_control_resume_ends_handback
  before update on notifier_control
  for each row execute function notifier_control_resume_ends_handback();

-- A hand-back made before the flag existed (recognised by who paused).
update notifier_control c set handed_back = true
 where c.id and c.paused and c.paused_by = notifier_handback_pauser() and not c.handed_back;

-- While handed back, a new job must not start in a status the original worker does not know:
-- enqueue_notification_job holds a job for a digest ('held') that only notifier's digest pass
-- would ever deliver. Such a job is inserted 'pending' instead, noted in metadata.handed_back.
create or replace function notification_jobs_handed_back_insert() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  if notifier_handed_back() then
    new.metadata := coalesce(new.metadata, '{}'::jsonb) || jsonb_build_object(
      'handed_back', jsonb_build_object('from_status', new.status, 'at', now()));
    new.status := 'pending';
  end if;
  return new;
end
$$;
drop trigger if exists notification_jobs_handed_back_insert on notification_jobs;
create trigger notification_jobs_handed_back_insert
  before insert on notification_jobs
  for each row when (new.status not in ('pending', 'processing', 'sent', 'failed', 'skipped', 'cancelled'))
  execute function notification_jobs_handed_back_insert();

call notifier_restrict_to_service_role(
  'list_adoptable_notification_jobs', 'notification_job_statuses', 'adopt_notification_job',
  'hand_back_notification_jobs', 'notifier_handback_pauser', 'notifier_handed_back',
  'notification_jobs_handed_back_insert', 'notifier_control_resume_ends_handback');
