-- First-run fixes: cleanup keeps people's preferences; enqueue refuses what the
-- worker could never deliver.
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


-- Refuse at enqueue what the worker could never deliver, with the worker's own words:
-- `delivery_method => 'push'` (no push provider exists) and, for immediate and milestone jobs,
-- content without a non-blank `body` (their templates need it). Everything else is the
-- definition of 20261124000400_job_functions.sql unchanged: same signature (so the grants of
-- 20261124000500 stay), validation order, the notification_enqueue_status extension point
-- (digests hold items) and the idempotency behaviour (a repeated key returns the first job).
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
  if p_delivery_method = 'push' then
    -- Allowed by the table (the original schema has it), but no provider sends it yet.
    raise exception 'delivery method push is not supported' using errcode = '22023';
  end if;
  if p_delivery_method is null or p_delivery_method not in ('email', 'sms', 'whatsapp') then
    raise exception 'unknown delivery_method %: expected email, sms or whatsapp',
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

  -- The worker's rule (notifier/pipeline/render.py REQUIRED_CONTENT): immediate and milestone
  -- templates need content.body present, not null and, when a string, not blank. Same words.
  if p_notification_type in ('immediate', 'milestone')
     and (p_content -> 'body' is null or jsonb_typeof(p_content -> 'body') = 'null'
          or (jsonb_typeof(p_content -> 'body') = 'string' and p_content ->> 'body' ~ '^\s*$')) then
    raise exception 'template %/%.% needs ''content.body'', which the job does not have',
      case when p_delivery_method = 'email' then 'email' else 'sms' end, p_notification_type,
      case when p_delivery_method = 'email' then 'html' else 'txt' end
      using errcode = '22023';
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
