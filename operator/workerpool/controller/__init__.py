"""The operator. Its layers, top first; a module imports only its own layer and
the layers below it (tests/unit/test_layers.py; docs/architecture.md draws it):

- `handlers.py`  the Kopf registry: every handler is a docstring and one call;
- `ha/`          who acts: leader election on a Lease, the shard topology;
- `fleet/`       all pools of this replica: the Manager, the shared connections,
                 the pod -> pool index the eviction gate asks;
- `loop/`        one pool's round: observe -> decide (`workerpool.decide`) -> apply;
- `admission/`   the eviction webhook: its server, its TLS, its answers;
                 (`loop/` and `admission/` are peers: neither imports the other);
- `ports.py`     what the loop and the gate need from the world, as Protocols;
- `adapters/`    the only I/O: the API server, Redis, RabbitMQ;
- `process/`     the operator process: settings, metrics, clock, GC, loop lag,
                 the write rate limit.
"""
