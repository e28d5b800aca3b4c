-- Digests (docs/digests.md): jobs for recipients who chose a digest are held, and a pass
-- (create_digest_jobs, run by `notifier scheduler` or pg_cron) bundles each schedule's held
-- jobs into one digest job at the schedule's local delivery time. The schedule arithmetic
-- lives here, in SQL only, so the Python scheduler and a pg_cron call cannot disagree.

-- Two notifier-only statuses: 'held' (waiting for a digest) and 'digested' (carried by the
-- digest job in digest_job_id; terminal). `notifier handback` must map them back, see docs.
alter table notification_jobs drop constraint if exists notification_jobs_status_check;
alter table notification_jobs add constraint notification_jobs_status_check
  check (status in ('pending', 'queued', 'processing', 'sent', 'failed', 'skipped', 'cancelled',
                    'held', 'digested'));
-- A carried item points at its digest; the item stays readable if the digest is cleaned up.
alter table notification_jobs add column if not exists digest_job_id uuid
  references notification_jobs (id) on delete set null;

-- The pass: the held items of one recipient, oldest first.
create index if not exists notification_jobs_held_idx on notification_jobs (recipient_id, created_at)
  where status = 'held';
-- The digest_job_id foreign key's ON DELETE SET NULL, and "what did digest X carry".
create index if not exists notification_jobs_digest_job_idx on notification_jobs (digest_job_id)
  where digest_job_id is not null;
-- The pass: active schedules that are due.
create index if not exists digest_schedules_due_idx on digest_schedules (next_digest_scheduled)
  where is_active is not false;

-- Why a time zone name cannot drive a schedule, or null when it can. Accepted: tz database
-- names (Europe/Berlin, UTC). Refused: unknown names, POSIX strings (UTC+3 means UTC-3 there),
-- and abbreviations (CET, EST): PostgreSQL's AT TIME ZONE reads those as fixed offsets, so a
-- 'CET' schedule would ignore summer time. pg_timezone_names costs ~40 ms per lookup, so it is
-- consulted only for names with a digit, the one shape a POSIX string must have.
create or replace function digest_time_zone_problem(p_timezone text) returns text
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
begin
  if p_timezone is null or btrim(p_timezone) = '' then
    return 'timezone is required: an IANA time zone name such as Europe/Berlin';
  end if;
  if upper(p_timezone) not in ('UTC', 'GMT')
     and exists (select 1 from pg_timezone_abbrevs a where a.abbrev = upper(p_timezone)) then
    return format('timezone %L is a fixed-offset abbreviation that ignores daylight saving time; '
                  'use an IANA time zone name such as Europe/Berlin', p_timezone);
  end if;
  begin
    perform now() at time zone p_timezone;
  exception when invalid_parameter_value then
    return format('timezone %L is not an IANA time zone name such as Europe/Berlin', p_timezone);
  end;
  if p_timezone ~ '[0-9]'
     and not exists (select 1 from pg_timezone_names n where n.name = p_timezone) then
    return format('timezone %L is a POSIX offset, not an IANA time zone name; for a fixed offset '
                  'use Etc/GMT-3 style names (sign inverted) or better a city such as Europe/Berlin',
                  p_timezone);
  end if;
  return null;
end
$$;

-- Why a schedule is invalid, or null when it is valid. delivery_day: ISO weekday 1 (Monday)
-- to 7 (Sunday) for weekly, day of month 1 to 31 for monthly (clamped to the month's last
-- day), ignored for daily.
create or replace function digest_schedule_problem(
  p_frequency text, p_delivery_time time, p_delivery_day integer, p_timezone text,
  p_max_updates_per_digest integer, p_digest_settings jsonb
) returns text
language plpgsql stable set search_path = public, pg_temp as $$
declare
  v_method text := p_digest_settings ->> 'delivery_method';
begin
  if p_frequency is null or p_frequency not in ('daily', 'weekly', 'monthly') then
    return format('frequency %s is not daily, weekly or monthly', coalesce(quote_literal(p_frequency), 'NULL'));
  end if;
  if p_delivery_time is null then
    return 'delivery_time is required';
  end if;
  if p_frequency = 'weekly' and (p_delivery_day is null or p_delivery_day not between 1 and 7) then
    return format('a weekly digest needs delivery_day 1 (Monday) to 7 (Sunday), got %s',
                  coalesce(p_delivery_day::text, 'NULL'));
  end if;
  if p_frequency = 'monthly' and (p_delivery_day is null or p_delivery_day not between 1 and 31) then
    return format('a monthly digest needs delivery_day 1 to 31 (a day past the end of a month '
                  'means its last day), got %s', coalesce(p_delivery_day::text, 'NULL'));
  end if;
  if p_max_updates_per_digest is not null and p_max_updates_per_digest not between 1 and 1000 then
    return format('max_updates_per_digest must be 1 to 1000, got %s', p_max_updates_per_digest);
  end if;
  if v_method is not null and v_method not in ('email', 'sms', 'whatsapp', 'push') then
    return format('digest_settings.delivery_method %L is not email, sms, whatsapp or push', v_method);
  end if;
  return digest_time_zone_problem(p_timezone);
