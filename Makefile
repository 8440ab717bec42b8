# Two commands for a fresh machine: `make demo` and `make test`.
# Each bootstraps what it needs (virtual environment, dependencies, generated code).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROTOS := $(wildcard proto/cortex/v1/*.proto)

.PHONY: demo test lint proto clean bench-micro bench bench-quick browserd-setup

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Generated protobuf/gRPC code lives in cortex/v1 (not committed); this is the
# one command that reproduces it.
cortex/v1/.generated: $(PROTOS) $(VENV)/.installed
	mkdir -p cortex/v1
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)
	touch cortex/v1/__init__.py
	touch $@

proto: cortex/v1/.generated

# browserd drives Debian's Chromium (Playwright cannot download its own browser here);
# installed once, skipped when the binary is there.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

browserd-setup: $(CHROMIUM)

demo: cortex/v1/.generated $(CHROMIUM)
	$(PY) -m examples.demo

lint: cortex/v1/.generated
	$(PY) -m ruff check .
	$(PY) -m mypy

test: lint $(CHROMIUM)
	$(PY) -m pytest tests

# Micro-benchmarks (signing inline vs pool, rings vs socketpair); not part of `make test`.
bench-micro: cortex/v1/.generated
	$(PY) -m bench.run_micro

# Scenarios against the real cortexd (bench/README.md): writes bench/results/latest.{json,png}.
# The bench extra (Celery, Locust, matplotlib) is installed on first use.
$(VENV)/.bench-installed: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

bench: cortex/v1/.generated $(VENV)/.bench-installed
	$(PY) -m bench.suite full

bench-quick: cortex/v1/.generated $(VENV)/.bench-installed
	$(PY) -m bench.suite quick

clean:
	rm -rf cortex/v1 $(VENV) .pytest_cache .mypy_cache .ruff_cache
