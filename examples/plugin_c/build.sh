#!/bin/sh
# Build the example plugin with the system C compiler:
#   ./build.sh            -> libfi_example.so next to this script
# PYTHON picks the interpreter fastinterp is installed in, CC the compiler.
set -eu
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
CC=${CC:-cc}
INCLUDE=$("$PYTHON" -c 'import fastinterp; print(fastinterp.get_include())')
"$CC" -std=c99 -O2 -Wall -Wextra -Werror -fPIC -shared -I "$INCLUDE" \
    scale_add.c -o libfi_example.so -lm
echo "built $(pwd)/libfi_example.so"
