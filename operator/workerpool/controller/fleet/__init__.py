"""All pools of this replica: the `Manager` (one pool controller per WorkerPool,
started and paused with leadership and shards), the `Connections` they share
(one Redis hub per URL and protocol, one RabbitMQ broker per URL) and the
`PodIndex` (which pool a pod is in, for the eviction gate). It wires `loop/`
and `admission/` together; may import them and everything below; never `ha/`."""
