"""notifier: a Redis-backed notification delivery worker for Supabase / PostgreSQL apps."""

__version__ = "0.1.0"
