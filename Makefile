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

.PHONY: help venv up down status demo test bench clean checkov shellcheck package

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	@touch $@

venv: $(VENV)/.synced ## create .venv from the lock file

up: venv ## start Kafka and PostgreSQL, apply migrations, load the users (idempotent)
	$(PY) -m services up

down: ## stop the local Kafka and PostgreSQL
	@if [ -x $(PY) ]; then $(PY) -m services down; fi

status: venv ## show what runs and where
	$(PY) -m services status

demo: up ## simulate traffic, run the pipeline, print what it computed
	$(PY) -m services.demo

test: up checkov shellcheck ## run the whole test suite against real Kafka, Spark and PostgreSQL
	$(PY) -m pytest $(PYTEST_ARGS)

# Checkov's own pins conflict with Airflow's, so it gets a virtualenv of its own, from hashes.
$(CHECKOV): terraform/checkov-requirements.txt | $(UV)
	rm -rf $(TOOLS)/checkov
	python3 -m venv $(TOOLS)/checkov
	$(UV) pip install --quiet --python $(TOOLS)/checkov/bin/python --require-hashes -r terraform/checkov-requirements.txt
	@touch $@

checkov: $(CHECKOV) ## install Checkov (Terraform checks) in its own virtualenv

shellcheck: ## install Debian's shellcheck when missing (checks the Kafka VM's startup script)
	@command -v shellcheck >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq shellcheck; } \
		|| echo "shellcheck missing: install it (Debian: apt-get install -y shellcheck) or its test is skipped"

package: venv ## build the code Dataproc runs into build/gcp/code/, which terraform apply uploads
	$(PY) -m deploy.package

bench: up ## measure the streaming and batch jobs; figures go to bench/results/
	$(PY) -m bench.streaming
	$(PY) -m bench.batch

clean: down ## stop services and delete local state (data, downloads, checkpoints)
	rm -rf $(STATE)
