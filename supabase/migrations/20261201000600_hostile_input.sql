-- Hostile input: who is an end user is decided by the session role, not by JWT
-- claims anyone can set; enqueue bounds JSON nesting, refuses a non-string subject, checks the
-- update id against the caller, and answers an end user the same for a recipient, group or
-- update that does not exist and one of another owner (no existence oracle).

-- Deepest accepted `content` (1 = a flat object), documented in docs/reliability.md. JSON nested
-- thousands of levels deep fits in 64 KiB, and the worker's JSON decoder gives up on it while
-- reading the job; real content (a body, a subject, digest items with metadata) needs a handful.
create or replace function notification_content_max_depth() returns integer
language sql immutable set search_path = pg_catalog as $$ select 32 $$;

-- Nesting depth of a JSON value, counting no further than p_limit + 1 (so a deep document
-- costs no more than a shallow one of the same size). Scalars are depth 0.
create or replace function notifier_jsonb_depth(p_value jsonb, p_limit integer)
returns integer
language sql immutable set search_path = pg_catalog as $$
  with recursive walk(v, d) as (
    select p_value, case when jsonb_typeof(p_value) in ('object', 'array') then 1 else 0 end
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
  select max(d) from walk
$$;

-- A role acts for an end user when it is (or inherits) anon or authenticated without being (or
-- inheriting) service_role. Superusers are members of every role, so they are not end users;
-- neither is Supabase's `postgres`, which is granted service_role.
create or replace function notifier_role_is_end_user(p_role text) returns boolean
language sql stable set search_path = pg_catalog as $$
  select case
    when p_role is null or not exists (select 1 from pg_roles where rolname = p_role) then false
    when pg_has_role(p_role, 'service_role', 'member') then false
    else pg_has_role(p_role, 'authenticated', 'member') or pg_has_role(p_role, 'anon', 'member')
  end
$$;

-- Decided by the session role first (`SET ROLE`, what PostgREST does), then the login role; the
-- JWT claims only ever make a caller *more* restricted. Before, claims came first: a session
-- with role `authenticated` could `set_config('request.jwt.claims', '{"role":"service_role"}')`
-- and act on every owner's jobs. Same signature: callers and grants are unchanged.
create or replace function notifier_caller_is_end_user() returns boolean
language sql stable set search_path = pg_catalog, public as $$
  select case
    when coalesce(current_setting('role', true), 'none') <> 'none'
      then notifier_role_is_end_user(current_setting('role', true))
    when notifier_role_is_end_user(session_user::text) then true
    else coalesce(auth.role() <> 'service_role', false)
  end
$$;

-- The definition of 20261124000400_job_functions.sql, plus: what the worker could never deliver
-- is refused in the worker's own words (`delivery_method => 'push'`: no push provider exists;
-- immediate and milestone content without a non-blank `body`: their templates need it); a
-- nesting bound on `content`; a string (or absent) `content.subject`; and, for end users, one
-- answer for "does not exist" and "not yours" for the recipient, the group and the update
-- (whose owner is now checked: deleting another owner's memory used to cascade into this job).
-- Validation order, the notification_enqueue_status extension point (digests hold items) and
-- the idempotency behaviour are unchanged. Same signature, so the grants of 20261124000500 stay.
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
  v_update_owner uuid;
  v_job_id uuid;
  v_end_user boolean := notifier_caller_is_end_user();
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
  if notifier_jsonb_depth(p_content, notification_content_max_depth()) > notification_content_max_depth() then
    raise exception 'content is nested more than % levels deep', notification_content_max_depth()
      using errcode = '22023';
  end if;
  if jsonb_typeof(p_content -> 'subject') not in ('string', 'null') then
    raise exception 'content.subject must be a string, got %', jsonb_typeof(p_content -> 'subject')
      using errcode = '22023';
  end if;
  if p_idempotency_key is not null and (length(p_idempotency_key) = 0 or length(p_idempotency_key) > 200) then
    raise exception 'idempotency_key must be 1 to 200 characters' using errcode = '22023';
  end if;

  select to_jsonb(r) into v_recipient from recipients r where r.id = p_recipient_id;
  if v_end_user
     and (v_recipient is null or auth.uid() is null
          or (v_recipient ->> 'parent_id')::uuid is distinct from auth.uid()) then
    raise exception 'recipient % does not exist or does not belong to the calling user',
      p_recipient_id using errcode = '42501';
  end if;
  if v_recipient is null then
    raise exception 'recipient % does not exist', p_recipient_id using errcode = '22023';
  end if;
  if not coalesce((v_recipient ->> 'is_active')::boolean, true) then
    raise exception 'recipient % is inactive', p_recipient_id using errcode = '22023';
  end if;
  if p_group_id is not null then
    select g.parent_id into v_group_owner from recipient_groups g where g.id = p_group_id;
    if v_end_user and (not found or v_group_owner is distinct from auth.uid()) then
      raise exception 'group % does not exist or does not belong to the calling user', p_group_id
        using errcode = '42501';
    end if;
    if not found then
      raise exception 'group % does not exist', p_group_id using errcode = '22023';
    end if;
    if v_group_owner is distinct from (v_recipient ->> 'parent_id')::uuid then
      raise exception 'recipient % and group % belong to different owners', p_recipient_id, p_group_id
        using errcode = '22023';
    end if;
  end if;
  if p_update_id is not null and v_end_user then
    select g.parent_id into v_update_owner
      from memories m join recipient_groups g on g.id = m.group_id where m.id = p_update_id;
    if not found or v_update_owner is distinct from auth.uid() then
      raise exception 'update % does not exist or does not belong to the calling user', p_update_id
        using errcode = '42501';
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

call notifier_restrict_to_service_role(
  'notification_content_max_depth', 'notifier_jsonb_depth', 'notifier_role_is_end_user');
