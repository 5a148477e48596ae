# Entry points of ARCHITECTURE.md. Every target installs what it needs first, so each works on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.8
STATE      := .state
TOOLS      := $(STATE)/tools
UV         := $(TOOLS)/bin/uv
VENV       := .venv
PY         := $(VENV)/bin/python
PYTEST_ARGS ?=
CHECKOV    := $(TOOLS)/checkov/bin/checkov
# Go tools the tests build from the Go module proxy: Compose's own loader, the GCS emulator.
GO_BIN     := $(abspath $(TOOLS))/go/bin
COMPOSEENV := $(GO_BIN)/composeenv
FAKE_GCS_SERVER_VERSION := v1.56.1
FAKE_GCS_SERVER := $(GO_BIN)/fake-gcs-server-$(FAKE_GCS_SERVER_VERSION)
SUPERSET_VENV := $(STATE)/superset-venv
SUPERSET_PORT ?= 8088
# Operating-system packages (Java, Maven, PostgreSQL, Go, shellcheck, chromium): one script for
# this Makefile and .ci/run, that installs with apt-get only what is missing.
SYSTEM_PACKAGES := scripts/system-packages.sh

.PHONY: help system-packages venv up down status demo test test-unit lint bench clean checkov shellcheck go-tools package superset-venv superset chromium test-e2e

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	@touch $@

venv: $(VENV)/.synced ## create .venv from the lock file

system-packages: ## install every operating-system package the targets use, when missing (root)
	$(SYSTEM_PACKAGES) java maven postgresql go shellcheck chromium

up: venv ## start Kafka and PostgreSQL, fetch Spark's jars, apply migrations, load the users (idempotent)
	@$(SYSTEM_PACKAGES) java maven $(if $(PG_DSN),,postgresql)
	$(PY) -m localstack up
	$(PY) -m devtools.maven spark-kafka
	$(PY) -m migrations

down: ## stop the local Kafka and PostgreSQL
	@if [ -x $(PY) ]; then $(PY) -m localstack down; fi

status: venv ## show what runs and where, the streaming lag, the last micro-batch and the hours to look at
	$(PY) -m localstack status
	$(PY) -m spark_jobs.health

demo: up ## simulate traffic, run the pipeline, print what it computed
	$(PY) -m devtools.demo

test: up checkov shellcheck go-tools ## run the whole test suite against real Kafka, Spark and PostgreSQL
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv ## the inner loop: unit and DAG tests, no services started (under two minutes)
	$(PY) -m pytest tests/unit tests/dags -m "not services" -q $(PYTEST_ARGS)

lint: venv ## ruff (lint and format) and mypy, as configured in pyproject.toml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Checkov's own pins conflict with Airflow's, so it gets a virtualenv of its own, from hashes.
$(CHECKOV): terraform/checkov-requirements.txt | $(UV)
	rm -rf $(TOOLS)/checkov
	python3 -m venv $(TOOLS)/checkov
	$(UV) pip install --quiet --python $(TOOLS)/checkov/bin/python --require-hashes -r terraform/checkov-requirements.txt
	@touch $@

checkov: $(CHECKOV) ## install Checkov (Terraform checks) in its own virtualenv

# Resolves docker-compose.airflow.yml's environment as `docker compose config` does (no Docker here).
$(COMPOSEENV): tests/infra/composeenv/main.go tests/infra/composeenv/go.mod tests/infra/composeenv/go.sum
	@$(SYSTEM_PACKAGES) go
	cd tests/infra/composeenv && GOFLAGS=-mod=readonly go build -o $(COMPOSEENV) .

# The Cloud Storage emulator the gs:// tests start (devtools/gcs_emulator.py).
$(FAKE_GCS_SERVER):
	@$(SYSTEM_PACKAGES) go
	mkdir -p $(GO_BIN)/.build
	GOBIN=$(GO_BIN)/.build go install github.com/fsouza/fake-gcs-server@$(FAKE_GCS_SERVER_VERSION)
	mv $(GO_BIN)/.build/fake-gcs-server $@

go-tools: $(COMPOSEENV) $(FAKE_GCS_SERVER) ## build the Go tools of the tests (Compose's loader, the GCS emulator)

shellcheck: ## install Debian's shellcheck when missing (checks the shell scripts)
	@$(SYSTEM_PACKAGES) shellcheck || echo "shellcheck missing: its tests are skipped"

package: venv ## build the code Dataproc runs into build/gcp/code/, which terraform apply uploads
	$(PY) -m deploy.package

bench: up ## measure the streaming and batch jobs and the serving views; figures go to bench/results/
	$(PY) -m bench.streaming
	$(PY) -m bench.batch
	$(PY) -m bench.serving

# Superset pins conflict with Airflow's: its own venv, from the hashes of superset/requirements.txt.
$(SUPERSET_VENV)/.synced: superset/requirements.txt | $(UV)
	rm -rf $(SUPERSET_VENV)
	python3 -m venv $(SUPERSET_VENV)
	$(UV) pip install --quiet --python $(SUPERSET_VENV)/bin/python --require-hashes -r superset/requirements.txt
	@touch $@

superset-venv: $(SUPERSET_VENV)/.synced ## create Superset's own venv (pinned, with hashes)

superset: up superset-venv ## set up Superset with the dashboards of superset/ and serve it on localhost:8088
	./superset.sh setup
	@echo "Superset: http://localhost:$(SUPERSET_PORT)/superset/dashboard/mobile-usage/ (user $${SUPERSET_ADMIN_USERNAME:-admin})"
	./superset.sh run --host 127.0.0.1 --port $(SUPERSET_PORT) --with-threads

chromium: ## install Debian's chromium and chromium-driver when missing (the browser of test-e2e)
	@$(SYSTEM_PACKAGES) chromium

test-e2e: up superset-venv chromium ## the dashboard in headless Chromium against Superset and a pipeline run; writes docs/dashboard.png
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

clean: down ## stop services and delete local state (data, downloads, checkpoints)
	rm -rf $(STATE)
