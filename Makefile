# Every target installs what it needs: a fresh clone needs Python 3.11+, Java 17+ and Maven.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help venv lint format typecheck test test-unit test-integration demo kafka-up kafka-down sandbox bench clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "python3 (3.11+) is required" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP) ## Create the virtualenv and install the project with its development tools

lint: venv ## ruff, mypy --strict and the layer contracts (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: venv ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: venv ## Every test tier (unit, integration, e2e) against a real Kafka broker
	$(BIN)/python -m consumer.devtools.prereqs
	$(BIN)/pytest tests

test-unit: venv ## Unit tests only (no broker)
	$(BIN)/pytest tests/unit

test-integration: venv ## Integration and end-to-end tests (real broker)
	$(BIN)/python -m consumer.devtools.prereqs
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

bench: venv ## Transport and sandbox benchmarks (see bench/README.md)
	$(BIN)/python -m bench

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .cache .run
