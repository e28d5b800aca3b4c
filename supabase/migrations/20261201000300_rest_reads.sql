-- Reads as functions: the Supabase REST backend reaches the database only through
-- PostgREST's /rpc/<function>, so every read notifier makes is a function here, called by name
-- by both stores (psycopg and supabase-py). No table endpoint, no ad-hoc filter.
--
-- notifier_read_snapshot, the one snapshot /health, /metrics, `notifier status` and `notifier
-- pause --wait` read, is defined with the parts that came later in
-- 20261201000900_snapshot_feedback_and_control.sql. Here: notifier_ping.

-- The cheapest call there is: a process on the REST backend makes it at start-up, so a wrong
-- key (401/403) or missing migrations (404 PGRST202) stop it with one line before any work.
create or replace function notifier_ping() returns timestamptz
language sql stable security definer set search_path = public, pg_temp as $$ select now() $$;

call notifier_restrict_to_service_role('notifier_ping');
