#!/usr/bin/env bash
# Fetches, here, the Debian packages a bare GPU machine lacks into .deps/
# (about 45 MB, git-ignored) for bench/gpu_session.sh to unpack there: carry
# ".deps" with the device call. Needs apt-get (Debian/Ubuntu) on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps
cd .deps
apt-get download libopenblas0-pthread libopenblas-pthread-dev libopenblas-dev libgfortran5 zlib1g-dev \
  libcli11-dev nlohmann-json3-dev libgtest-dev libgmock-dev libbenchmark-dev libbenchmark1debian \
  dataset-fashion-mnist
du -sh .
