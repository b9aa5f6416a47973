"""The operator: Kopf handlers (handlers.py) over pool controllers that gather,
call the pure decisions in `workerpool.decide`, and act through the adapters
(kube.py for the API server, redis_hub.py for Redis)."""
