# The two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# System tools the test suite drives (Debian package names).
TEST_DEBS := pebble curl openssl
BENCH_DEBS := nginx nghttp2-client wrk certbot

.PHONY: demo test lint typecheck pytest test-deps bench bench-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nitrotls demo $(DEMO_ARGS)

test: $(STAMP) test-deps lint typecheck pytest

test-deps:
	@bash scripts/install-debs.sh $(TEST_DEBS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

bench-deps:
	@bash scripts/install-debs.sh $(BENCH_DEBS)

bench: $(STAMP) bench-deps
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
