# One entry point for setup, serving, tests and benchmarks. Everything installs into ./.venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
HOST   ?= 127.0.0.1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# SQuAD 2.0 dev split for `make bench` (not in the repository; see bench/RESULTS.md).
SQUAD  ?= ../shared/bench/squad-v2.0-dev.json

.PHONY: help install install-test install-bench browser redis serve index smoke test lint bench quant-gate audit clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/qa: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch lies on this machine's disk; installing it first keeps pip from
	# resolving a multi-GB CUDA build for sentence-transformers.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	@touch $@

install: $(BIN)/qa ## Create .venv and install the service

$(BIN)/pytest: $(BIN)/qa
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

install-test: $(BIN)/pytest ## Install the test dependencies too

install-bench: install-test ## Install the benchmark tools too (profiler)
	$(BIN)/pip install --quiet -e '.[test,bench]'

browser: ## Install Debian's chromium and chromedriver for the browser tests (needs root)
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	      || echo "could not install chromium: browser tests will be skipped"; \
	  else echo "not root: cannot install chromium; browser tests will be skipped"; fi; \
	fi

redis: ## Install Debian's redis-server for the rate-limit tests against a real Redis (needs root)
	@if ! command -v redis-server >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
	      || echo "could not install redis-server: the Redis test will be skipped"; \
	  else echo "not root: cannot install redis-server; the Redis test will be skipped"; fi; \
	fi

index: install ## Build or update the index from corpus/
	$(BIN)/qa index

serve: install ## Install, build the index when missing, and serve on http://$(HOST):$(PORT)
	$(BIN)/qa serve --host $(HOST) --port $(PORT)

smoke: ## A newcomer's path in throwaway venvs: make serve, and a wheel served from elsewhere
	$(PYTHON) tests/smoke.py

test: install-test browser redis ## Install and run the whole test suite (lint, types, tests)
	$(BIN)/ruff check qa tests bench
	$(BIN)/mypy qa
	$(BIN)/python -m pytest -p no:cacheprovider

lint: install-test ## Lint and type-check only
	$(BIN)/ruff check qa tests bench
	$(BIN)/mypy qa

bench: install-bench ## Run the benchmarks (figures go to bench/RESULTS.md by hand; SQUAD=path)
	@if [ -f "$(SQUAD)" ]; then $(BIN)/python bench/squad.py --data "$(SQUAD)"; \
	else echo "SQuAD 2.0 dev split not found at $(SQUAD): skipping bench/squad.py" \
	  "(get dev-v2.0.json from the SQuAD site and run: make bench SQUAD=path/to/it)"; fi
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/ingest.py --squad "$(SQUAD)"
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/serve_memory.py --chunks 1000000
	$(BIN)/qa index
	$(BIN)/python bench/rerank_ceiling.py

quant-gate: install-bench ## Quantize the query encoder to int8 and ship it only if it keeps quality (SQUAD=path)
	$(BIN)/python bench/quant_gate.py --squad "$(SQUAD)"

audit: install-test ## Check installed dependencies against known vulnerabilities (pip-audit)
	$(BIN)/pip install --quiet pip-audit
	# The vulnerability services must be reachable; where they are not, say so and go on.
	$(BIN)/pip-audit --progress-spinner off --skip-editable --desc off 2>&1 | grep -v "could not be audited" \
	  || echo "pip-audit could not complete: no vulnerability database reachable from here"

clean: ## Remove the venv and built indexes
	rm -rf $(VENV) index/builds index/cache index/CURRENT
