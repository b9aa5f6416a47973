"""How many examples a fuzz test draws: a quarter in `make test` (every change), all of them in
the nightly tier (`make test-nightly`, WORKERPOOL_FUZZ=full)."""

from __future__ import annotations

import os


def fuzz_examples(full: int) -> int:
    return full if os.environ.get("WORKERPOOL_FUZZ") == "full" else max(50, full // 4)
