# voicebots — `make up` runs the system locally, `make test` runs the tests.
# Both create .venv and install the project into it on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The system tools each tier's tests run (scripts/require says how to get a missing one).
INTEGRATION_TOOLS := espeak-ng redis ip iptables docker-compose shellcheck
E2E_TOOLS := espeak-ng sox redis podman podman-compose runc debootstrap
# One tier's tests (the unit, integration and e2e markers tests/conftest.py gives each test
# module). pytest exits 5 when PYTEST_ARGS leaves none of a tier's tests: nothing to run there.
tier = $(BIN)/pytest -q -m $(1) $(PYTEST_ARGS) || [ $$? -eq 5 ]

.PHONY: up test test-unit test-integration test-e2e check lint format clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "voicebots needs Python >= 3.11 (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(STAMP)

up: $(STAMP)
	@scripts/require espeak-ng redis
	$(BIN)/voicebots up

# The static checks, then the tiers quickest first; the first that fails ends the run.
test: lint
	@scripts/require $(sort $(INTEGRATION_TOOLS) $(E2E_TOOLS))
	$(call tier,unit)
	$(call tier,integration)
	$(call tier,e2e)

test-unit: $(STAMP)
	$(call tier,unit)

test-integration: $(STAMP)
	@scripts/require $(INTEGRATION_TOOLS)
	$(call tier,integration)

test-e2e: $(STAMP)
	@scripts/require $(E2E_TOOLS)
	$(call tier,e2e)

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

check: test

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts
