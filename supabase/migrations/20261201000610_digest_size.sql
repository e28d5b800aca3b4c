-- Digest size: create_digest_jobs copied each held item's subject in full (only the
-- body was cut), so one user's digest reached 65 MB and took a worker to 920 MB. Every digest is
-- now bounded: at most notification_digest_max_items() items (whatever a schedule's
-- max_updates_per_digest says), each item's subject cut to 200 characters, body to 300,
-- content_type to 100, a URL over 2,048 left out, and the items' JSON to
-- notification_digest_max_bytes() in all; items past the byte budget are digested and counted
-- ("…and N more"). So a digest's content stays under about 64 KiB. Documented in
-- docs/digests.md. The rest of create_digest_jobs is the definition of
-- 20261124000600_digests.sql unchanged (same signature, so its grants stay).

create or replace function notification_digest_max_items() returns integer
language sql immutable set search_path = pg_catalog as $$ select 100 $$;

create or replace function notification_digest_max_bytes() returns integer
language sql immutable set search_path = pg_catalog as $$ select 60000 $$;

-- `p_text` cut to `p_max` characters, ending in "…" when cut; NULL stays NULL.
create or replace function notifier_cut_text(p_text text, p_max integer) returns text
language sql immutable set search_path = pg_catalog as $$
  select case when length(p_text) > p_max then left(p_text, p_max - 1) || '…' else p_text end
$$;

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
                 limit least(coalesce(s.max_updates_per_digest, 10), notification_digest_max_items())) c;

        if v_items is not null then
          -- Bounded (see notification_digest_limits above): each item's text is cut, and
          -- items past the byte budget are digested but only counted: the templates show
          -- "…and N more" for item_count beyond the items listed. The first item always shows.
          select jsonb_build_object(
                   'items', coalesce(jsonb_agg(t.item order by t.created_at, t.id)
                                       filter (where t.running <= notification_digest_max_bytes()
                                                  or t.position = 1), '[]'::jsonb),
                   'item_count', count(*),
                   'frequency', s.frequency)
            into v_content
            from (select j.id, j.created_at, i.item,
                         row_number() over w as position,
                         sum(octet_length(i.item::text)) over w as running
                    from notification_jobs j
                    cross join lateral (select jsonb_strip_nulls(jsonb_build_object(
                      'job_id', j.id,
                      'subject', notifier_cut_text(j.content ->> 'subject', 200),
                      'body', notifier_cut_text(j.content ->> 'body', 300),
                      'occurred_at', to_char(j.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                      'notification_type', j.notification_type,
                      'content_type', notifier_cut_text(j.content ->> 'content_type', 100),
                      -- A cut URL would be a broken link: one too long is left out.
                      'url', case when length(j.content ->> 'url') <= 2048 then j.content ->> 'url' end
                    )) as item) i
                   where j.id = any (v_items)
                  window w as (order by j.created_at, j.id)) t;

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

call notifier_restrict_to_service_role(
  'notification_digest_max_items', 'notification_digest_max_bytes', 'notifier_cut_text');
