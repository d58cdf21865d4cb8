#!/usr/bin/env bash
# `make test-sanitize`: build the Cython kernels with AddressSanitizer and
# UndefinedBehaviorSanitizer into build/sanitize/ (the in-place build that
# `make test` uses is left alone) and run the test suite against that build
# with the sanitizer runtimes preloaded. Any sanitizer report, in the test
# process or in a subprocess it starts, fails the run.
#
#   scripts/test-sanitize.sh [pytest arguments]     (default: the whole suite)
#
# PY selects the interpreter (default .venv/bin/python); it needs the test
# dependencies that `make test` installs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
PY=${PY:-$root/.venv/bin/python}
case $PY in /*) ;; */*) PY=$root/$PY ;; esac   # the tests run from another directory
CC=${CC:-gcc}
out=$root/build/sanitize
lib=$out/lib
reports=$out/reports

# Rebuild from scratch when the build flags or the compiler change.
flags_id=$( { cat setup.py; "$CC" --version | head -n 1; "$PY" -V; } | sha256sum | cut -c1-16)
if [ "$(cat "$out/flags-id" 2>/dev/null)" != "$flags_id" ]; then
  rm -rf "$out"
fi
mkdir -p "$out"

# Pure-Python files first, then the extensions: a complete package under $lib,
# laid out like an installed wheel. The build's chatter goes to a log, shown on failure.
echo "test-sanitize: building the instrumented kernels in ${out#"$root"/}"
if ! { FASTINTERP_SANITIZE=1 "$PY" setup.py -q build_py --build-lib "$lib" --force &&
       FASTINTERP_SANITIZE=1 FASTINTERP_BUILD_JOBS=${FASTINTERP_BUILD_JOBS:-1} \
         "$PY" setup.py -q build_ext --build-lib "$lib" --build-temp "$out/temp"; } \
     > "$out/build.log" 2>&1; then
  cat "$out/build.log" >&2
  echo "test-sanitize: the instrumented build failed (log above, also in $out/build.log)" >&2
  exit 1
fi
echo "$flags_id" > "$out/flags-id"

# Every kernel module must be the instrumented one (never a copied in-place build):
# the helpers (_*.pyx) in fastinterp/_cpu, the families in the one variant built
# (FASTINTERP_SANITIZE builds `native` only; see setup.py).
n_pyx=$(ls kernels/cpu/*.pyx | wc -l)
n_so=0
for so in "$lib"/fastinterp/_cpu/*.so "$lib"/fastinterp/_cpu/variants/*/*.so; do
  if ! readelf -d "$so" | grep -q 'NEEDED.*libasan'; then
    echo "test-sanitize: $so is not built with AddressSanitizer" >&2
    exit 1
  fi
  n_so=$((n_so + 1))
done
if [ "$n_so" -ne "$n_pyx" ]; then
  echo "test-sanitize: expected $n_pyx instrumented modules in $lib/fastinterp/_cpu; found $n_so" >&2
  exit 1
fi

rm -rf "$reports"
mkdir -p "$reports"
asan=$("$CC" -print-file-name=libasan.so)
ubsan=$("$CC" -print-file-name=libubsan.so)
export LD_PRELOAD="$asan $ubsan${LD_PRELOAD:+ $LD_PRELOAD}"
# Leak checking is off: CPython and its extensions keep memory until exit on purpose.
# allocator_may_return_null: a huge request fails with NULL (and MemoryError) as in a
# normal build, instead of an ASan abort, so the out-of-memory tests keep their meaning.
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:log_path=$reports/asan:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan:${UBSAN_OPTIONS:-}"
# Tests that cannot hold under a sanitizer (RSS flatness, address-space limits) skip on this.
export FASTINTERP_SANITIZE=1
export PYTHONPATH="$lib${PYTHONPATH:+:$PYTHONPATH}"

# Run from inside the build directory so that the source tree's fastinterp/
# (the working directory is first on sys.path) cannot shadow the instrumented copy;
# subprocesses started by the tests inherit both the directory and PYTHONPATH.
cd "$out"
"$PY" - <<'EOF'
import fastinterp, fastinterp._cpu.blend as blend, os
lib = os.environ["PYTHONPATH"].split(os.pathsep)[0]
assert blend.__file__.startswith(lib), f"fastinterp kernels imported from {blend.__file__}, not {lib}"
print("test-sanitize: fastinterp from", os.path.dirname(fastinterp.__file__))
EOF
# Test paths given relative to the repository root keep working from here.
args=()
paths=0
for a in "$@"; do
  if [[ $a != -* && $a != /* && -e $root/${a%%::*} ]]; then a=$root/$a; fi
  if [[ $a == /* ]]; then paths=1; fi
  args+=("$a")
done
[ "$paths" = 1 ] || args+=("$root/tests")
status=0
"$PY" -m pytest -p no:cacheprovider -q --rootdir "$root" "${args[@]}" || status=$?

if compgen -G "$reports/*" > /dev/null; then
  echo "test-sanitize: sanitizer reports (each file is one process):" >&2
  for f in "$reports"/*; do
    echo "==== $f" >&2
    head -n 60 "$f" >&2
  done
  exit 1
fi
if [ "$status" -ne 0 ]; then
  # a report that halts the process inside a test can be lost with pytest's captured output
  echo "test-sanitize: pytest failed (status $status) without a report file; if it stopped" \
       "without a summary, a sanitizer halted it: rerun the last file shown with" \
       "'scripts/test-sanitize.sh tests/<file> -x -vv -s' to see the report" >&2
fi
exit "$status"
