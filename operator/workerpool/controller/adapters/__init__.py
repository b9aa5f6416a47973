"""Where the operator does I/O, and nowhere else: the API server (`kube.py`, every
write through the rate limiter), Redis (`redis_hub.py`: one hub per URL and worker
protocol, reading heartbeats, queues and resyncs; `worker_commands.py`: the
commands it sends, each one Lua script) and RabbitMQ (`rabbitmq.py`: queue depths
for Bifrost pools). May import `process/` and what is below the controller; knows
nothing of pools' rounds, leadership or admission."""
