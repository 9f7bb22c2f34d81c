#!/usr/bin/env bash
# Installs what is missing, builds bnorm with warnings as errors, and runs the whole test suite
# with ctest. Exits non-zero on any failure.
# Usage: scripts/test.sh              Release build in build/test
#        scripts/test.sh --sanitize   Debug build with AddressSanitizer + UBSan in build/sanitize
set -euo pipefail
cd "$(dirname "$0")/.."

mode=release
for arg in "$@"; do
  case "$arg" in
    --sanitize) mode=sanitize ;;
    *) echo "test.sh: unknown option $arg (expected --sanitize)" >&2; exit 2 ;;
  esac
done

scripts/setup-debian.sh
jobs=$(nproc)
if [ "$mode" = sanitize ]; then
  dir=build/sanitize
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DBNORM_WERROR=ON \
        -DBNORM_SANITIZE=address,undefined >/dev/null
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  export BNORM_TEST_QUICK=1  # the sanitized run skips the largest problems (they take minutes)
else
  dir=build/test
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DBNORM_WERROR=ON >/dev/null
fi
cmake --build "$dir" -j "$jobs"
cd "$dir"
ctest --output-on-failure -j "$jobs"
