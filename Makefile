# eeveepy: `make up` runs the bot on the default config, `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= config/eevee.toml
JS     := operators/js

.PHONY: help venv js up test lint format pytest bench bench-peers schemas clean chat-servers

help:
	@echo "make up       start eevee (embedded NATS, default operators) on $(CONFIG)"
	@echo "make test     lint (ruff, mypy --strict) and run the whole test suite"
	@echo "make bench    run the benchmarks and print figures"
	@echo "make bench-peers  eeveepy beside Sopel and errbot on one ngircd (installs them in $(PEERS))"
	@echo "make schemas  regenerate the JSON Schemas in schemas/ and docs/configuration.md"
	@echo "make lint     ruff and mypy only"
	@echo "make js       install the JavaScript operators' npm dependencies (npm ci)"
	@echo "make chat-servers  apt-install ngircd, inspircd, anope, prosody for the connector tests (if missing)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

# The JavaScript operators' dependencies (the `nats` client), exactly as package-lock.json says.
# Without npm this says so and carries on (their test is skipped when node is missing too).
$(JS)/node_modules: $(JS)/package.json $(JS)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix $(JS) --no-audit --no-fund && touch $@; \
	else \
		echo "npm not found: not installing $@ (the JavaScript operator cannot run)"; \
	fi

js: $(JS)/node_modules

up: $(STAMP) $(JS)/node_modules
	$(BIN)/eevee up -c $(CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check eeveepy operators tests
	$(BIN)/ruff format --check eeveepy operators tests
	$(BIN)/mypy

pytest: $(STAMP) $(JS)/node_modules
	$(BIN)/pytest -q

test: lint pytest

format: $(STAMP)
	$(BIN)/ruff check --fix eeveepy operators tests
	$(BIN)/ruff format eeveepy operators tests

# The chat servers the connector tests run against (apt; only those missing). .ci/run does it too.
chat-servers:
	bash .ci/chat-servers

bench: $(STAMP)
	$(BIN)/python -m tests.bench

# The single-process peers (pinned: the versions the figures in docs/benchmarks.md are of), in a
# venv of their own, never the project's. Without a registry to install from, the benchmark
# says so and measures eeveepy alone.
PEERS := .bench/peers
$(PEERS)/.installed:
	@test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	@if $(PEERS)/bin/python -m pip install --quiet "sopel==8.0.4" "errbot[irc]==6.2.1"; then \
		touch $@; \
	else \
		echo "could not install sopel and errbot into $(PEERS): measuring eeveepy alone"; \
	fi

bench-peers: $(STAMP)
	@$(MAKE) --no-print-directory $(PEERS)/.installed
	$(BIN)/python -m tests.bench.peers --peers-python $(PEERS)/bin/python

schemas: $(STAMP)
	$(BIN)/eevee schema --out schemas
	$(BIN)/eevee config reference --out docs/configuration.md

clean:
	rm -rf $(VENV) .bench .pytest_cache .mypy_cache .ruff_cache $(JS)/node_modules
