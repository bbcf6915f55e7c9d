# genmesh: `make up` runs the whole mesh locally, `make test` runs every test.
# Both install into .venv on first use (llama.cpp is compiled once; pip caches the wheel).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A portable llama.cpp CPU build: the default native build segfaults on CPUs reporting AVX-512 + AMX.
# For a GPU build set e.g. LLAMA_CMAKE_ARGS="-DGGML_HIP=on -DAMDGPU_TARGETS=gfx1031" (ROCm) or "-DGGML_CUDA=on".
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
PYTEST_ARGS ?=
UP_ARGS ?=

.PHONY: install browser up test unit integration lint format protos bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel setuptools
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --quiet -e '.[servers,dev]'
	touch $(STAMP)

install: $(STAMP)

# The browser the web console's tests drive (Debian's Chromium), installed when missing and root.
browser:
	@sh tests/support/install_chromium.sh

up: install
	$(VENV)/bin/genmesh up $(UP_ARGS)

test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: install browser
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) protos/generate.py --buf-deps-only
	$(VENV)/bin/buf lint

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

protos: install
	$(PY) protos/generate.py

bench: install
	$(PY) bench/text.py
	$(PY) bench/openai.py
	$(PY) bench/image.py
	$(PY) bench/video.py
	$(PY) bench/training.py

clean:
	rm -rf $(VENV) .build .pytest_cache .ruff_cache
