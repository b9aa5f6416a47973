# workerpool-operator — developer entry points. Every target does its own set-up.
SHELL := /bin/bash
PY    := .venv/bin/python
VENV_STAMP := .venv/.installed
# The test bed (local cluster, e2e harness) is its own source root, not in the wheel.
TESTBED := PYTHONPATH=testbed

.PHONY: test unit lint typecheck setup system-packages control-plane image crd crd-check cluster-up cluster-down demo faults clean

## test: everything CI runs (lint, types, unit, integration, e2e on the local node)
test: setup image
	$(PY) -m ruff check operator testbed tests hack bench
	$(PY) -m mypy operator/workerpool testbed/devcluster
	$(PY) -m pytest -q -p no:cacheprovider

unit: $(VENV_STAMP)
	$(PY) -m pytest -q tests/unit

lint: $(VENV_STAMP)
	$(PY) -m ruff check operator testbed tests hack bench

typecheck: $(VENV_STAMP)
	$(PY) -m mypy operator/workerpool testbed/devcluster

setup: system-packages $(VENV_STAMP) control-plane

system-packages:
	hack/install-system-packages.sh

## image: the one image (operator + worker), no registry, no network in the build;
## loaded into the local node when one runs; last line IMAGE=<ref>
image: system-packages $(VENV_STAMP) control-plane
	hack/build-image.sh

$(VENV_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
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
