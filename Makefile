# Two commands do all the set-up on a fresh machine (Python >= 3.10):
#   make demo   generated fundus images -> brief training -> ONNX -> ONNX Runtime (CPU) -> masks, CDR, overlays, FPS
#   make test   the test suite (then make test-serve: the Triton server's tests in their own venv)
# The package's base install (`pip install .`) is the torch-free runtime; make demo adds the
# [train] and [export] extras, make test the [dev] extra (everything plus the test tools).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
VENV_SERVE ?= .venv-serve
PY_SERVE := $(VENV_SERVE)/bin/python
DEMO_DIR ?= demo_out
WHEELHOUSE := $(VENV)/wheelhouse

.PHONY: install demo test test-serve typecheck wheelhouse browser clean

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

# Chromium for the screening report's browser tests (tests/rfnet/common/test_report.py): Debian's
# package where apt can install it; elsewhere those tests are skipped with the reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)); } || \
	  echo "no chromium installed: the report's browser tests will be skipped"

test: install wheelhouse browser
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory typecheck
	$(MAKE) --no-print-directory test-serve

# The serving environment has its own venv: nvidia-pytriton pins numpy<2 (and so OpenCV 4.x), while
# .venv stays on numpy 2. It is what a server gets (the [serve] extra, no torch) plus what the
# torch-free tests need (onnx builds their model, pytest, scipy, the TensorRT stubs); in it, the Triton
# tests (marker serve, skipped in .venv) and the torch-free runtime / shared tests run.
$(VENV_SERVE)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV_SERVE)
	$(PY_SERVE) -m pip install --upgrade pip
	$(PY_SERVE) -m pip install -e ".[serve]" "onnx>=1.15" "pytest>=7.4" "scipy>=1.10"
	$(PY_SERVE) -m pip install --no-deps tensorrt-stubs
	touch $@

test-serve: $(VENV_SERVE)/.installed
	$(PY_SERVE) -m pytest -q tests/runtime tests/rfnet/common

# mypy against the TensorRT 10.x stubs; rfnet.export.trt.trt_typing_stubs repairs the published stubs into build/typings
# (as published they lack py.typed and do not parse, so mypy would silently treat tensorrt as Any).
typecheck: install
	$(PY) -m rfnet.export.trt.trt_typing_stubs
	$(PY) -m tests.support.layout build/typecheck
	cd build/typecheck && "$(abspath $(PY))" -m mypy --config-file "$(CURDIR)/mypy.ini"

clean:
	rm -rf $(VENV) $(VENV_SERVE) $(DEMO_DIR) .pytest_cache .mypy_cache
