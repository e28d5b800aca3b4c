"""The database schema: `notifier migrate` applies supabase/migrations, `--check` verifies it."""
