"""One WorkerPool's round: observe -> decide -> apply. `controller.py` runs it on
every trigger; `state.py` holds what the watches and the hub have told it
between rounds; `sources.py` finds its Redis hub and demand source; `derived.py`
caches what it derives from the spec; the pure decision is `workerpool.decide`;
`pod_actions.py`, `recycling.py` and `api_io.py` carry the plan out (pods and
busy marks, recycle commands, Events and status). `eviction_view.py` shows the
eviction gate a pool through `ports.EvictedPool`. May import `ports`,
`adapters/`, `process/` and what is below the controller; never `admission/`,
`fleet/`, `ha/`."""
