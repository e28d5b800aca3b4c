"""Where job state lives: the SQL functions in supabase/migrations, called by name.

`FunctionCaller` is how we talk to the database (psycopg or the Supabase REST API);
`JobStore` is what we say to it.
"""

from notifier.store.base import FunctionCaller
from notifier.store.jobs import Claim, JobContext, JobStore

__all__ = ["Claim", "FunctionCaller", "JobContext", "JobStore"]
