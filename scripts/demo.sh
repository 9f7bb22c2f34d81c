#!/usr/bin/env bash
# The main job: installs what is missing, builds bnorm (Release), and runs the BN vs no-BN
# demonstration on Fashion-MNIST: `bnorm compare --quick` (about a minute on 2 cores), which
# writes report/report.md with a PNG plot per claim. Pass --full for the full experiment
# (50,000-step runs and 3 seeds; it states its time in the report).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=--quick
for arg in "$@"; do
  case "$arg" in
    --full) quick="" ;;
    *) echo "demo.sh: unknown option $arg (expected --full)" >&2; exit 2 ;;
  esac
done
scripts/setup-debian.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j "$(nproc)" --target bnorm_cli bike_batch_norm
echo "== The seed's bike example: two features of wildly different ranges through BatchNorm1d"
build/release/examples/bike_batch_norm
echo
echo "== Training with and without Batch Normalization on Fashion-MNIST"
build/release/tools/bnorm/bnorm compare $quick --out report
echo
echo "Report: $(pwd)/report/report.md   Plots: $(pwd)/report/*.png"