end
$$;

-- The instant a local wall-clock time names in a zone. PostgreSQL's `timestamp AT TIME ZONE`
-- (checked on 15: docs/digests.md) reads a time in a spring-forward gap with the offset from
-- before the gap (Berlin 02:30 → 03:30 CEST) and an ambiguous fall-back time as the second,
-- standard-time occurrence. Wanted instead: a gap time moves to the first instant after the
-- gap (03:00 CEST), an ambiguous time means its first occurrence.
create or replace function digest_local_to_instant(p_local timestamp, p_timezone text)
returns timestamptz
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
declare
  v_guess timestamptz := p_local at time zone p_timezone;
  v_offsets interval[];
  v_first timestamptz;
  v_lo bigint;
  v_hi bigint;
  v_mid bigint;
begin
  -- The offsets in force a day either side of the guess (zone transitions are months apart).
  -- Every instant whose local time is p_local is p_local minus one of them.
  select array_agg((t at time zone p_timezone) - (t at time zone 'UTC')) into v_offsets
    from unnest(array[v_guess - interval '1 day', v_guess, v_guess + interval '1 day']) t;
  select min(c) into v_first
    from (select (p_local - o) at time zone 'UTC' as c from unnest(v_offsets) o) candidates
   where (c at time zone p_timezone) = p_local;
  if v_first is not null then
    return v_first;
  end if;
  -- A gap: return the transition, the first whole second whose local time is at or after
  -- p_local. Invariant: local(v_lo) < p_local <= local(v_hi).
  v_lo := floor(extract(epoch from (p_local - (select max(o) from unnest(v_offsets) o)) at time zone 'UTC'));
  v_hi := ceil(extract(epoch from (p_local - (select min(o) from unnest(v_offsets) o)) at time zone 'UTC'));
  while v_hi - v_lo > 1 loop
    v_mid := (v_lo + v_hi) / 2;
    if (to_timestamp(v_mid) at time zone p_timezone) >= p_local then
      v_hi := v_mid;
    else
      v_lo := v_mid;
    end if;
  end loop;
  return to_timestamp(v_hi);
end
$$;

-- The schedule's first delivery strictly after p_after: daily at p_delivery_time, weekly on
-- ISO weekday p_delivery_day, monthly on day p_delivery_day (clamped to the month's last day),
-- all in local time of p_timezone. Computed from the rule, never from when a pass ran, so
-- deliveries do not drift, and after downtime the next one is simply the next in the future.
create or replace function digest_next_run(
  p_frequency text, p_delivery_time time, p_delivery_day integer, p_timezone text,
  p_after timestamptz
) returns timestamptz
language plpgsql stable set search_path = public, pg_temp as $$
declare
  v_problem text := digest_schedule_problem(p_frequency, p_delivery_time, p_delivery_day,
                                            p_timezone, null, null);
  v_today date;
  v_month date;
  v_day date;
  v_candidate timestamptz;
begin
  if v_problem is not null then
    raise exception '%', v_problem using errcode = '22023';
  end if;
  if p_after is null then
    raise exception 'digest_next_run needs the instant to start from' using errcode = '22023';
  end if;
  v_today := (p_after at time zone p_timezone)::date;
  -- Candidates in time order, from the period before p_after's local date (a gap can push
  -- a delivery past midnight) to two periods after it; the first one after p_after wins.
  for k in -1..2 loop
    if p_frequency = 'daily' then
      v_day := v_today + k;
    elsif p_frequency = 'weekly' then
      v_day := v_today - extract(isodow from v_today)::integer + p_delivery_day + 7 * k;
    else
      v_month := (date_trunc('month', v_today) + make_interval(months => k))::date;
      v_day := v_month + least(p_delivery_day,
        extract(day from v_month + interval '1 month' - interval '1 day')::integer) - 1;
    end if;
    v_candidate := digest_local_to_instant(v_day + p_delivery_time, p_timezone);
    if v_candidate > p_after then
      return v_candidate;
    end if;
  end loop;
  raise exception 'no digest time after % for % schedule', p_after, p_frequency;
end
$$;

-- Refuses an invalid schedule (errcode 22023, message naming the field) and keeps
-- next_digest_scheduled in step with the rule: computed on insert when not given, and again
-- when the rule changes or it is set to null. SECURITY DEFINER so that owners, who write their
-- schedules directly under RLS, need no execute right on the helpers it calls.
create or replace function digest_schedules_check() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_problem text;
  v_rule_changed boolean := tg_op = 'INSERT'
    or (new.frequency, new.delivery_time, new.delivery_day, new.timezone)
       is distinct from (old.frequency, old.delivery_time, old.delivery_day, old.timezone);
