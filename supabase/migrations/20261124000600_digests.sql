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
-- Unchecked: the caller has validated the rule (digest_schedule_problem), since the time zone
-- check costs ~35 ms for names with a digit and the pass would pay it for every schedule.
create or replace function digest_next_run_unchecked(
  p_frequency text, p_delivery_time time, p_delivery_day integer, p_timezone text,
  p_after timestamptz
) returns timestamptz
language plpgsql stable set search_path = public, pg_temp as $$
declare
  v_today date;
  v_month date;
  v_day date;
  v_candidate timestamptz;
begin
  if p_frequency is null or p_frequency not in ('daily', 'weekly', 'monthly')
     or p_delivery_time is null or (p_frequency <> 'daily' and p_delivery_day is null) then
    raise exception 'digest_next_run_unchecked needs a valid rule, got % at % on day %',
      coalesce(p_frequency, 'NULL'), coalesce(p_delivery_time::text, 'NULL'),
      coalesce(p_delivery_day::text, 'NULL') using errcode = '22023';
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

-- digest_next_run_unchecked after validating the rule: refuses an invalid one (errcode 22023,
-- the message naming the field).
create or replace function digest_next_run(
  p_frequency text, p_delivery_time time, p_delivery_day integer, p_timezone text,
  p_after timestamptz
) returns timestamptz
language plpgsql stable set search_path = public, pg_temp as $$
declare
  v_problem text := digest_schedule_problem(p_frequency, p_delivery_time, p_delivery_day,
                                            p_timezone, null, null);
begin
  if v_problem is not null then
    raise exception '%', v_problem using errcode = '22023';
  end if;
  return digest_next_run_unchecked(p_frequency, p_delivery_time, p_delivery_day, p_timezone,
                                   p_after);
end
$$;

-- Refuses an invalid schedule (errcode 22023, message naming the field) and keeps
-- next_digest_scheduled in step with the rule: computed on insert when not given, and again
-- when the rule changes or it is set to null. A parked schedule (digest_settings.last_error,
-- set by the migration or the pass) stays null, never due, until its rule changes or the
-- owner removes last_error. Only the fields validation reads trigger it, so parking a legacy
-- invalid schedule (a digest_settings change) is not refused. SECURITY DEFINER so that
-- owners, who write their schedules directly under RLS, need no execute right on the helpers.
create or replace function digest_schedules_check() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_problem text;
  v_rule_changed boolean := tg_op = 'INSERT'
    or (new.frequency, new.delivery_time, new.delivery_day, new.timezone)
       is distinct from (old.frequency, old.delivery_time, old.delivery_day, old.timezone);
  v_validated boolean := false;
begin
  if v_rule_changed or new.max_updates_per_digest is distinct from old.max_updates_per_digest
     or new.digest_settings ->> 'delivery_method' is distinct from old.digest_settings ->> 'delivery_method'
     or (coalesce(old.digest_settings ? 'last_error', false)  -- unparked: corrected?
         and not coalesce(new.digest_settings ? 'last_error', false)) then
    v_problem := digest_schedule_problem(new.frequency, new.delivery_time, new.delivery_day,
      new.timezone, new.max_updates_per_digest, new.digest_settings);
    if v_problem is not null then
      raise exception 'invalid digest schedule: %', v_problem using errcode = '22023';
    end if;
    v_validated := true;
  end if;
  if tg_op = 'UPDATE' and v_rule_changed then
    new.digest_settings := new.digest_settings - 'last_error' - 'last_error_at';
  end if;
  if (new.next_digest_scheduled is null and not coalesce(new.digest_settings ? 'last_error', false))
     or (tg_op = 'UPDATE' and v_rule_changed
         and new.next_digest_scheduled is not distinct from old.next_digest_scheduled) then
    new.next_digest_scheduled := case
      when v_validated then digest_next_run_unchecked(new.frequency, new.delivery_time,
                                new.delivery_day, new.timezone, now())
      else digest_next_run(new.frequency, new.delivery_time, new.delivery_day, new.timezone, now())
    end;
  end if;
  return new;
end
$$;

drop trigger if exists digest_schedules_check on digest_schedules;

-- Schedules from before notifier, while no trigger runs. Invalid ones, even those the original
-- system gave a next delivery, are parked: next_digest_scheduled null (never due) and the
-- reason in digest_settings.last_error, until they are corrected. Valid ones lacking a next
-- delivery get one.
update digest_schedules s
   set next_digest_scheduled = null,
       digest_settings = coalesce(s.digest_settings, '{}') || jsonb_build_object(
         'last_error', 'invalid digest schedule: ' || p.problem, 'last_error_at', now())
  from (select d.id, digest_schedule_problem(d.frequency, d.delivery_time, d.delivery_day,
                       d.timezone, null, d.digest_settings) as problem
          from digest_schedules d) p
 where p.id = s.id and p.problem is not null;
update digest_schedules s
   set next_digest_scheduled = digest_next_run_unchecked(s.frequency, s.delivery_time,
         s.delivery_day, s.timezone, now())
 where s.next_digest_scheduled is null and not coalesce(s.digest_settings ? 'last_error', false);

