# workerpool-operator — developer entry points. Every target does its own set-up.
SHELL := /bin/bash
PY    := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: test unit lint typecheck setup control-plane crd crd-check cluster-up cluster-down demo faults clean

## test: everything CI runs (lint, types, unit, integration, e2e)
test: setup
	$(PY) -m ruff check operator tests hack bench
	$(PY) -m mypy operator/workerpool
	$(PY) -m pytest -q -p no:cacheprovider

unit: $(VENV_STAMP)
	$(PY) -m pytest -q tests/unit

lint: $(VENV_STAMP)
	$(PY) -m ruff check operator tests hack bench

typecheck: $(VENV_STAMP)
	$(PY) -m mypy operator/workerpool

setup: $(VENV_STAMP) control-plane
	hack/install-system-packages.sh

$(VENV_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

## control-plane: build kube-apiserver, etcd, kubectl, helm from Go modules (cached)
control-plane:
	hack/build-control-plane.sh

## crd: regenerate crds/ from the models
crd: $(VENV_STAMP)
	$(PY) hack/gen-crd.py

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache

## cluster-up: start the local stack (etcd, kube-apiserver, GC/namespace controllers,
## harness kubelet, redis-server) in the background; prints the exports to use it
cluster-up: setup crd-check
	@mkdir -p .cluster
	@if [ -f .cluster/pid ] && kill -0 $$(cat .cluster/pid) 2>/dev/null; then cat .cluster/env; exit 0; fi; \
	nohup $(PY) -m workerpool.devcluster up --dir .cluster > .cluster/up.log 2>&1 & \
	for i in $$(seq 1 240); do [ -f .cluster/env ] && break; \
	  kill -0 $$! 2>/dev/null || { cat .cluster/up.log; exit 1; }; sleep 0.5; done; \
	[ -f .cluster/env ] || { echo "local cluster did not come up; see .cluster/up.log"; exit 1; }; \
	cat .cluster/env

## cluster-down: stop everything cluster-up started
cluster-down: $(VENV_STAMP)
	$(PY) -m workerpool.devcluster down --dir .cluster

crd-check: $(VENV_STAMP)
	$(PY) hack/gen-crd.py --check

## demo: the whole system on the local control plane (or $KUBECONFIG), start to end
demo: setup
	$(PY) hack/demo.py

## faults: only the fault-injection tests (they also run in `make test`)
faults: setup
	$(PY) -m pytest -q -p no:cacheprovider -m faults
