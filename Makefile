# Every target installs what it needs: a fresh clone needs Python 3.11+, Go (for helm), Java 17+
# and Maven.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements-dev.lock | sha1sum | cut -c1-12)
# Pinned tools outside PyPI, built once into .cache/tools/ (go's module and build caches make a
# rebuild after `make clean` quick).
HELM_VERSION := v3.22.0
HELM := .cache/tools/helm-$(HELM_VERSION)/helm
UV_VERSION := 0.13.8
KUBE_VERSION := 1.33.0
# helm's default Kubernetes version (helm template, helm lint without --kube-version) is set at
# link time, as helm's own Makefile does from its client-go; `go install` alone leaves v1.20.0,
# below the chart's kubeVersion. Ours is KUBE_VERSION, the version the chart is tested against.
# The stamp names it, so a helm built with other flags (or none) is rebuilt.
HELM_STAMP := $(dir $(HELM)).kube-$(KUBE_VERSION)
KUBE_MAJOR := $(word 1,$(subst ., ,$(KUBE_VERSION)))
KUBE_MINOR := $(word 2,$(subst ., ,$(KUBE_VERSION)))
HELM_LDFLAGS := -s -w -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	$(foreach pkg,pkg/chartutil pkg/lint/rules,-X helm.sh/helm/v3/$(pkg).k8sVersionMajor=$(KUBE_MAJOR) \
	-X helm.sh/helm/v3/$(pkg).k8sVersionMinor=$(KUBE_MINOR))

.PHONY: help venv lock lint lint-deploy format typecheck test test-unit test-deploy test-integration demo kafka-up kafka-down sandbox bench clean helm

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements-dev.lock
	@command -v $(PYTHON) >/dev/null || { echo "python3 (3.11+) is required" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP) ## Create the virtualenv and install the project with its development tools (from the lock)

lock: ## Refresh requirements.lock (image) and requirements-dev.lock (make, CI) from pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet 'uv==$(UV_VERSION)'
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes --upgrade -q -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 --generate-hashes --upgrade -q -o requirements-dev.lock

$(HELM_STAMP):
	@mkdir -p $(dir $@) && rm -f $(dir $@).kube-* && touch $@

$(HELM): $(HELM_STAMP)
	@command -v go >/dev/null || { echo "go is required to build helm $(HELM_VERSION)" >&2; exit 1; }
	GOBIN=$(CURDIR)/$(dir $(HELM)) GOFLAGS=-mod=mod go install \
		-ldflags "$(HELM_LDFLAGS)" \
		helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	@touch $@

helm: $(HELM) ## Build the pinned helm into .cache/tools/ (only when missing), defaulting to Kubernetes KUBE_VERSION

lint: venv ## ruff, mypy --strict, the layer contracts (import-linter), then lint-deploy (builds helm with Go the first time)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	@$(MAKE) --no-print-directory lint-deploy

typecheck: venv ## mypy --strict alone (consumer, tests, bench: pyproject.toml), as make lint runs it
	$(BIN)/mypy

lint-deploy: venv $(HELM) ## helm lint --strict on each CI values file; docker-compose.yml against the Compose schema
	@echo "helm lint has no cluster: the chart's guards for the KEDA and Prometheus Operator APIs show as [INFO] Fail (tests/deploy renders them with those APIs)"
	@for values in deploy/helm/button-consumer/ci/*.yaml; do \
		echo "helm lint --strict -f $$values"; \
		$(HELM) lint --strict deploy/helm/button-consumer --kube-version $(KUBE_VERSION) -f $$values 2>&1 \
			| grep -v 'found symbolic link' ; test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

format: venv ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: venv $(HELM) ## Every test tier (unit, deploy, integration, e2e) against a real Kafka broker
	$(BIN)/python -m consumer.devtools.prereqs --monitoring
	HELM=$(CURDIR)/$(HELM) $(BIN)/pytest tests

test-unit: venv ## Unit tests only (no broker)
	$(BIN)/pytest tests/unit

test-deploy: venv $(HELM) ## The chart rendered and validated, the compose file checked (offline)
	HELM=$(CURDIR)/$(HELM) $(BIN)/pytest tests/deploy

test-integration: venv ## Integration and end-to-end tests (real broker)
	$(BIN)/python -m consumer.devtools.prereqs --monitoring
	$(BIN)/pytest tests/integration tests/e2e

demo: venv ## Local broker + Button sandbox + sample events + the consumer, then a summary
	$(BIN)/python -m consumer.devtools.prereqs
	$(BIN)/python -m consumer.devtools.demo

kafka-up: venv ## Start a local Kafka broker in the background; prints KAFKA_BOOTSTRAP_SERVERS=...
	@$(BIN)/python -m consumer.devtools.prereqs
	@$(BIN)/python -m consumer.devtools.localkafka up

kafka-down: venv ## Stop the broker started by kafka-up
	@$(BIN)/python -m consumer.devtools.localkafka down

sandbox: venv ## Run the Button sandbox on 127.0.0.1:8089 with API key sk-sandbox
	$(BIN)/button-consumer sandbox --host 127.0.0.1 --port 8089 --api-key sk-sandbox

bench: venv ## The service against its ceilings and peers (quixstreams, Kafka Connect), side by side (bench/README.md; about 15 minutes)
	$(BIN)/python -m bench

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .cache .run
