"""The operator process itself: its settings (`config.py`, the WORKERPOOL_*
variables), its Prometheus metrics, the clock everything timed reads, the
client-side write rate limit, garbage-collection tuning and the event loop's
lag. The bottom layer of the controller: it imports nothing of the controller,
only what is below it (`decide`, `contracts`, `redis_connect`)."""
