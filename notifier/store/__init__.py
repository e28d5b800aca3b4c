"""The only door to Postgres.

Where job state lives: the SQL functions in supabase/migrations, called by name. `FunctionCaller`
is how we talk to the database (postgres.py psycopg, or rest.py the Supabase REST API, chosen by
backend.py); `JobStore` is what we say to it. Reads are SQL functions too: snapshot.py reads
health, metrics and status through one. Only what needs a direct session lies in queries.sql
(loaded by queries.py): the export stream of reads.py over session.py's bounded connection. The
job statuses, delivery methods and read-only functions are model.py's.
"""

from notifier.store.base import FunctionCaller
from notifier.store.jobs import Claim, JobContext, JobStore

__all__ = ["Claim", "FunctionCaller", "JobContext", "JobStore"]
