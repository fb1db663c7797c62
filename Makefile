# The two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# System tools the test suite drives (Debian package names).
TEST_DEBS := pebble curl openssl
BENCH_DEBS := nginx nghttp2-client wrk certbot
# What installing needs to compile the server's hot path (setup.py; without it: interpreted).
BUILD_DEBS := gcc

.PHONY: demo test lint typecheck pytest test-deps bench bench-deps compat clean

# Virtual environment $(1), made with interpreter $(2) if missing, holding nitrotls and its test
# needs (one shell line, so that compat can run it inside its loop).
venv_install = (test -x $(1)/bin/python || $(2) -m venv $(1)) \
	&& $(1)/bin/python -m pip install -q --upgrade pip \
	&& $(1)/bin/python -m pip install -q -e '.[test]'

# The install compiles the server's hot path (setup.py, mypyc): redo it when a server module
# changes (an out-of-date build is never imported, but it runs interpreted: slower).
$(STAMP): pyproject.toml setup.py $(wildcard src/nitrotls/server/*.py)
	@bash scripts/install-debs.sh $(BUILD_DEBS)
	$(call venv_install,$(VENV),$(PYTHON))
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nitrotls demo $(DEMO_ARGS)

test: $(STAMP) test-deps lint typecheck pytest

test-deps:
	@bash scripts/install-debs.sh $(TEST_DEBS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench setup.py
	$(BIN)/ruff format --check src tests bench setup.py

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

# The suite runs the compiled hot path (what ships); the server's own tests run once more on
# the interpreted sources, which serve wherever the build could not compile.
pytest: $(STAMP)
	NITROTLS_PURE_PYTHON=1 $(BIN)/pytest -q -p no:cacheprovider tests/server
	$(BIN)/pytest $(PYTEST_ARGS)

bench-deps:
	@bash scripts/install-debs.sh $(BENCH_DEBS)

bench: $(STAMP) bench-deps
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

# The server's direct libssl path on other CPython releases (_CHECKED_RELEASES in
# src/nitrotls/server/tls.py): its tests in one virtual environment per interpreter.
# PYTHONS takes commands or paths, e.g. PYTHONS="$$HOME/.pyenv/versions/3.12.1/bin/python3".
PYTHONS ?= python3.12 python3.13
compat:
	for py in $(PYTHONS); do \
	  version=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])') || exit 1; \
	  venv=.venv-python$$version; \
	  $(call venv_install,$$venv,$$py) || exit 1; \
	  $$venv/bin/pytest -q -p no:cacheprovider tests/server/test_tls.py \
	    tests/server/test_tlsconn.py || exit 1; \
	done

clean:
	rm -rf $(VENV) .venv-python3.* .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
	find src -name '*.so' -delete; rm -f src/nitrotls/server/native-build.json