begin
  if v_rule_changed or new.max_updates_per_digest is distinct from old.max_updates_per_digest
     or new.digest_settings is distinct from old.digest_settings then
    v_problem := digest_schedule_problem(new.frequency, new.delivery_time, new.delivery_day,
      new.timezone, new.max_updates_per_digest, new.digest_settings);
    if v_problem is not null then
      raise exception 'invalid digest schedule: %', v_problem using errcode = '22023';
    end if;
  end if;
  if new.next_digest_scheduled is null
     or (tg_op = 'UPDATE' and v_rule_changed
         and new.next_digest_scheduled is not distinct from old.next_digest_scheduled) then
    new.next_digest_scheduled := digest_next_run(new.frequency, new.delivery_time,
      new.delivery_day, new.timezone, now());
  end if;
  return new;
end
$$;

-- Schedules from before notifier: compute the next delivery of each valid one still lacking
-- it. Invalid ones keep a null next_digest_scheduled (never due) until they are corrected.
update digest_schedules s
   set next_digest_scheduled = digest_next_run(s.frequency, s.delivery_time, s.delivery_day,
         s.timezone, now())
 where s.next_digest_scheduled is null
   and digest_schedule_problem(s.frequency, s.delivery_time, s.delivery_day, s.timezone,
         null, s.digest_settings) is null;

drop trigger if exists digest_schedules_check on digest_schedules;
create trigger digest_schedules_check
  before insert or update of frequency, delivery_time, delivery_day, timezone,
    max_updates_per_digest, digest_settings, next_digest_scheduled on digest_schedules
  for each row execute function digest_schedules_check();

