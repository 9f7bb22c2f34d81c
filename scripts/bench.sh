#!/usr/bin/env bash
# Installs the peers (oneDNN, libtorch), builds bnorm_bench in Release, runs every registry
# implementation and the peers on bench/shapes/*.txt in one process, and prints the Markdown
# table for doc/benchmarks.md. Usage: scripts/bench.sh [extra bnorm_bench/Google Benchmark flags]
# BNORM_BENCH_RUNS=N (default 3) runs the suite N times; the table takes each time's median over
# the runs (a noisy machine moves single rows by up to 2× between runs). The JSON of run k stays
# in build/bench/bench-k.json; a bar chart of the ratios goes to $BNORM_BENCH_PLOT (default
# build/bench/ratios.png; doc/benchmark-ratios.png is a copy).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh --bench >&2
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DBNORM_BUILD_BENCHMARKS=ON \
      -DBNORM_WITH_ONEDNN=ON -DBNORM_WITH_LIBTORCH=ON -DBNORM_BUILD_TESTS=OFF \
      -DBNORM_BUILD_EXAMPLES=OFF -DBNORM_BUILD_CLI=OFF >/dev/null
cmake --build build/bench -j "$(nproc)" --target bnorm_bench >&2
runs=${BNORM_BENCH_RUNS:-3}
files=()
for k in $(seq "$runs"); do
  echo "bench.sh: run $k of $runs" >&2
  build/bench/bench/bnorm_bench --benchmark_out="build/bench/bench-$k.json" \
      --benchmark_out_format=json "$@" >&2
  files+=("build/bench/bench-$k.json")
done
plot=${BNORM_BENCH_PLOT:-build/bench/ratios.png}
python3 scripts/bench/table.py --plot "$plot" "${files[@]}"
echo "bench.sh: bar chart of the ratios in $plot" >&2
