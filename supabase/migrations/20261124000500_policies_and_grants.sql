-- Row-level security and least privilege.
-- Owners (auth.uid() = the recipient's parent_id) read their own jobs, logs, schedules and
-- preferences; they change jobs only through functions (enqueue, cancel). The preferences
-- cache is written only by the service role and notifier's functions. anon sees nothing.
-- service_role bypasses RLS (BYPASSRLS on Supabase and in the compatibility migration).

-- Until the digest scheduler lands, digests are not created; the function exists with its
-- final signature so pg_cron jobs and the original worker's calls keep resolving.
create or replace function create_digest_jobs() returns integer
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  return 0;
end
$$;

alter table notification_jobs enable row level security;
alter table notification_delivery_logs enable row level security;
alter table digest_schedules enable row level security;
alter table notification_preferences_cache enable row level security;
alter table notifier_schema_migrations enable row level security;

-- Replace every policy on notifier's tables (including the original, too-wide ones, whatever
-- their names) with the intended set below.
do $$
declare
  p record;
begin
  for p in
    select policyname, tablename from pg_policies
     where schemaname = 'public'
       and tablename in ('notification_jobs', 'notification_delivery_logs', 'digest_schedules',
                         'notification_preferences_cache', 'notifier_schema_migrations')
  loop
    execute format('drop policy %I on public.%I', p.policyname, p.tablename);
  end loop;
end
$$;

-- The current end user's recipients and groups, computed once per query (a set-returning
-- STABLE function in `in (select ...)` becomes one hashed subplan), so owner reads use the
-- recipient_id indexes instead of evaluating an ownership check on every row of every tenant.
-- SECURITY DEFINER so the check does not depend on the app's own policies on recipients.
create or replace function notifier_owned_recipient_ids() returns setof uuid
language sql stable security definer set search_path = public, pg_temp as $$
  select r.id from recipients r where r.parent_id = auth.uid()
$$;

create or replace function notifier_owns_group(p_group_id uuid) returns boolean
language sql stable security definer set search_path = public, pg_temp as $$
  select exists (select 1 from recipient_groups g where g.id = p_group_id and g.parent_id = auth.uid())
$$;

create policy notification_jobs_owner_read on notification_jobs
  for select to authenticated using (recipient_id in (select notifier_owned_recipient_ids()));
create policy notification_delivery_logs_owner_read on notification_delivery_logs
  for select to authenticated using (recipient_id in (select notifier_owned_recipient_ids()));
create policy notification_preferences_cache_owner_read on notification_preferences_cache
  for select to authenticated using (recipient_id in (select notifier_owned_recipient_ids()));
-- A digest schedule is the owner's own preference, so owners manage it directly: for their own
-- recipients, and only with a group of their own (else a digest could carry another owner's
-- group content to them).
create policy digest_schedules_owner_all on digest_schedules
  for all to authenticated
  using (recipient_id in (select notifier_owned_recipient_ids()))
  with check (recipient_id in (select notifier_owned_recipient_ids())
              and (group_id is null or notifier_owns_group(group_id)));

revoke all on notification_jobs, notification_delivery_logs, notification_preferences_cache,
  digest_schedules, notifier_schema_migrations from public, anon, authenticated;
grant select on notification_jobs, notification_delivery_logs, notification_preferences_cache
  to authenticated;
grant select, insert, update, delete on digest_schedules to authenticated;
grant all on notification_jobs, notification_delivery_logs, notification_preferences_cache,
  digest_schedules, notifier_schema_migrations to service_role;

-- Functions: nobody by default (Supabase grants execute on new functions to anon and
-- authenticated through default privileges, so revoke from them explicitly). Later migrations
-- call the same procedure for the functions they add.
create or replace procedure notifier_restrict_to_service_role(variadic p_names text[])
language plpgsql set search_path = public, pg_temp as $$
declare
  f record;
begin
  for f in
    select p.oid::regprocedure as sig from pg_proc p
     where p.pronamespace = 'public'::regnamespace and p.proname = any(p_names) and p.prokind = 'f'
  loop
    execute format('revoke all on function %s from public, anon, authenticated', f.sig);
    execute format('grant execute on function %s to service_role', f.sig);
  end loop;
end
$$;
revoke all on procedure notifier_restrict_to_service_role(text[]) from public, anon, authenticated;

call notifier_restrict_to_service_role(
  'enqueue_notification_job', 'claim_notification_jobs', 'start_notification_attempts',
  'release_notification_claims', 'notifier_log_attempt', 'complete_notification_job',
  'retry_notification_job', 'fail_notification_job', 'skip_notification_job',
  'defer_notification_job', 'release_expired_notification_leases', 'cancel_notification_job',
  'cleanup_notification_data', 'create_digest_jobs', 'notification_jobs_notify_due',
  'notifier_owned_recipient_ids', 'notifier_owns_group', 'notifier_caller_is_end_user',
  'record_unknown_notification_outcome', 'notification_urgency_rank',
  'notification_content_max_bytes', 'notifier_claims_paused', 'notification_enqueue_status');

-- End users: enqueue for their own recipients, cancel their own pending jobs. The helpers the
-- policies and enqueue call must be executable by them too.
grant execute on function enqueue_notification_job(uuid, uuid, uuid, varchar, varchar, varchar, jsonb, integer, text)
  to authenticated;
grant execute on function cancel_notification_job(uuid) to authenticated;
grant execute on function notifier_owned_recipient_ids() to authenticated;
grant execute on function notifier_owns_group(uuid) to authenticated;
