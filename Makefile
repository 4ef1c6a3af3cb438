# The two commands of README.md. Both build .venv from the CPU wheel of torch (never a CUDA build).
# --rootdir=tests: the repository root is itself a package (ComfyUI loads it so); a checkout folder
# named like ComfyUI-Flipbook is no importable name, so pytest must not treat the root as a package.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

.PHONY: demo test install
install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/python -m comfyui_flipbook demo --out flipbook_demo.webp

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q --rootdir=tests tests
