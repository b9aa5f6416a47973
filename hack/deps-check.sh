#!/usr/bin/env bash
# make deps-check: the newest versions pyproject.toml allows, in a throwaway
# venv, against lint, types, the import check and the unit tests; the lock and
# .venv are not touched. Green: `make lock` can roll forward to them. Red: the
# next fresh resolve would break here; fix the code or bound the dependency.
# Not part of `make test` (it depends on what PyPI serves today, not on the lock).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A copy of the project whose lock is re-resolved from nothing (--upgrade),
# so the one in the checkout stays as it is.
git ls-files -z | xargs -0 tar -cf - | tar -C "$work" -xf -
here=$PWD
UV="$here/hack/uv.sh"
cd "$work"
"$UV" lock --upgrade --quiet
echo "[deps-check] what changed against the checkout's uv.lock:"
diff <(sed -n 's/^name = "\(.*\)"$/\1/p; s/^version = "\(.*\)"$/\1/p' "$here/uv.lock" | paste - - | sort) \
     <(sed -n 's/^name = "\(.*\)"$/\1/p; s/^version = "\(.*\)"$/\1/p' uv.lock | paste - - | sort) \
  | sed -n 's/^> /  now /p; s/^< /  was /p' || true
"$UV" sync --quiet --frozen --extra dev
py=.venv/bin/python
"$py" -m ruff check operator testbed tests hack bench
"$py" -m mypy operator/workerpool testbed/devcluster
"$py" -m deptry operator
"$py" -m pytest -q -p no:cacheprovider tests/unit
echo "[deps-check] green on the newest allowed versions: 'make lock' may roll forward"
