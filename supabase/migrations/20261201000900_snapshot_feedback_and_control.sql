-- The one snapshot: notifier_read_snapshot and the small reads it is made of.
--
-- notifier_read_snapshot is what /health, /metrics, `notifier status` and `notifier pause
-- --wait` read: the backlog always, and the other parts when asked for, in one statement (one
-- snapshot, one now()). Each part is the query notifier/store/queries.sql used to hold, turned
-- into a jsonb array of rows. It answers one row of two columns (a table, not a scalar: a bare
-- jsonb would read as a composite over PostgREST), so psycopg and PostgREST both give
-- `[{"snapshot": {...}, "read_at": ...}]`.
-- Every part is bounded by an index except job_counts (p_overview), which `notifier status`
-- alone asks for.
-- Provider events (delivery feedback, 20261201000400) are counted apart from attempts, with the
-- suppressions; the backlog also says whether the queue is handed back (so /health does not tell
-- an operator to resume, which is refused) and how many digest schedules are parked
-- (docs/digests.md).

-- Active digest schedules the pass parked (digest_settings.last_error): the scheduler logs
-- their number when it changes, so a parked schedule is never silent.
create or replace function notifier_parked_digest_schedules() returns integer
language sql stable security definer set search_path = public, pg_temp as $$
  select count(*)::integer from digest_schedules
   where is_active is not false and digest_settings ? 'last_error'
$$;

-- Provider events in a window by method, event and the status they added.
create or replace function notifier_snapshot_feedback(p_window interval) returns jsonb
language sql stable security definer set search_path = public, pg_temp as $$
  select coalesce(jsonb_agg(to_jsonb(q)), '[]') from (
    select delivery_method as method, provider_event as event, status, count(*) as n
      from notification_delivery_logs
     where delivery_time >= now() - p_window and provider_event is not null
     group by 1, 2, 3) q
$$;

-- Suppressed addresses by channel and source.
create or replace function notifier_snapshot_suppressions() returns jsonb
language sql stable security definer set search_path = public, pg_temp as $$
  select coalesce(jsonb_agg(to_jsonb(q)), '[]') from (
    select channel, source, count(*) as n from notification_suppressions group by 1, 2) q
$$;

create or replace function notifier_read_snapshot(
  p_flow boolean default false,
  p_window_seconds integer default null,
  p_overview boolean default false,
  p_top_reasons integer default 10,
  p_latency_bounds jsonb default '[]',
  p_duration_bounds jsonb default '[]'
) returns table (snapshot jsonb, read_at timestamptz)
language plpgsql stable security definer set search_path = public, pg_temp as $$
declare
  v_result jsonb;
  v_window interval := make_interval(secs => coalesce(p_window_seconds, 0));
