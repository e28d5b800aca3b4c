-- First-run fixes: cleanup keeps people's preferences. (Enqueue's refusal of what the worker
-- could never deliver, push and a missing body, is in enqueue_notification_job's one
-- definition of this release, 20261201000600_hostile_input.sql.)
--
-- cleanup_notification_data used to delete notification_preferences_cache rows whose
-- cache_expires_at was more than p_days_to_keep days old. Nothing in notifier reads that expiry:
-- start_notification_attempts, digest_holds_job and create_digest_jobs honour every row, so a
-- cleanup unmuted muted recipients and sent digest recipients immediate messages again. Those
-- rows are people's settings, not a cache notifier may drop: cleanup no longer touches them.
-- Same signature, so the grants of 20261124000500/600 (service_role only) stay as they are.

-- Removes jobs in a terminal state (and, by cascade, their delivery logs) older than
-- p_days_to_keep days, and 'digested' items that old once their digest job is terminal too (or
-- gone). Held, pending and in-flight jobs are never removed; preferences are never removed.
-- Returns the number of jobs removed.
create or replace function cleanup_notification_data(p_days_to_keep integer default 30)
returns integer
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_deleted integer;
begin
  if p_days_to_keep is null or p_days_to_keep < 1 then
    raise exception 'days_to_keep must be at least 1, got %', coalesce(p_days_to_keep::text, 'NULL')
      using errcode = '22023';
  end if;
  delete from notification_jobs j
   where coalesce(j.processed_at, j.updated_at, j.created_at) < now() - make_interval(days => p_days_to_keep)
     and (j.status in ('sent', 'failed', 'skipped', 'cancelled')
          or (j.status = 'digested'
              and not exists (select 1 from notification_jobs d
                               where d.id = j.digest_job_id
                                 and d.status not in ('sent', 'failed', 'skipped', 'cancelled'))));
  get diagnostics v_deleted = row_count;
  return v_deleted;
end
$$;
