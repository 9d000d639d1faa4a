# kube-mapserver: every target installs what it needs on first use.
SHELL := /bin/bash
PY := .venv/bin/python
CLUSTER_DIR ?= $(CURDIR)/.kms/cluster
PYTEST_ARGS ?=

.PHONY: help setup ui checkov binaries kstatus cluster-up cluster-down cluster-status dev test test-unit test-integration test-e2e test-flaky lint crds bench node-down clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

setup: .venv/.setup-done ui  ## Debian packages + venv + pinned Python deps + the /ui/ bundle

ui:  ## the /ui/ page's bundle (npm ci from ui/package-lock.json + esbuild; skipped when up to date)
	hack/ui.sh

.venv/.setup-done: pyproject.toml hack/setup.sh $(wildcard */kms_*/__init__.py)
	hack/setup.sh
	@touch $@

checkov:  ## the pinned checkov in its own venv (~/.cache/kube-mapserver/checkov-<version>-<hash>), for the chart scan
	hack/checkov.sh >/dev/null

binaries:  ## build the control-plane binaries once (cached under ~/.cache/kube-mapserver)
	hack/build-binaries.sh

kstatus:  ## build hack/kstatus once (cached): the health Flux and Argo-style checks compute (sigs.k8s.io/cli-utils kstatus)
	hack/build-kstatus.sh

cluster-up: setup  ## start the local control plane (etcd, apiserver, controller-manager, scheduler, kwok)
	$(PY) hack/cluster.py up --dir $(CLUSTER_DIR)

cluster-down:  ## stop the local control plane
	/usr/bin/python3 hack/cluster.py down --dir $(CLUSTER_DIR)

cluster-status:
	/usr/bin/python3 hack/cluster.py status --dir $(CLUSTER_DIR)

dev: setup binaries helm images  ## run the product: control plane + real node + the chart, all pods real (Ctrl-C stops all)
	$(PY) hack/dev.py --dir $(CLUSTER_DIR) $(DEV_ARGS)

test: setup checkov binaries helm images kstatus  ## the whole suite: unit, e2e and integration (starts its own plane and real node)
	hack/run-pytest.sh $(PYTEST_ARGS)

test-unit: setup checkov helm kstatus  ## pure-function tests, no cluster
	hack/run-pytest.sh -m unit $(PYTEST_ARGS)

test-integration: setup binaries helm images kstatus  ## tests against a real kube-apiserver and real pods
	hack/run-pytest.sh -m integration $(PYTEST_ARGS)

test-e2e: setup binaries helm images  ## the chart installed on the real node, walked end to end
	hack/run-pytest.sh -m e2e $(PYTEST_ARGS)

test-flaky: setup binaries helm images kstatus  ## N runs (default 3) under CPU load, failure rate per test (PYTEST_ARGS default: -m integration)
	$(PY) hack/test_flaky.py -n $(or $(N),3) $(PYTEST_ARGS)

lint: setup  ## ruff
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

crds: setup  ## regenerate crds/*.yaml from the pydantic models
	$(PY) -m kms_crds.generate

bench: setup binaries .kms/bench-venv/.done  ## benchmarks (not part of make test): table + bench/results/
	$(PY) -m bench.run $(BENCH_ARGS)

.kms/bench-venv/.done: bench/requirements-tools.txt
	/usr/bin/python3 -m venv .kms/bench-venv
	.kms/bench-venv/bin/pip install -q -r bench/requirements-tools.txt
	@touch $@

node-down:  ## stop a real node left running (make dev stops its own) and restore the machine
	/usr/bin/python3 hack/node.py down --dir $(CURDIR)/.kms/node

clean: node-down cluster-down
	rm -rf .kms

# ---------------------------------------------------------------------------------------------
# Shipping: Helm chart, plain manifests, image, smoke walks, kind (hack/tool-versions.env pins
# helm, actionlint and kind; built once from the Go module proxy into ~/.cache/kube-mapserver/bin).
.PHONY: helm manifests chart-lint actionlint smoke kind-up kind-smoke kind-logs kind-down images

images: setup  ## build every image with buildah, no registry (IMAGES_ARGS="--only mapserver"): OCI archives + manifest.json in ~/.cache/kube-mapserver/images
	/usr/bin/python3 hack/images.py build $(IMAGES_ARGS)

helm:  ## build helm and actionlint once (cached); the chart tests need them
	hack/build-helm.sh --actionlint

manifests: setup helm  ## copy crds/ into the charts and render deploy/ (plain YAML for GitOps)
	$(PY) hack/chart.py manifests

chart-lint: helm  ## helm lint the charts with every values profile
	$(PY) hack/chart.py helm lint charts/kube-mapserver --strict
	$(PY) hack/chart.py helm lint charts/kube-mapserver --strict -f charts/kube-mapserver/values-local.yaml
	$(PY) hack/chart.py helm lint charts/kube-mapserver --strict -f charts/kube-mapserver/values-production.yaml
	$(PY) hack/chart.py helm lint charts/kube-mapserver-crds --strict

actionlint: helm  ## lint .github/workflows
	hack/actionlint.sh

smoke:  ## smoke walk against a running product: KMS_URL (default http://127.0.0.1:8000), KMS_PASSWORD
	PYTHON=$(PY) hack/smoke.sh

kind-up:  ## kind cluster + image build/load + helm install with values-local (needs Docker)
	hack/kind.sh up

kind-smoke:  ## smoke walk on the kind cluster (after kind-up)
	hack/kind.sh smoke

kind-logs:  ## pods, events, resources and logs of the kind installation
	hack/kind.sh logs

kind-down:  ## delete the kind cluster
	hack/kind.sh down
