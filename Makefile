# Two commands do all the set-up on a fresh machine (Python >= 3.10):
#   make demo   generated fundus images -> brief training -> ONNX -> ONNX Runtime (CPU) -> masks, CDR, overlays, FPS
#   make test   the test suite
# The package's base install (`pip install .`) is the torch-free runtime; make demo adds the
# [train] and [export] extras, make test the [dev] extra (everything plus the test tools).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_out
WHEELHOUSE := $(VENV)/wheelhouse

.PHONY: install demo test typecheck wheelhouse clean

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	touch $@

# What make demo runs: the runtime, training and export.
$(VENV)/.installed-demo: $(VENV)/.created setup.cfg pyproject.toml
	$(PY) -m pip install -e ".[train,export]"
	touch $@

# What make test runs: everything ([dev]) and the TensorRT 10.x type stubs for mypy.
$(VENV)/.installed: $(VENV)/.created setup.cfg pyproject.toml
	$(PY) -m pip install -e ".[dev]"
	# Type stubs for the TensorRT 10.x Python API (no runtime code; --no-deps avoids the tensorrt stub wheel).
	$(PY) -m pip install --no-deps tensorrt-stubs
	touch $@

install: $(VENV)/.installed

# Wheels of the base install's dependencies (from pip's cache after the install), for
# tests/runtime/test_base_install.py, which installs the base wheel into a fresh venv without network.
$(WHEELHOUSE)/.done: $(VENV)/.created setup.cfg pyproject.toml
	$(PY) -m pip download --quiet --only-binary=:all: --dest $(WHEELHOUSE) .
	touch $@

wheelhouse: $(WHEELHOUSE)/.done

demo: $(VENV)/.installed-demo
	$(PY) -m demo --out $(DEMO_DIR) $(DEMO_ARGS)

test: install wheelhouse
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory typecheck

# mypy against the TensorRT 10.x stubs; export.trt_typing_stubs repairs the published stubs into build/typings
# (as published they lack py.typed and do not parse, so mypy would silently treat tensorrt as Any).
typecheck: install
	$(PY) -m export.trt_typing_stubs
	$(PY) -m mypy --config-file mypy.ini

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache
