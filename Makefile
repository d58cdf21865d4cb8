# fastinterp: the two everyday commands are `make demo` and `make test`.
# Each creates (or refreshes) .venv, installs what it needs and builds the
# Cython kernels when their sources changed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.fastinterp-installed
KERNEL_SOURCES := $(wildcard kernels/cpu/*.pyx kernels/cpu/*.pxd kernels/cpu/*.h kernels/include/fastinterp/*.h)
WHEEL_DIR := dist
BUILT  := $(VENV)/.fastinterp-built

.PHONY: all venv build demo test test-sanitize test-fast test-wheel wheel typecheck bench bench-report \
        bench-check bench-baseline bench-trend gpu-check gpu-check-dry-run clean

all: build

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=68" wheel "Cython>=3.0" "numpy>=2.0" "scipy>=1.11"
	# torch is the test oracle only; this exact version is a CPU build.
	$(PY) -m pip install -q torch==2.13.0 || echo "torch==2.13.0 unavailable: torch-based tests will be skipped"
	$(PY) -m pip install -q --no-build-isolation -e ".[test,bench,demo,jax,dask,half,progress]"
	touch $(BUILT) $@

venv: $(STAMP)

# Rebuild the extensions in place when a .pyx/.pxd changed since the last build:
# every kernel family once per CPU variant (kernels/cpu/variants/<variant>/; see
# setup.py). FASTINTERP_NATIVE=1 builds one -march=native variant instead;
# FASTINTERP_VARIANTS=x86-64-v4 only the variants named (a quicker rebuild).
# Variants not built now, and modules of the older one-build layout
# (kernels/cpu/<family>.so), are removed; a change of flags rebuilds everything.
$(BUILT): $(STAMP) $(KERNEL_SOURCES) setup.py
	$(PY) setup.py -q build_ext --inplace
	touch $@

build: $(BUILT)

demo: build
	$(PY) -m fastinterp demo

test: build
	$(PY) -m pytest -q

# The test suite against a separate AddressSanitizer + UBSan build of the kernels
# (build/sanitize/; the in-place build above is left alone). Any sanitizer report fails it.
test-sanitize: venv
	PY=$(PY) scripts/test-sanitize.sh

# A wheel that runs on any x86-64 CPU (all variants inside) -> dist/.
wheel: venv
	rm -rf $(WHEEL_DIR)
	$(PY) -m pip wheel -q --no-build-isolation --no-deps -w $(WHEEL_DIR) .
	@ls $(WHEEL_DIR)/*.whl

# Install the wheel into a fresh venv and run tests against it (tests/test_wheel.py).
test-wheel: wheel
	FASTINTERP_WHEEL=$$(ls $(WHEEL_DIR)/fastinterp-*.whl) $(PY) -m pytest -q -p no:cacheprovider -m wheel tests/test_wheel.py

# mypy on the fastinterp package (configuration in pyproject.toml).
typecheck: venv
	$(PY) -m mypy

bench: build
	mkdir -p .benchmarks
	unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; $(PY) -m pytest bench -q --benchmark-columns=median,iqr,ops --benchmark-sort=name --benchmark-json=.benchmarks/latest.json
	$(PY) bench/report.py .benchmarks/latest.json

# Put the last run's tables into README.md, between their bench markers only.
bench-report:
	$(PY) bench/report.py .benchmarks/latest.json --readme README.md

# Quick benchmark subset (< 3 min) compared with bench/baseline.json as ratios to peers
# measured in the same run; fails when a ratio drops > 25%. History: .benchmarks/check/.
bench-check: build
	unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; $(PY) bench/check.py run

# Rewrite bench/baseline.json from a run of the same subset (commit it).
bench-baseline: build
	unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; $(PY) bench/check.py baseline

bench-trend:
	$(PY) bench/check.py trend

# On a machine with an NVIDIA GPU: install CuPy (and CUDA torch) for the driver's CUDA
# version, run the tests on the device, benchmark every op -> .benchmarks/gpu.md (< 8 min).
gpu-check: build
	$(PY) scripts/gpu_check.py

# Its CPU-only parts (argument parsing, the plan, the table writer on fake timings).
gpu-check-dry-run: venv
	$(PY) scripts/gpu_check.py --dry-run

clean:
	rm -rf build dist $(VENV) kernels/cpu/*.c kernels/cpu/*.so kernels/cpu/variants *.egg-info .benchmarks