-- One recipient-wide schedule per recipient and frequency: the original unique constraint
-- treats null group_ids as distinct, so two could coexist and send two digests per period.
-- Existing duplicates keep the oldest active one (a valid one before a parked one); the others
-- are deactivated, with a note. Inactive rows are outside the index, so no row is deleted.
update digest_schedules s
   set is_active = false,
       digest_settings = coalesce(s.digest_settings, '{}') || jsonb_build_object(
         'deactivated_reason', format('duplicate recipient-wide %s schedule; %s is kept',
                                      s.frequency, k.kept))
  from (select d.id, first_value(d.id) over w as kept
          from digest_schedules d
         where d.group_id is null and d.is_active is not false
        window w as (partition by d.recipient_id, d.frequency
                      order by coalesce(d.digest_settings ? 'last_error', false), d.created_at, d.id)) k
 where k.id = s.id and k.id <> k.kept;
create unique index if not exists digest_schedules_one_recipient_wide_idx
  on digest_schedules (recipient_id, frequency) where group_id is null and is_active is not false;

create trigger digest_schedules_check
  before insert or update of frequency, delivery_time, delivery_day, timezone,
    max_updates_per_digest, digest_settings, next_digest_scheduled on digest_schedules
  for each row execute function digest_schedules_check();

-- Whether a live schedule (active, with a next delivery) will carry a held job of this
-- recipient and group: the group's own, or else the recipient-wide one. The same rule the
-- pass uses to pick items, so a job is held only when a digest will come for it.
create or replace function digest_schedule_covers(p_recipient_id uuid, p_group_id uuid)
returns boolean
language sql stable set search_path = public, pg_temp as $$
  select exists (
    select 1 from digest_schedules s
     where s.recipient_id = p_recipient_id and s.is_active is not false
       and s.next_digest_scheduled is not null
       and (s.group_id = p_group_id
            or (s.group_id is null and not exists (
                  select 1 from digest_schedules o
                   where o.recipient_id = p_recipient_id and o.group_id = p_group_id
                     and o.is_active is not false and o.next_digest_scheduled is not null))))
$$;

-- Whether a new job waits for a digest instead of going out on its own, which needs a live
-- schedule to carry it (digest_schedule_covers); without one it goes out at once rather than
-- wait for a digest that never comes:
-- * type 'digest' without a ready-made `content.items` list: it is a digest item;
-- * type 'immediate', not urgent, for a recipient whose effective frequency (the group's
--   preferences row, else the recipient's default row) is not 'immediate'.
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
  end
  and digest_schedule_covers(p_recipient_id, p_group_id)
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
-- Each schedule runs in its own subtransaction: one that fails (a legacy rule that cannot be
-- computed, a group of another owner) is parked, next_digest_scheduled null and the reason in
-- digest_settings.last_error, and the pass goes on with the others.
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
  v_error text;
begin
  for s in
    select * from digest_schedules d
     where d.is_active is not false and d.next_digest_scheduled <= now()
     order by d.next_digest_scheduled
     for update skip locked
  loop
    begin
      -- Schedules made under the original, too wide policy may name another owner's group,
      -- whose name the digest would show.
      if s.group_id is not null and not exists (
           select 1 from recipient_groups g join recipients r on r.parent_id = g.parent_id
            where g.id = s.group_id and r.id = s.recipient_id) then
        raise exception 'group % does not belong to the owner of recipient %',
          s.group_id, s.recipient_id;
      end if;
      -- Parked, yet given a next delivery by hand: its rule was never revalidated, stay parked.
      if s.digest_settings ? 'last_error' then
        raise exception '%', s.digest_settings ->> 'last_error';
      end if;
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
                           and o.is_active is not false and o.next_digest_scheduled is not null)))
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
          end if;
        end if;
      end if;

      update digest_schedules
         set next_digest_scheduled = digest_next_run_unchecked(s.frequency, s.delivery_time,
               s.delivery_day, s.timezone, now()),
             last_digest_sent = case when v_job_id is null then last_digest_sent else now() end,
             updated_at = now()
       where id = s.id;
      -- Last, so a failure above never counts a digest that was rolled back.
      v_created := v_created + (v_job_id is not null)::integer;
    exception when others then
      v_error := sqlerrm;
      raise warning 'digest schedule % parked: %', s.id, v_error;
      update digest_schedules
         set next_digest_scheduled = null,
             digest_settings = coalesce(digest_settings, '{}') || jsonb_build_object(
               'last_error', v_error, 'last_error_at', now()),
             updated_at = now()
       where id = s.id;
    end;
  end loop;
  return v_created;
end
$$;

-- Removes jobs in a terminal state (and, by cascade, their delivery logs) older than
-- p_days_to_keep days, 'digested' items that old once their digest job is terminal too (or
-- gone), and expired preference cache rows. Held, pending and in-flight jobs are never
-- removed. Returns the number of jobs removed.
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
  'digest_next_run', 'digest_next_run_unchecked', 'digest_schedules_check',
  'digest_schedule_covers', 'digest_holds_job', 'notification_enqueue_status',
  'create_digest_jobs', 'cleanup_notification_data');
