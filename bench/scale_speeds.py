#!/usr/bin/env python3
"""The 1000-pool benchmark at several API server speeds, this checkout next to an older one, in one run.

For each API speed (the control plane's own, and one slowed by lowering the
API server's in-flight limits, as a loaded or smaller control plane would
be) it runs `bench/scale_bench.py` with this checkout's operator and with an
older commit's (a git worktree made here and removed afterwards), one after
the other, and prints the numbers side by side. Runs are interleaved (old,
new, old, new) so a drift of the machine over the hour hits both sides.

Usage: python bench/scale_speeds.py [--before 6d11b86] [--pools 1000] [scale_bench options...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# scale_bench.py options per API speed. The operator runs as a ServiceAccount in both, so
# the API server's priority and fairness treats it as the chart's would be treated.
# "own speed": the control plane as it is (the operator in the default workload-low level).
# "slowed": the operator in a priority level of its own with one seat (one share of the
# server's 60 seats, its in-flight limits lowered from 400 + 200 to 40 + 20), queuing: its
# requests are served one at a time, a few dozen writes a second, as on the slow day issue
# 32 measured (36 status patches a second), whatever else the machine does.
SPEEDS: dict[str, list[str]] = {
    "own speed": [],
    "slowed": [
        "--operator-shares=1",
        "--apiserver-arg=--max-requests-inflight=40",
        "--apiserver-arg=--max-mutating-requests-inflight=20",
    ],
}

ROWS: list[tuple[str, str, str]] = [  # (label, key, format)
    ("pods created (s)", "pods_created_s", "{:.0f}"),
    ("pods Running (s)", "pods_running_s", "{:.0f}"),
    ("operator CPU (cores)", "cpu_cores", "{:.2f}"),
    ("operator RSS (MiB)", "rss_mib", "{:.0f}"),
    ("status lag p50 (s)", "lag_p50_s", "{:.2f}"),
    ("status lag p99 (s)", "lag_p99_s", "{:.2f}"),
    ("state changes shown", "changes_shown", "{:.0f}"),
    ("state changes made", "changes_measured", "{:.0f}"),
    ("new pools with a first pod", "new_pools_with_pod", "{:.0f}"),
    ("new pool -> first pod p50 (s)", "first_pod_p50_s", "{:.2f}"),
    ("new pool -> first pod p99 (s)", "first_pod_p99_s", "{:.2f}"),
    ("  the operator's share p50 (s)", "operator_share_p50_s", "{:.2f}"),
    ("  the operator's share max (s)", "operator_share_max_s", "{:.2f}"),
    ("pools grown with their new pod", "scale_ups_with_pod", "{:.0f}"),
    ("pool grown -> new pod p50 (s)", "scale_up_p50_s", "{:.2f}"),
    ("pool grown -> new pod p99 (s)", "scale_up_p99_s", "{:.2f}"),
    ("status writes / minute", "status_writes_per_min", "{:.0f}"),
    ("busy-mark writes / minute", "mark_writes_per_min", "{:.0f}"),
    ("pool rounds / s", "rounds_per_s", "{:.0f}"),
    ("PATCH status / s (API server)", "api_patch_status_per_s", "{:.1f}"),
    ("PATCH pods / s (API server)", "api_patch_pods_per_s", "{:.1f}"),
    ("API write latency mean (s)", "api_write_latency_s", "{:.3f}"),
    ("write backlog at the end", "backlog_end", "{:.0f}"),
    ("oldest waiting status (s)", "status_pending_oldest_s", "{:.1f}"),
    ("loop late > 0.1 s", "loop_late_0_1", "{:.0f}"),
    ("loop late > 0.5 s", "loop_late_0_5", "{:.0f}"),
]


def worktree(commit: str, where: Path) -> Path:
    path = where / f"before-{commit}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit], check=True)
    return path


def run_one(extra: list[str], speed: list[str], src: Path | None, out: Path) -> dict[str, float]:
    cmd = [sys.executable, str(ROOT / "bench" / "scale_bench.py"), *extra, *speed, "--json", str(out)]
    if src is not None:
        cmd += ["--operator-src", str(src)]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0 or not out.exists():
        print(f"run failed (exit {done.returncode})", file=sys.stderr)
        return {}
    numbers: dict[str, float] = json.loads(out.read_text())
    return numbers


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--before",
        default="6d11b86",
        help="the commit to compare with (default: before issue 32; none: this checkout only)",
    )
    ap.add_argument("--speeds", default=",".join(SPEEDS), help=f"which of: {', '.join(SPEEDS)}")
    args, extra = ap.parse_known_args()
    if "--pools" not in " ".join(extra):
        extra = ["--pools", "1000", *extra]
    work = Path(tempfile.mkdtemp(prefix="wpo-speeds-"))
    before = worktree(args.before, work) if args.before != "none" else None
    sides = ([(args.before, before)] if before is not None else []) + [("this", None)]
    results: dict[tuple[str, str], dict[str, float]] = {}
    try:
        for speed in args.speeds.split(","):
            for side, src in sides:
                results[(speed, side)] = run_one(extra, SPEEDS[speed], src, work / f"{speed}-{side}.json")
    finally:
        if before is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False)
    columns = list(results)
    print(f"\n{'':<34}" + "".join(f"{f'{speed}: {side}':>22}" for speed, side in columns))
    for label, key, fmt in ROWS:
        cells = (fmt.format(results[c][key]) if key in results[c] else "-" for c in columns)
        print(f"{label:<34}" + "".join(f"{cell:>22}" for cell in cells))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
