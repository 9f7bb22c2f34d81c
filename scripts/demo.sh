#!/usr/bin/env bash
# The main job: installs what is missing, builds bnorm, and runs the demonstration.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j "$(nproc)" --target bike_batch_norm
build/release/examples/bike_batch_norm