begin
  -- The backlog: due now, in flight, failed in 24 h, paused. A plain read of notifier_control:
  -- notifier_claims_paused() locks the row (for claims), a reader must not.
  select jsonb_build_object(
           'due_now', due.n,
           'oldest_due_seconds', extract(epoch from now() - due.oldest)::float8,
           'queued', in_flight.queued,
           'processing', in_flight.processing,
           'failed_24h', failed.n,
           'paused', coalesce(control.paused, false),
           'paused_at', control.paused_at,
           'paused_by', control.paused_by,
           'paused_reason', control.reason,
           'handed_back', coalesce(control.handed_back, false),
           'parked_digest_schedules', parked.n)
    into v_result
    from (select count(*) as n, min(scheduled_for) as oldest from notification_jobs
           where status = 'pending' and scheduled_for <= now()) due
   cross join (select count(*) filter (where status = 'queued') as queued,
                      count(*) filter (where status = 'processing') as processing
                 from notification_jobs where status in ('queued', 'processing')) in_flight
   cross join (select count(*) as n from notification_jobs
                where status = 'failed' and processed_at >= now() - interval '24 hours') failed
   cross join (select count(*) as n from digest_schedules
                where is_active is not false and digest_settings ? 'last_error') parked  -- as notifier_parked_digest_schedules
    left join (select paused, paused_at, paused_by, reason, handed_back
                 from notifier_control where id) control
      on true;
  v_result := jsonb_build_object('backlog', v_result);

  if p_flow then
    v_result := v_result || jsonb_build_object(
      -- Pending jobs due now by method: how many, how many await a retry, the oldest's wait.
      'due_by_method', (select coalesce(jsonb_agg(to_jsonb(q)), '[]') from (
          select delivery_method as method, count(*) as n,
                 count(*) filter (where retry_count > 0) as awaiting_retry,
                 extract(epoch from now() - min(scheduled_for))::float8 as oldest_seconds
            from notification_jobs where status = 'pending' and scheduled_for <= now()
           group by delivery_method) q),
      -- Jobs finished in the last 24 h by status and method (notification_jobs_processed_idx).
      'finished_24h', (select coalesce(jsonb_agg(to_jsonb(q)), '[]') from (
          select status, delivery_method as method, count(*) as n from notification_jobs
           where processed_at >= now() - interval '24 hours' and processed_at is not null
           group by status, delivery_method) q));
  end if;

  if p_window_seconds is not null then
    v_result := v_result || jsonb_build_object(
      -- Jobs pending (due or scheduled), queued, processing or held now.
      'unfinished', (select coalesce(jsonb_agg(to_jsonb(q)), '[]') from (
          select 'pending' as status, delivery_method as method, count(*) as n
            from notification_jobs where status = 'pending' group by delivery_method
          union all
          select status, delivery_method, count(*) from notification_jobs
           where status in ('queued', 'processing', 'held') group by status, delivery_method) q),
      -- How long the oldest job held for a digest has waited (notification_jobs_held_idx).
      'oldest_held_seconds', (select extract(epoch from now() - min(created_at))::float8
                                from notification_jobs where status = 'held'),
      -- Delivery attempts in the window by provider, method and outcome, with retries.
      'deliveries', (select coalesce(jsonb_agg(to_jsonb(q)), '[]') from (
          select coalesce(provider, 'none') as provider, delivery_method as method,
                 status as outcome, count(*) as n, count(*) filter (where attempt > 1) as retries
            from notification_delivery_logs
           where delivery_time >= now() - v_window and provider_event is null
           group by 1, 2, 3) q),
      -- Provider events (webhooks) in the window by method, event and the log status they
      -- added: bounces, spam reports, unsubscribes, STOPs.
      'feedback', notifier_snapshot_feedback(v_window),
      -- Suppressed addresses by channel and source (a small table, read whole).
      'suppressions', notifier_snapshot_suppressions(),
      -- Cumulative counts per bucket (`<= le`, as Prometheus) of scheduled_for → accepted.
      'latency', (select coalesce(jsonb_agg(to_jsonb(q)), '[]') from (
          with d as (
            select l.provider, extract(epoch from l.delivery_time - j.scheduled_for)::float8 as seconds
              from notification_delivery_logs l join notification_jobs j on j.id = l.job_id
             where l.delivery_time >= now() - v_window
               and l.status = 'delivered' and l.provider is not null
               and l.provider_event is null)
          select d.provider, b.le::float8 as le, count(*) filter (where d.seconds <= b.le::float8) as n,
                 count(*) as total, sum(d.seconds) as seconds
            from d cross join jsonb_array_elements_text(p_latency_bounds) as b(le)
           group by d.provider, b.le) q),
      -- Cumulative counts per bucket of provider request time.
      'duration', (select coalesce(jsonb_agg(to_jsonb(q)), '[]') from (
          with d as (
            select provider, (delivery_duration_ms / 1000.0)::float8 as seconds
              from notification_delivery_logs
             where delivery_time >= now() - v_window
               and provider is not null and delivery_duration_ms is not null)
          select d.provider, b.le::float8 as le, count(*) filter (where d.seconds <= b.le::float8) as n,
                 count(*) as total, sum(d.seconds) as seconds
            from d cross join jsonb_array_elements_text(p_duration_bounds) as b(le)
           group by d.provider, b.le) q));
  end if;

  if p_overview then
    v_result := v_result || jsonb_build_object(
      -- Every job by status and method: a whole-table count, never a probe's.
      'job_counts', (select coalesce(jsonb_agg(to_jsonb(q)), '[]') from (
          select status, delivery_method as method, count(*) as n
            from notification_jobs group by status, delivery_method) q),
      -- The most common reasons among failed jobs, shortened to 160 characters.
      'top_failure_reasons', (select coalesce(jsonb_agg(to_jsonb(q)), '[]') from (
          select left(coalesce(failure_reason, '(no reason recorded)'), 160) as reason, count(*) as n
            from notification_jobs where status = 'failed'
           group by 1 order by 2 desc, 1 limit p_top_reasons) q),
      -- Average and p95 of provider time and of scheduled → delivered, last 24 h.
      'delivery_times', (select to_jsonb(q) from (
          with delivered as (
            select l.delivery_duration_ms::float8 as provider_ms,
                   extract(epoch from l.delivery_time - j.scheduled_for)::float8 * 1000 as latency_ms
              from notification_delivery_logs l join notification_jobs j on j.id = l.job_id
             where l.delivery_time >= now() - interval '24 hours' and l.status = 'delivered'
               and l.provider_event is null)
          select avg(provider_ms) as provider_avg_ms,
                 percentile_cont(0.95) within group (order by provider_ms) as provider_p95_ms,
                 avg(latency_ms) as latency_avg_ms,
                 percentile_cont(0.95) within group (order by latency_ms) as latency_p95_ms
            from delivered) q),
      'feedback_24h', notifier_snapshot_feedback(interval '24 hours'),
      'suppressions', notifier_snapshot_suppressions());
  end if;

  return query select v_result, now();
end
$$;

call notifier_restrict_to_service_role(
  'notifier_read_snapshot', 'notifier_snapshot_feedback', 'notifier_snapshot_suppressions',
  'notifier_parked_digest_schedules');
