"""The only door to Postgres.

Where job state lives: the SQL functions in supabase/migrations, called by name. `FunctionCaller`
is how we talk to the database (psycopg or the Supabase REST API); `JobStore` is what we say to
it. What we read lies in queries.sql (loaded by queries.py), read through snapshot.py (health,
metrics, status) and reads.py (export), over session.py's bounded connection. The job statuses
and delivery methods are model.py's.
"""

from notifier.store.base import FunctionCaller
from notifier.store.jobs import Claim, JobContext, JobStore

__all__ = ["Claim", "FunctionCaller", "JobContext", "JobStore"]
