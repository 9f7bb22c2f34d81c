#!/usr/bin/env bash
# Installs every Debian package bnorm needs, with apt-get. Idempotent; prints nothing when all
# are present. Usage: scripts/setup-debian.sh [--bench] [--golden]
#   --bench   also the benchmark peers (oneDNN, libtorch)
#   --golden  also python3-torch, to regenerate tests/data with scripts/golden/*.py
set -euo pipefail

packages=(cmake make g++ pkg-config libfmt-dev libgtest-dev libgmock-dev nlohmann-json3-dev
          libhwy-dev libopenblas-dev libopenblas0-openmp libcli11-dev zlib1g-dev
          gnuplot-nox dataset-fashion-mnist libbenchmark-dev)
for arg in "$@"; do
  case "$arg" in
    --bench) packages+=(libdnnl-dev libtorch-dev ocl-icd-opencl-dev opencl-c-headers) ;;
    --golden) packages+=(python3-torch) ;;
    *) echo "setup-debian.sh: unknown option $arg (expected --bench or --golden)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup-debian.sh: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
