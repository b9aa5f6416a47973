# workerpool-operator — developer entry points. Every target does its own set-up.
SHELL := /bin/bash
PY    := .venv/bin/python
VENV_STAMP := .venv/.installed
# The test bed (local cluster, e2e harness) is its own source root, not in the wheel.
TESTBED := PYTHONPATH=testbed

UV    := hack/uv.sh

.PHONY: test test-nightly unit lint typecheck deps lock lock-check deps-check bench-setup setup system-packages control-plane image crd crd-check cluster-up cluster-down demo faults clean

## test: everything CI runs (lint, types, unit, integration, e2e on the local node)
test: setup image deps
	$(PY) -m ruff check operator testbed tests hack bench
	$(PY) -m mypy operator/workerpool testbed/devcluster
	$(PY) -m pytest -q -p no:cacheprovider --durations=30 -m "not nightly"

## test-nightly: the nightly tier: the test bed's self-tests and the fuzz tests at full volume
test-nightly: setup image
	WORKERPOOL_FUZZ=full $(PY) -m pytest -q -p no:cacheprovider -m "nightly or faults"

unit: $(VENV_STAMP)
	$(PY) -m pytest -q tests/unit

lint: $(VENV_STAMP)
	$(PY) -m ruff check operator testbed tests hack bench

typecheck: $(VENV_STAMP)
	$(PY) -m mypy operator/workerpool testbed/devcluster

## deps: the lock agrees with pyproject.toml, and every module the product imports is declared
deps: lock-check $(VENV_STAMP)
	$(PY) -m deptry operator

lock-check:
	hack/lock.sh check

## lock: re-resolve uv.lock to the newest versions pyproject.toml allows (then make test; README "Locked dependencies")
lock:
	hack/lock.sh update

## deps-check: the newest allowed versions, in a throwaway venv: lint, types, unit tests (not part of make test)
deps-check:
	hack/deps-check.sh

## bench-setup: the benchmarks' env (the dev env plus the peers they measure against), from the lock
bench-setup: $(VENV_STAMP)
	$(UV) sync --frozen --extra dev --extra bench

setup: system-packages $(VENV_STAMP) control-plane

system-packages:
	hack/install-system-packages.sh

## image: the one image (operator + worker), no registry, no network in the build;
## loaded into the local node when one runs; last line IMAGE=<ref>
image: system-packages $(VENV_STAMP) control-plane
	hack/build-image.sh

# Exactly what uv.lock says (hash-checked by uv), nothing else: --frozen never
# re-resolves, and a pyproject.toml the lock disagrees with fails `make deps`.
$(VENV_STAMP): pyproject.toml uv.lock hack/uv-requirements.txt
	$(UV) sync --frozen --extra dev
	touch $@

## control-plane: build the control plane, kubelet, kube-proxy, pause, etcd, kubectl, helm from Go modules (cached)
control-plane:
	hack/build-control-plane.sh

## crd: regenerate crds/ from the models
crd: $(VENV_STAMP)
	$(PY) hack/gen-crd.py

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache build

## cluster-up: start the local cluster (control plane, one real node on containerd,
## redis-server on the bridge) in the background; prints the exports to use it
cluster-up: setup image crd-check
	@mkdir -p .cluster
	@if [ -f .cluster/pid ] && kill -0 $$(cat .cluster/pid) 2>/dev/null; then cat .cluster/env; exit 0; fi; \
	$(TESTBED) nohup $(PY) -m devcluster up --dir .cluster $(if $(SENTINEL),--sentinel) --kwok-nodes $(or $(KWOK_NODES),0) > .cluster/up.log 2>&1 & \
	for i in $$(seq 1 240); do [ -f .cluster/env ] && break; \
	  kill -0 $$! 2>/dev/null || { cat .cluster/up.log; exit 1; }; sleep 0.5; done; \
	[ -f .cluster/env ] || { echo "local cluster did not come up; see .cluster/up.log"; exit 1; }; \
	cat .cluster/env

## cluster-down: stop everything cluster-up started
cluster-down: $(VENV_STAMP)
	$(TESTBED) $(PY) -m devcluster down --dir .cluster

crd-check: $(VENV_STAMP)
	$(PY) hack/gen-crd.py --check

## demo: the whole system on the local control plane (or $KUBECONFIG), start to end
demo: setup image
	$(PY) hack/demo.py

## faults: only the fault-injection tests (they also run in `make test`)
faults: setup image
	$(PY) -m pytest -q -p no:cacheprovider -m faults
