# billflow: `make help` lists the targets. Every target installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SAM_VENV := .tools/sam
SAM := $(SAM_VENV)/bin/sam
SAM_VERSION := 1.170.0
PORT ?= 3000
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= us-east-1

.DEFAULT_GOAL := help
.PHONY: help install run local test test-fast lint typecheck template validate build bench deploy clean openapi browser

help: ## list the targets (coloured on a terminal only)
	@if [ -t 1 ]; then on=$$'\033[36m'; off=$$'\033[0m'; else on=; off=; fi; \
	grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*?## "}; {printf "  %s%-12s%s %s\n", on, $$1, off, $$2}'

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

$(SAM).installed:
	@test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet "aws-sam-cli==$(SAM_VERSION)"
	@touch $@

install: $(BIN)/.installed ## create .venv and install billflow with its dev tools

run: install ## start the local stack with example rules and Stripe/Twenty stand-ins, send a won deal, keep serving
	@echo "Console: http://127.0.0.1:$(PORT)/console (open the link with its token, printed once started)"
	$(BIN)/python -m billflow_local.demo --port $(PORT)

local: install ## start the local stack only (no stand-ins: see README): RULES=folder CONNECTIONS=file PORT=3000
	@echo "Console: http://127.0.0.1:$(PORT)/console (open the link with its token, printed once started)"
	$(BIN)/python -m billflow_local --port $(PORT) --rules $${RULES:-examples/rules} --connections $${CONNECTIONS:-examples/local-connections.yaml}

test: install lint typecheck template browser ## everything CI runs: lint, types, template checks, all tests
	$(BIN)/pytest -n 2 --dist loadfile

# The console's browser tests (tests/browser) drive Debian's Chromium: installed with apt when missing and apt is
# there (CI runs as root on Debian); without a browser those tests skip and say why.
browser: ## install Chromium for the console's browser tests when missing (apt, as root)
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "no Chromium and no apt as root: the console's browser tests will be skipped (install chromium)"; fi

test-fast: install ## unit tests only
	$(BIN)/pytest tests/unit -q

lint: install ## ruff
	$(BIN)/ruff check .

typecheck: install ## mypy (strict)
	$(BIN)/mypy

template: install $(SAM).installed ## cfn-lint and sam validate --lint
	$(BIN)/cfn-lint template.yaml
	$(SAM) validate --lint --region $(AWS_DEFAULT_REGION)

build: $(SAM).installed ## sam build (arm64 wheels from PyPI; no Docker)
	$(SAM) build

bench: install $(SAM).installed ## cold imports, ingest latency, filter scaling, artifact sizes
	$(BIN)/python bench/run_all.py

openapi: install ## regenerate docs/admin-openapi.json from the admin API's code
	$(BIN)/python scripts/generate_openapi.py

deploy: build ## sam deploy --guided (your AWS account)
	$(SAM) deploy --guided

clean: ## remove build output and caches (keeps .venv)
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache
