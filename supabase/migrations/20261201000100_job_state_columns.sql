-- Job state as columns with one definition each:
--   retry_count / max_retries   NOT NULL with their defaults, so no function wraps them in coalesce;
--   outcome_unknown_at          the unknown outcome as a column, not a failure_reason prefix;
--   notification_jobs_clear_lease  the one place a lease (lease_token, locked_until, locked_by)
--                               is cleared.
-- Applies on an empty database and over the original schema with rows. It fills nulls with the
-- columns' own defaults, derives outcome_unknown_at from what the rows already say, and clears
-- lease columns left on jobs that no longer hold a lease; nothing else is rewritten.

-- Attempts. Nulls were only ever possible from hand-written inserts (the original worker and
-- notifier both leave the columns to their defaults, and the original worker's only write to
-- them is `retry_count = retry_count + 1`), so NOT NULL breaks none of its statements.
update notification_jobs set retry_count = 0 where retry_count is null;
update notification_jobs set max_retries = 3 where max_retries is null;
alter table notification_jobs
  alter column retry_count set default 0,
  alter column retry_count set not null,
  alter column max_retries set default 3,
  alter column max_retries set not null;

-- When the job's latest attempt ended with an unknown outcome: the worker could not tell
-- whether the provider got the message (a timeout after the request was written, a worker lost
-- mid-attempt, a job adopted from the original worker without a trace). Set by
-- record_unknown_notification_outcome (the worker and the reaper) and adopt_notification_job's
-- 'unknown' verdict, together with the `unknown` delivery log row. Cleared when a later attempt
-- has a known outcome (sent, transient or permanent failure, skipped) and by a manual retry
-- (`notifier retry --failed`, which keeps it in metadata.manual_retry). It stays through a
-- deferral or a cancellation, which are no attempt. So:
--   failed  and outcome_unknown_at set: may have been delivered; `notifier retry --failed`
--           leaves it alone unless --include-unknown;
--   pending and outcome_unknown_at set: will be delivered again and may arrive twice.
-- A job whose later attempt was sent has it cleared: the delivery log (status `unknown`) and
-- metadata.unknown_outcome keep the history. failure_reason keeps its readable text
-- ('outcome unknown: ...' when such a job failed), but nothing reads state from it.
alter table notification_jobs add column if not exists outcome_unknown_at timestamptz;

-- Backfill: failed jobs whose reason carries the old prefix, and jobs not yet finished again
-- whose latest delivery log row says `unknown` (waiting to be redelivered).
update notification_jobs j
   set outcome_unknown_at = coalesce(j.processed_at, j.updated_at, now())
 where j.outcome_unknown_at is null and j.status = 'failed'
   and j.failure_reason like 'outcome unknown%';
update notification_jobs j
   set outcome_unknown_at = coalesce(latest.delivery_time, j.updated_at, now())
  from (select distinct on (l.job_id) l.job_id, l.status, l.delivery_time
          from notification_delivery_logs l
         where l.job_id is not null
         order by l.job_id, l.delivery_time desc nulls last, l.created_at desc nulls last) latest
 where latest.job_id = j.id and latest.status = 'unknown' and j.outcome_unknown_at is null
   and j.status in ('pending', 'queued', 'processing', 'cancelled', 'failed');

-- Counting jobs that rest on an unknown outcome (status, metrics) reads only those rows.
create index if not exists notification_jobs_outcome_unknown_idx on notification_jobs (status)
  where outcome_unknown_at is not null;

-- The lease exists only while a job is queued or processing. Rather than every state function
-- listing the lease columns to clear (they used to, fourteen times, not all of them alike: some
-- kept locked_by), this trigger clears all three whenever a row is written with any other
-- status. A trigger, not a helper each function calls, because the invariant then also holds
-- for writes that are no notifier function: the original worker's own UPDATEs after a
-- hand-back, an operator's SQL, a later migration's new function. Its WHEN clause is evaluated
-- without calling the function, so rows without a lease cost nothing.
create or replace function notification_jobs_clear_lease() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  new.lease_token := null;
  new.locked_until := null;
  new.locked_by := null;
  return new;
end
$$;

-- Rows written before the trigger (sent jobs kept locked_by, for one) are brought in line.
update notification_jobs
   set lease_token = null, locked_until = null, locked_by = null
 where status not in ('queued', 'processing')
   and (lease_token is not null or locked_until is not null or locked_by is not null);

drop trigger if exists notification_jobs_clear_lease on notification_jobs;
create trigger notification_jobs_clear_lease
  before insert or update on notification_jobs
  for each row
  when (new.status not in ('queued', 'processing')
        and (new.lease_token is not null or new.locked_until is not null
             or new.locked_by is not null))
  execute function notification_jobs_clear_lease();

call notifier_restrict_to_service_role('notification_jobs_clear_lease');
