"""The validating webhook on `pods/eviction`: serving it (`webhook.py`, Kopf's
server with our own certificates, `tls.py`) and answering it (`evictions.py`:
allow an idle worker's eviction, hold a busy one's with 429). It reaches pools
only through `ports.PodOwners` / `ports.EvictedPool`, so any replica answers
from its own watches. May import `ports`, `adapters/`, `process/` and what is
below the controller; never `loop/` (its peer), `fleet/`, `ha/`."""
