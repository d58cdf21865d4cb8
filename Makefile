# fastinterp: the two everyday commands are `make demo` and `make test`.
# Each creates (or refreshes) .venv, installs what it needs and builds the
# Cython kernels when their sources changed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.fastinterp-installed
KERNEL_SOURCES := $(wildcard kernels/cpu/*.pyx kernels/cpu/*.pxd kernels/cpu/*.h kernels/include/fastinterp/*.h)
BUILT  := $(VENV)/.fastinterp-built

.PHONY: all venv build demo test test-sanitize test-fast bench bench-report gpu-check gpu-check-dry-run clean

all: build

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=68" wheel "Cython>=3.0" "numpy>=2.0" "scipy>=1.11"
	# torch is the test oracle only; this exact version is a CPU build.
	$(PY) -m pip install -q torch==2.13.0 || echo "torch==2.13.0 unavailable: torch-based tests will be skipped"
	$(PY) -m pip install -q --no-build-isolation -e ".[test,bench,demo,jax,dask,half,progress]"
	touch $(BUILT) $@

venv: $(STAMP)

# Rebuild the extensions in place when a .pyx/.pxd changed since the last build.
$(BUILT): $(STAMP) $(KERNEL_SOURCES)
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

bench: build
	mkdir -p .benchmarks
	unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; $(PY) -m pytest bench -q --benchmark-columns=median,iqr,ops --benchmark-sort=name --benchmark-json=.benchmarks/latest.json
	$(PY) bench/report.py .benchmarks/latest.json

# Put the last run's tables into README.md, between their bench markers only.
bench-report:
	$(PY) bench/report.py .benchmarks/latest.json --readme README.md

# On a machine with an NVIDIA GPU: install CuPy (and CUDA torch) for the driver's CUDA
# version, run the tests on the device, benchmark every op -> .benchmarks/gpu.md (< 8 min).
gpu-check: build
	$(PY) scripts/gpu_check.py

# Its CPU-only parts (argument parsing, the plan, the table writer on fake timings).
gpu-check-dry-run: venv
	$(PY) scripts/gpu_check.py --dry-run

clean:
	rm -rf build $(VENV) kernels/cpu/*.c kernels/cpu/*.so *.egg-info .benchmarks
