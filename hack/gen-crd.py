#!/usr/bin/env python3
"""Write crds/workerpool.yaml (and the chart's copy, when the chart exists) from the models.

Usage: hack/gen-crd.py [--check]   (--check: exit 1 if the files are out of date)
"""

from __future__ import annotations

import sys
from pathlib import Path

from workerpool.crd import render_crd_yaml

ROOT = Path(__file__).resolve().parent.parent
TARGETS = [
    ROOT / "crds" / "workerpool.yaml",
    ROOT / "charts" / "workerpool-operator" / "crds" / "workerpool.yaml",
]


def main() -> int:
    text = render_crd_yaml(ROOT / "crds" / "schemas" / "podtemplatespec.json")
    stale = []
    for target in TARGETS:
        if not target.parent.parent.exists() and "charts" in target.parts:
            continue
        if "--check" in sys.argv:
            if not target.exists() or target.read_text() != text:
                stale.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote {target.relative_to(ROOT)}", file=sys.stderr)
    for target in stale:
        print(f"{target.relative_to(ROOT)} is out of date: run hack/gen-crd.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
