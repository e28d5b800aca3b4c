-- Every read query the Python side runs, one place (procrastinate's queries.sql is the model).
-- State changes are never here: they are SQL functions in supabase/migrations, called through
-- JobStore. Each query sits under a `-- name --` header, followed by a one-line comment saying
-- what it is for; notifier/store/queries.py loads them once into QUERIES.
-- Every query is bounded by an index (partial indexes on status, `processed_at`, the delivery
-- log's `delivery_time`) except job_counts, which `notifier status` alone runs.

-- set_statement_timeout --
-- Cancel this transaction's statements after the given time (transaction-local: safe behind a pooler).
select set_config('statement_timeout', %(timeout)s, true)

-- backlog --
-- The state an operator checks first: due now, in flight, failed in 24 h, paused (health, status, drain).
with due as (
  select count(*) as n, min(scheduled_for) as oldest from notification_jobs
   where status = 'pending' and scheduled_for <= now()
), in_flight as (
  select count(*) filter (where status = 'queued') as queued,
         count(*) filter (where status = 'processing') as processing
    from notification_jobs where status in ('queued', 'processing')
), failed as (
  select count(*) as n from notification_jobs
   where status = 'failed' and processed_at >= now() - interval '24 hours'
), control as (
  -- A plain read: notifier_claims_paused() locks the row (for claims), a reader must not.
  select paused, paused_at, paused_by, reason from notifier_control where id
)
select due.n as due_now,
       extract(epoch from now() - due.oldest)::float8 as oldest_due_seconds,
       in_flight.queued, in_flight.processing, failed.n as failed_24h,
       coalesce(control.paused, false) as paused, control.paused_at, control.paused_by,
       control.reason as paused_reason
  from due cross join in_flight cross join failed left join control on true

-- due_by_method --
-- Pending jobs due now by delivery method: how many, how many await a retry, the oldest's wait.
select delivery_method as method, count(*) as n,
       count(*) filter (where retry_count > 0) as awaiting_retry,
       extract(epoch from now() - min(scheduled_for))::float8 as oldest_seconds
  from notification_jobs where status = 'pending' and scheduled_for <= now()
 group by delivery_method

-- finished_24h --
-- Jobs that reached a finished status in the last 24 h, by status and method (notification_jobs_processed_idx).
select status, delivery_method as method, count(*) as n from notification_jobs
 where processed_at >= now() - interval '24 hours' and processed_at is not null
 group by status, delivery_method

-- unfinished_jobs --
-- Jobs pending (due or scheduled), queued, processing or held now, by status and method.
select 'pending' as status, delivery_method as method, count(*) as n
  from notification_jobs where status = 'pending' group by delivery_method
union all
select status, delivery_method, count(*) from notification_jobs
 where status in ('queued', 'processing', 'held') group by status, delivery_method

-- oldest_held --
-- How long the oldest job held for a digest has waited (notification_jobs_held_idx covers held rows only).
select extract(epoch from now() - min(created_at))::float8 as oldest
  from notification_jobs where status = 'held'

-- deliveries_in_window --
-- Delivery attempts in the window by provider, method and outcome, with how many were retries (provider events excluded).
select coalesce(provider, 'none') as provider, delivery_method as method, status as outcome,
       count(*) as n, count(*) filter (where attempt > 1) as retries
  from notification_delivery_logs
 where delivery_time >= now() - make_interval(secs => %(window)s) and provider_event is null
 group by 1, 2, 3

-- feedback_in_window --
-- Provider events (webhooks) in the window by method, event and the log status they added: bounces, spam reports, unsubscribes, STOPs.
select delivery_method as method, provider_event as event, status, count(*) as n
  from notification_delivery_logs
 where delivery_time >= now() - make_interval(secs => %(window)s) and provider_event is not null
 group by 1, 2, 3

-- suppression_counts --
-- Suppressed addresses by channel and source (a small table, read whole).
select channel, source, count(*) as n from notification_suppressions group by 1, 2

-- latency_histogram --
-- Cumulative counts per bucket of scheduled_for → accepted, by provider, over the window (`<= le` as Prometheus).
with d as (
  select l.provider, extract(epoch from l.delivery_time - j.scheduled_for)::float8 as seconds
    from notification_delivery_logs l join notification_jobs j on j.id = l.job_id
   where l.delivery_time >= now() - make_interval(secs => %(window)s)
     and l.status = 'delivered' and l.provider is not null and l.provider_event is null
)
select d.provider, b.le, count(*) filter (where d.seconds <= b.le) as n, count(*) as total,
       sum(d.seconds) as seconds
  from d cross join unnest(%(bounds)s::float8[]) as b(le)
 group by d.provider, b.le

-- duration_histogram --
-- Cumulative counts per bucket of provider request time, by provider, over the window (`<= le` as Prometheus).
with d as (
  select provider, (delivery_duration_ms / 1000.0)::float8 as seconds
    from notification_delivery_logs
   where delivery_time >= now() - make_interval(secs => %(window)s)
     and provider is not null and delivery_duration_ms is not null
)
select d.provider, b.le, count(*) filter (where d.seconds <= b.le) as n, count(*) as total,
       sum(d.seconds) as seconds
  from d cross join unnest(%(bounds)s::float8[]) as b(le)
 group by d.provider, b.le

-- job_counts --
-- Every job by status and method (a whole-table count: `notifier status` only, never a probe).
select status, delivery_method as method, count(*) as n
  from notification_jobs group by status, delivery_method

-- top_failure_reasons --
-- The most common reasons among failed jobs, shortened to 160 characters.
select left(coalesce(failure_reason, '(no reason recorded)'), 160) as reason, count(*) as n
  from notification_jobs where status = 'failed'
 group by 1 order by 2 desc, 1 limit %(limit)s

-- delivery_times_24h --
-- Average and p95 of provider time and of scheduled → delivered, over the last 24 h's deliveries.
with delivered as (
  select l.delivery_duration_ms::float8 as provider_ms,
         extract(epoch from l.delivery_time - j.scheduled_for)::float8 * 1000 as latency_ms
    from notification_delivery_logs l join notification_jobs j on j.id = l.job_id
   where l.delivery_time >= now() - interval '24 hours' and l.status = 'delivered'
     and l.provider_event is null
)
select avg(provider_ms) as provider_avg_ms,
       percentile_cont(0.95) within group (order by provider_ms) as provider_p95_ms,
       avg(latency_ms) as latency_avg_ms,
       percentile_cont(0.95) within group (order by latency_ms) as latency_p95_ms
  from delivered

-- export_count --
-- How many jobs `notifier export` will write (for its progress bar); same filter as export_rows.
select count(*) as n
  from notification_jobs j
 where (%(statuses)s::text[] is null or j.status = any(%(statuses)s::text[]))
   and (%(since)s::timestamptz is null or j.created_at >= %(since)s::timestamptz)

-- export_rows --
-- Each job as stored (to_jsonb), optionally with its delivery logs, in table order, for `notifier export`.
select (to_jsonb(j) || case when %(with_logs)s then jsonb_build_object('delivery_logs',
          coalesce((select jsonb_agg(to_jsonb(l) order by l.delivery_time, l.created_at)
                      from notification_delivery_logs l where l.job_id = j.id), '[]'::jsonb))
        else '{}'::jsonb end)::text as line
  from notification_jobs j
 where (%(statuses)s::text[] is null or j.status = any(%(statuses)s::text[]))
   and (%(since)s::timestamptz is null or j.created_at >= %(since)s::timestamptz)
