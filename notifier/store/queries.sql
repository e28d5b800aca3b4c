-- The few queries only a direct PostgreSQL session runs (procrastinate's queries.sql is the
-- model). Every other read is a SQL function in supabase/migrations (the snapshot of /health,
-- /metrics and `notifier status` is notifier_read_snapshot), called by name through a
-- FunctionCaller so the Supabase REST backend can make it too. State changes are never here.
-- What stays: the per-transaction statement timeout of the operator's connection, and the
-- export stream (a server-side cursor, which a REST call cannot hold open).
-- Each query sits under a `-- name --` header, followed by a one-line comment saying what it
-- is for; notifier/store/queries.py loads them once into QUERIES.

-- set_statement_timeout --
-- Cancel this transaction's statements after the given time (transaction-local: safe behind a pooler).
select set_config('statement_timeout', %(timeout)s, true)

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
