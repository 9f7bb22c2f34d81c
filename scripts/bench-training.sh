#!/usr/bin/env bash
# Training steps per second of bnorm vs PyTorch 1.13 (Debian's python3-torch) on the same
# networks, batch 60, same thread count: the 3×100 sigmoid MLP with BN and the small CNN with BN.
# Prints a Markdown table with the ratio. Usage: scripts/bench-training.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
scripts/setup-debian.sh --golden
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j "$(nproc)" --target bnorm_cli >/dev/null
bnorm=build/release/tools/bnorm/bnorm
rate_bnorm() {  # model steps extra-args...
  local model=$1 steps=$2; shift 2
  OMP_NUM_THREADS=$threads $bnorm train --model "$model" --steps "$steps" --eval-every 0 \
    --threads "$threads" --out build/bench-training "$@" 2>/dev/null |
    sed -n 's/^\([0-9.]*\) steps\/s.*/\1/p'
}
mlp_b=$(rate_bnorm mlp 3000)
cnn_b=$(rate_bnorm cnn 150 --activation relu --lr 0.05 --momentum 0.9)
mlp_t=$(/usr/bin/python3 scripts/bench/train_speed_torch.py --model mlp --steps 3000 --threads "$threads" | awk '{print $4}')
cnn_t=$(/usr/bin/python3 scripts/bench/train_speed_torch.py --model cnn --steps 150 --threads "$threads" | awk '{print $4}')
echo "| model (batch 60, BN, $threads threads) | bnorm steps/s | PyTorch 1.13 steps/s | ratio |"
echo "|---|---|---|---|"
awk -v b="$mlp_b" -v t="$mlp_t" 'BEGIN { printf "| 784-100-100-100-10 sigmoid MLP | %s | %s | %.2f× |\n", b, t, b / t }'
awk -v b="$cnn_b" -v t="$cnn_t" 'BEGIN { printf "| CNN conv32-conv64-fc128 | %s | %s | %.2f× |\n", b, t, b / t }'
