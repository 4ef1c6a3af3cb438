# The two commands of README.md. Both build .venv first. torch comes from pip's configured index:
# on a machine whose pip offers a local CPU wheel that is the CPU build; on a stock machine plain PyPI
# resolves torch==2.13.0 to the CUDA build (several GB). TORCH_INDEX picks another index for torch only:
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu     # the CPU build (README "Two commands")
# --rootdir=tests: the repository root is itself a package (ComfyUI loads it so); a checkout folder
# named like ComfyUI-Flipbook is no importable name, so pytest must not treat the root as a package.
PY ?= python3
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

.PHONY: demo test install
install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/python -m comfyui_flipbook demo --out flipbook_demo.webp

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q --rootdir=tests tests