-- Whether a new job waits for a digest instead of going out on its own:
-- * type 'digest' without a ready-made `content.items` list: it is a digest item;
-- * type 'immediate', not urgent, for a recipient whose effective frequency (the group's
--   preferences row, else the recipient's default row) is not 'immediate', when an active
--   schedule will carry it (the group's, else the recipient's default one). Without such a
--   schedule it goes out at once rather than wait for a digest that never comes.
-- Milestones and urgent jobs are never held.
create or replace function digest_holds_job(
  p_recipient_id uuid, p_group_id uuid, p_notification_type varchar, p_urgency_level varchar,
  p_content jsonb
) returns boolean
language sql stable set search_path = public, pg_temp as $$
  select case
    when p_notification_type = 'digest' then coalesce(jsonb_typeof(p_content -> 'items'), '') <> 'array'
    when p_notification_type <> 'immediate' or p_urgency_level = 'urgent' then false
    else coalesce((select p.effective_frequency <> 'immediate'
                     from notification_preferences_cache p
                    where p.recipient_id = p_recipient_id
                      and (p.group_id = p_group_id or p.group_id is null)
                    order by (p.group_id is null)  -- a group-specific row wins
                    limit 1), false)
         and exists (select 1 from digest_schedules s
                      where s.recipient_id = p_recipient_id and s.is_active is not false
                        and (s.group_id = p_group_id or s.group_id is null))
  end
$$;

-- Digest items start `held` instead of `pending` (the extension point of
-- 20261124000400_job_functions.sql, which enqueue_notification_job calls).
create or replace function notification_enqueue_status(
  p_recipient_id uuid, p_group_id uuid, p_notification_type varchar, p_urgency_level varchar,
  p_content jsonb
) returns varchar
language sql stable security definer set search_path = public, pg_temp as $$
  select case when digest_holds_job(p_recipient_id, p_group_id, p_notification_type,
                                    p_urgency_level, p_content)
              then 'held' else 'pending' end::varchar
$$;

-- The digest pass. For each active schedule that is due (locked with SKIP LOCKED, so
-- concurrent passes share the work instead of repeating it):
-- * muted or inactive recipient: no digest, items stay held;
-- * else its held items (the group's; a recipient-wide schedule also takes groups that have
--   no schedule of their own), due, oldest first, up to max_updates_per_digest: items whose
--   content_type the schedule does not include are skipped, the rest go into one digest job
--   and become 'digested'; items beyond the limit wait for the next digest;
-- * the schedule advances to its next delivery after now, with or without a digest.
-- The digest job's idempotency key names the schedule and period, so even a schedule reset to
-- an earlier period never gets two digests for it. Returns the number of digests created.
create or replace function create_digest_jobs() returns integer
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  s digest_schedules;
  v_created integer := 0;
  v_skip boolean;
  v_items uuid[];
  v_content jsonb;
  v_job_id uuid;
begin
  for s in
    select * from digest_schedules d
     where d.is_active is not false and d.next_digest_scheduled <= now()
     order by d.next_digest_scheduled
     for update skip locked
  loop
    select coalesce(p.is_muted, false) and (p.muted_until is null or p.muted_until > now())
      into v_skip
      from notification_preferences_cache p
     where p.recipient_id = s.recipient_id and (p.group_id = s.group_id or p.group_id is null)
     order by (p.group_id is null)  -- a group-specific row wins over the recipient default
     limit 1;
    v_skip := coalesce(v_skip, false) or not coalesce(
      (select (to_jsonb(r) ->> 'is_active')::boolean from recipients r where r.id = s.recipient_id),
      true);
    v_job_id := null;

    if not v_skip then
      with candidates as (
        select j.id, j.created_at, j.content ->> 'content_type' as content_type
          from notification_jobs j
         where j.status = 'held' and j.recipient_id = s.recipient_id and j.scheduled_for <= now()
           and (j.group_id is not distinct from s.group_id
                or (s.group_id is null and not exists (
                      select 1 from digest_schedules o
                       where o.recipient_id = j.recipient_id and o.group_id = j.group_id
                         and o.is_active is not false)))
         order by j.created_at, j.id
         for update of j skip locked
      ), excluded as (
        update notification_jobs j
           set status = 'skipped', processed_at = now(), updated_at = now(),
               failure_reason = format('content type %s is not in the %s digest''s include_content_types',
                                       c.content_type, s.frequency)
          from candidates c
         where j.id = c.id and c.content_type is not null and s.include_content_types is not null
           and not (c.content_type = any (s.include_content_types))
      )
      select array_agg(c.id order by c.created_at, c.id) into v_items
        from (select c.id, c.created_at from candidates c
               where c.content_type is null or s.include_content_types is null
                  or c.content_type = any (s.include_content_types)
               order by c.created_at, c.id
               limit coalesce(s.max_updates_per_digest, 10)) c;

      if v_items is not null then
        select jsonb_build_object(
                 'items', jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                   'job_id', j.id,
                   'subject', j.content ->> 'subject',
                   'body', case when length(j.content ->> 'body') > 300
                                then left(j.content ->> 'body', 299) || '…'
                                else j.content ->> 'body' end,
                   'occurred_at', to_char(j.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                   'notification_type', j.notification_type,
                   'content_type', j.content ->> 'content_type',
                   'url', j.content ->> 'url'))
                   order by j.created_at, j.id),
                 'item_count', count(*),
                 'frequency', s.frequency)
          into v_content
          from notification_jobs j where j.id = any (v_items);

        insert into notification_jobs (recipient_id, group_id, notification_type, urgency_level,
          delivery_method, status, content, metadata, scheduled_for, idempotency_key)
        values (s.recipient_id, s.group_id, 'digest', 'normal',
          case when s.digest_settings ->> 'delivery_method' in ('email', 'sms', 'whatsapp', 'push')
               then s.digest_settings ->> 'delivery_method' else 'email' end,
          'pending', v_content,
          jsonb_build_object('digest_schedule_id', s.id, 'digest_period', s.next_digest_scheduled),
          -- UTC text: the session's TimeZone must not change the key of the same period.
          now(), format('digest:%s:%s', s.id,
                        to_char(s.next_digest_scheduled at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
        on conflict (recipient_id, idempotency_key) where idempotency_key is not null do nothing
        returning id into v_job_id;

        if v_job_id is not null then
          update notification_jobs
             set status = 'digested', digest_job_id = v_job_id, processed_at = now(),
                 updated_at = now()
           where id = any (v_items);
          v_created := v_created + 1;
        end if;
      end if;
    end if;

    update digest_schedules
       set next_digest_scheduled = digest_next_run(s.frequency, s.delivery_time, s.delivery_day,
             s.timezone, now()),
           last_digest_sent = case when v_job_id is null then last_digest_sent else now() end,
           updated_at = now()
     where id = s.id;
  end loop;
  return v_created;
end
$$;

-- As in 20261124000400, plus carried digest items: removes jobs in a terminal state older than
-- p_days_to_keep days, and 'digested' items that old once their digest job is terminal too (or
-- gone). Held, pending and in-flight jobs are never removed. Returns the number of jobs removed.
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
  delete from notification_preferences_cache
   where cache_expires_at < now() - make_interval(days => p_days_to_keep);
  return v_deleted;
end
$$;

-- Functions: service_role only (Supabase's default privileges would give new functions to
-- anon and authenticated). The schedule trigger runs as its owner, so owners need nothing here.
call notifier_restrict_to_service_role(
  'digest_time_zone_problem', 'digest_schedule_problem', 'digest_local_to_instant',
  'digest_next_run', 'digest_schedules_check', 'digest_holds_job', 'notification_enqueue_status',
  'create_digest_jobs', 'cleanup_notification_data');
