"""What operators use: `notifier web` (/health, /metrics), `status`, `export` and the
commands that pause, resume, retry, cancel and clean up. Reads through `store/` and the
breaker's own accessors; changes state only through SQL functions."""
