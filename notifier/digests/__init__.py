"""Digests: the scheduler loop that calls `create_digest_jobs()`; the schedule arithmetic
lives in SQL (supabase/migrations)."""
