"""The delivery path: the poller claims due jobs into RQ; workers start, render, guard with the
breaker, send and record each one. Uses `store/` and `providers/`; knows nothing of the web."""
