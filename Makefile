# Two commands do all the set-up on a fresh machine (Python >= 3.10):
#   make demo   generated fundus images -> brief training -> ONNX -> ONNX Runtime (CPU) -> masks, CDR, overlays, FPS
#   make test   the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_out

.PHONY: install demo test typecheck clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	# Type stubs for the TensorRT 10.x Python API (no runtime code; --no-deps avoids the tensorrt stub wheel).
	$(PY) -m pip install --no-deps tensorrt-stubs
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m demo --out $(DEMO_DIR) $(DEMO_ARGS)

test: install
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory typecheck

# mypy against the TensorRT 10.x stubs; export.trt_typing_stubs repairs the published stubs into build/typings
# (as published they lack py.typed and do not parse, so mypy would silently treat tensorrt as Any).
typecheck: install
	$(PY) -m export.trt_typing_stubs
	$(PY) -m mypy --config-file mypy.ini

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache
