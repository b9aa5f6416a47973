"""High availability: which replica acts. `leader.py` elects on a
`coordination.k8s.io` Lease, `leadership.py` starts and stops the fleet's
pool loops with it, `topology_watch.py` reads other shard counts' Leases while
the shard count changes. May import `fleet/` and everything below; only
`handlers.py` imports it."""
