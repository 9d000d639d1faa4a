# kube-mapserver: every target installs what it needs on first use.
SHELL := /bin/bash
PY := .venv/bin/python
CLUSTER_DIR ?= $(CURDIR)/.kms/cluster
PYTEST_ARGS ?=

.PHONY: help setup binaries cluster-up cluster-down cluster-status dev test test-unit test-integration lint crds bench clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

setup: .venv/.setup-done  ## Debian packages + venv + pinned Python deps

.venv/.setup-done: pyproject.toml hack/setup.sh $(wildcard */kms_*/__init__.py)
	hack/setup.sh
	@touch $@

binaries:  ## build the control-plane binaries once (cached under ~/.cache/kube-mapserver)
	hack/build-binaries.sh

cluster-up: setup  ## start the local control plane (etcd, apiserver, controller-manager, scheduler, kwok)
	$(PY) hack/cluster.py up --dir $(CLUSTER_DIR)

cluster-down:  ## stop the local control plane
	/usr/bin/python3 hack/cluster.py down --dir $(CLUSTER_DIR)

cluster-status:
	/usr/bin/python3 hack/cluster.py status --dir $(CLUSTER_DIR)

dev: setup  ## run the product locally: control plane + CRDs + operator + facade (Ctrl-C stops all)
	$(PY) hack/dev.py --dir $(CLUSTER_DIR)

test: setup binaries  ## the whole suite: unit + integration (starts its own control plane)
	hack/run-pytest.sh $(PYTEST_ARGS)

test-unit: setup  ## pure-function tests, no cluster
	hack/run-pytest.sh -m unit $(PYTEST_ARGS)

test-integration: setup binaries  ## tests against a real kube-apiserver
	hack/run-pytest.sh -m integration $(PYTEST_ARGS)

lint: setup  ## ruff
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

crds: setup  ## regenerate crds/*.yaml from the pydantic models
	$(PY) -m kms_crds.generate

bench: setup binaries  ## benchmarks (not part of make test)
	@echo "bench: arrives with the benchmarks issue"

clean: cluster-down
	rm -rf .kms
