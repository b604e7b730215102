#!/usr/bin/env bash
# One GPU session on a lent H100/H200: build from source, run the
# gpu-labelled tests and the GPU benchmarks, and leave logs and tables in
# $OUT (default ./gpu-out). Dependencies missing on the machine may travel as
# Debian packages in .deps/ (unpacked under /tmp/deps); cuDNN and NCCL may
# come from Python wheels (found through python3).
#   bash bench/gpu_session.sh [build|test|bench|all]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
what="${1:-all}"
log() { echo "== $(date +%T) $*"; }

prefix=""
if [ -d .deps ] && ls .deps/*.deb >/dev/null 2>&1; then
  mkdir -p /tmp/deps
  for f in .deps/*.deb; do dpkg -x "$f" /tmp/deps; done
  prefix=/tmp/deps/usr
  export LD_LIBRARY_PATH="$prefix/lib/x86_64-linux-gnu:$prefix/lib/x86_64-linux-gnu/openblas-pthread:${LD_LIBRARY_PATH:-}"
  # Tests and the default data path expect Fashion-MNIST where Debian puts it.
  if [ ! -e /usr/share/datasets/fashion-mnist ]; then
    mkdir -p /usr/share/datasets && ln -s "$prefix/share/datasets/fashion-mnist" /usr/share/datasets/fashion-mnist
  fi
fi
pyroot() { python3 -c "import importlib, os; m = importlib.import_module('$1'); print(os.path.dirname(m.__file__) if m.__file__ else list(m.__path__)[0])" 2>/dev/null; }
CUDNN_ROOT="${CUDNN_ROOT:-$(pyroot nvidia.cudnn)}"
NCCL_ROOT="${NCCL_ROOT:-$(pyroot nvidia.nccl)}"
export LD_LIBRARY_PATH="${CUDNN_ROOT:+$CUDNN_ROOT/lib:}${NCCL_ROOT:+$NCCL_ROOT/lib:}${LD_LIBRARY_PATH:-}"
B=build-gpu

if [ "$what" = build ] || [ "$what" = all ]; then
  log "machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
  nvcc --version | tail -1 | tee -a "$OUT/device.txt"
  nproc | sed 's/^/cpus: /' | tee -a "$OUT/device.txt"
  log "configure and build"
  cmake -S . -B $B -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    ${prefix:+-DCMAKE_PREFIX_PATH=$prefix} ${CUDNN_ROOT:+-DCUDNN_ROOT=$CUDNN_ROOT} ${NCCL_ROOT:+-DNCCL_ROOT=$NCCL_ROOT} \
    > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
  grep adasync "$OUT/configure.log"
  cmake --build $B -j "$(nproc)" > "$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -30; exit 1; }
  log "built"
fi

if [ "$what" = test ] || [ "$what" = all ]; then
  log "gpu tests"
  ctest --test-dir $B -L gpu --output-on-failure --timeout 150 -j 2 2>&1 | tee "$OUT/ctest-gpu.log" | tail -25
fi

if [ "$what" = bench ] || [ "$what" = all ]; then
  log "throughput: adasync vs PyTorch, cnn batch 64, one worker, data on the GPU"
  {
    for rep in 1 2; do
      ./$B/trainer --devices cuda --max-updates 3000 --eval-every 0 --progress none --metrics "$OUT/tp$rep.jsonl" >/dev/null
      python3 -c "import json;s=[json.loads(l) for l in open('$OUT/tp$rep.jsonl')][-1];print(json.dumps({'framework':'adasync','samples_per_s':s['steady_samples_per_s'],'test_accuracy':s['test_accuracy']}))"
      python3 bench/scripts/torch_reference.py --device cuda --steps 3000 --warmup 50
      python3 bench/scripts/torch_reference.py --device cuda --steps 3000 --warmup 50 --no-item
    done
  } 2>&1 | tee "$OUT/throughput.jsonl"
  python3 bench/scripts/summarize_throughput.py "$OUT/throughput.jsonl" | tee "$OUT/throughput.txt"

  log "scaling on one GPU: P workers on streams, host parameter server"
  {
    printf "%-14s %4s %14s %10s\n" variant P samples/s staleness
    for v in async k-batch-async; do
      for p in 1 2 4 8; do
        k=1; [ $v = k-batch-async ] && k=$p
        ./$B/trainer --devices cuda --workers $p --variant $v --k $k --aggregate host --time-budget 4s \
          --eval-every 0 --progress none --metrics "$OUT/scale-$v-$p.jsonl" >/dev/null
        python3 -c "import json;s=[json.loads(l) for l in open('$OUT/scale-$v-$p.jsonl')][-1];print('%-14s %4d %14.0f %10.2f'%('$v',$p,s['steady_samples_per_s'],s['staleness_mean']))"
      done
    done
  } 2>&1 | tee "$OUT/scaling.txt"

  log "push/pull bandwidth"
  ./$B/bench/gpu_bandwidth 2>&1 | tee "$OUT/bandwidth.txt"

  log "NVTX ranges of a short run"
  NSYS="$(command -v nsys || ls /opt/nvidia/nsight-systems*/bin/nsys /usr/local/cuda/bin/nsys 2>/dev/null | head -1)"
  if [ -n "$NSYS" ]; then
    timeout 90 "$NSYS" profile -t cuda,nvtx -o "$OUT/trace" --force-overwrite true ./$B/trainer --devices cuda --workers 2 \
      --variant k-async --k 1 --aggregate host --max-updates 300 --eval-every 0 --progress none > "$OUT/nsys.log" 2>&1
    timeout 60 "$NSYS" stats --report nvtx_sum "$OUT/trace.nsys-rep" 2>&1 | tee "$OUT/nvtx_sum.txt" | head -40
  else
    echo "nsys not found"
  fi
  ADASYNC_PROFILE=1 ./$B/trainer --devices cuda --workers 2 --variant k-async --k 1 --aggregate host \
    --max-updates 300 --eval-every 0 --progress none 2>&1 | tee "$OUT/ranges.txt" | tail -20
fi
if [ "$what" = test ] || [ "$what" = all ]; then
  log "unit tests"
  ctest --test-dir $B -L "unit|slow" -j "$(nproc)" 2>&1 | tail -4 | tee "$OUT/ctest-unit.log"
fi
log "done"
