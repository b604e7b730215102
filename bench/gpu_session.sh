#!/usr/bin/env bash
# One GPU session on a lent H100/H200 (16 cores): a clean build for the
# machine's architecture, every `gpu` test and every GPU benchmark, each step
# timed under its own cap and all of it under one deadline (full: 9 min,
# --quick: 3.3 min): a full run, the machine's start and a quick rerun fit in 15.
#   OUT=dir bash bench/gpu_session.sh [--quick] [--keep-build] [--pack]
#   --quick       incremental build, shorter runs, no deep regime or profile
#   --keep-build  do not wipe the build folder first (the dry run here)
#   --pack        leave only session.log, summary.txt and logs.tar.gz in $OUT
#                 (the device tool returns at most 8 files)
# Writes $OUT/session.log (everything printed), $OUT/summary.txt (the step
# table and each step's headline lines) and $OUT/log/<step>.txt. Without a
# GPU it still builds, runs what needs none and names every step it skips.
# Debian packages missing on the machine may travel in .deps/*.deb (unpacked
# under /tmp/deps); cuDNN and NCCL may come from Python wheels.
set -uo pipefail
cd "$(dirname "$0")/.."
quick=0; keep=0; pack=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1; keep=1 ;;
    --keep-build) keep=1 ;;
    --pack) pack=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_session.sh: unknown option '$arg' (expected --quick, --keep-build, --pack)" >&2; exit 2 ;;
  esac
done
OUT="${OUT:-$PWD/gpu-out}"
L="$OUT/log"
B="${B:-build-gpu}"
mkdir -p "$L"
rm -f "$L"/*.txt "$OUT/summary.txt" "$OUT/session.log"
exec > >(tee -a "$OUT/session.log") 2>&1
start=$(date +%s)
budget=$([ $quick = 1 ] && echo 200 || echo 540)
deadline=$((start + budget))
log() { echo "== $(date +%T) (+$(( $(date +%s) - start ))s) $*"; }
echo "# adasync GPU session ($([ $quick = 1 ] && echo quick || echo full)), $(date -u '+%F %T') UTC, commit $(git rev-parse --short HEAD 2>/dev/null), deadline ${budget}s"

# ---- dependencies carried as .debs, cuDNN/NCCL from wheels
prefix=""
if ls .deps/*.deb >/dev/null 2>&1; then
  mkdir -p /tmp/deps
  for f in .deps/*.deb; do dpkg -x "$f" /tmp/deps; done
  prefix=/tmp/deps/usr
  export LD_LIBRARY_PATH="$prefix/lib/x86_64-linux-gnu:$prefix/lib/x86_64-linux-gnu/openblas-pthread:${LD_LIBRARY_PATH:-}"
  if [ ! -e /usr/share/datasets/fashion-mnist ] && [ -d "$prefix/share/datasets/fashion-mnist" ]; then
    mkdir -p /usr/share/datasets && ln -s "$prefix/share/datasets/fashion-mnist" /usr/share/datasets/fashion-mnist
  fi
fi
pyroot() { python3 -c "import importlib, os; m = importlib.import_module('$1'); print(os.path.dirname(m.__file__) if m.__file__ else list(m.__path__)[0])" 2>/dev/null; }
CUDNN_ROOT="${CUDNN_ROOT:-$(pyroot nvidia.cudnn)}"
NCCL_ROOT="${NCCL_ROOT:-$(pyroot nvidia.nccl)}"
export LD_LIBRARY_PATH="${CUDNN_ROOT:+$CUDNN_ROOT/lib:}${NCCL_ROOT:+$NCCL_ROOT/lib:}${LD_LIBRARY_PATH:-}"

have_gpu=0; no_gpu_why="nvidia-smi finds no GPU"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then have_gpu=1; fi
have_torch_cuda=0; torch_why="$(python3 -c 'import torch; print(torch.__version__, "cuda", torch.cuda.is_available())' 2>&1 | tail -1)"
python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null && have_torch_cuda=1
NPROC=$(nproc)
# One architecture: the machine's (compute capability 9.0 -> 90); 90 when none is visible.
arch=$( [ $have_gpu = 1 ] && nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .' )
arch=${arch:-90}
export B L NPROC have_gpu have_torch_cuda quick arch prefix CUDNN_ROOT NCCL_ROOT no_gpu_why torch_why

# ---- steps: each a function run under `timeout` (its cap, cut to what the deadline leaves)
printf "%-14s %-22s %8s\n" step status seconds > "$L/steps.tsv"
step() {  # step NAME CAP_SECONDS FUNCTION
  local name=$1 want=$2 fn=$3 left c t0 rc dt st
  left=$((deadline - $(date +%s) - 8))
  c=$(( want < left ? want : left ))
  if [ "$c" -lt 5 ]; then
    log "$name: skipped (out of time: ${left}s left of ${budget}s)"
    printf "%-14s %-22s %8s\n" "$name" "skipped (out of time)" - >> "$L/steps.tsv"; return
  fi
  log "$name (cap ${c}s)"
  t0=$(date +%s.%N)
  timeout -k 5 "$c" bash -c "$(declare -f log need_gpu $fn); start=$start; $fn" 2>&1 | tee "$L/$name.txt"
  rc=${PIPESTATUS[0]}
  dt=$(awk "BEGIN{print $(date +%s.%N) - $t0}")
  case $rc in 0) st=ok ;; 124|137) st="timed out (${c}s)" ;; 3) st="skipped (no GPU)" ;; *) st="failed (rc $rc)" ;; esac
  printf "%-14s %-22s %8.1f\n" "$name" "$st" "$dt" >> "$L/steps.tsv"
}
need_gpu() { [ "$have_gpu" = 1 ] && return 0; echo "skipped: $*: no GPU ($no_gpu_why)"; exit 3; }
metric() { python3 -c "import json,sys;s=[json.loads(l) for l in open(sys.argv[1])][-1];print(s$2)" "$1"; }
export -f metric

s_machine() {
  uname -srm; echo "cpus: $NPROC ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
  echo "memory: $(free -g 2>/dev/null | awk '/Mem/{print $2}') GiB"
  if [ "$have_gpu" = 1 ]; then nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
  else echo "gpu: none ($no_gpu_why)"; fi
  echo "nvcc: $(nvcc --version 2>&1 | grep -o 'release [0-9.]*' || echo none)"
  echo "torch: $torch_why"
  echo "cuDNN: ${CUDNN_ROOT:-system}; NCCL: ${NCCL_ROOT:-system}; CUDA arch: $arch"
  echo "nsys: $(command -v nsys || echo none)"
}

s_build() {
  [ "$quick" = 0 ] && [ "${keep:-0}" = 0 ] && rm -rf "$B"
  cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch" \
    ${prefix:+-DCMAKE_PREFIX_PATH=$prefix} ${CUDNN_ROOT:+-DCUDNN_ROOT=$CUDNN_ROOT} ${NCCL_ROOT:+-DNCCL_ROOT=$NCCL_ROOT} \
    > "$L/configure.log" 2>&1 || { tail -30 "$L/configure.log"; exit 1; }
  grep "adasync:" "$L/configure.log"
  # Only what the session runs: the library, the trainer, the gpu tests, three benchmarks.
  cmake --build "$B" -j "$NPROC" --target trainer test_runtime_gpu test_kernels_cuda ps_apply layer_times \
    $(grep -q "CUDA backend ON" "$L/configure.log" && echo gpu_bandwidth) > "$L/build.log" 2>&1 \
    || { grep -E "error" "$L/build.log" | head -30; exit 1; }
  tail -1 "$L/build.log"
}

s_tests() {
  ctest --test-dir "$B" -L gpu --output-on-failure --timeout 120 -j 4 > "$L/ctest.log" 2>&1
  local rc=$?
  tail -30 "$L/ctest.log"
  # each skip's reason, from a verbose run of the skipped ones (cheap: they skip at once)
  local skipped
  skipped=$(grep -oE '[A-Za-z0-9_.]+ \.+\*+Skipped' "$L/ctest.log" | awk '{print $1}' | paste -sd'|')
  echo "gpu tests: $(grep -cE '\*+Skipped' "$L/ctest.log") skipped, $(grep -cE 'Test +#[0-9]+: .* Passed' "$L/ctest.log") passed, $(grep -cE '\*+(Failed|Timeout|Exception)' "$L/ctest.log") failed"
  [ -n "$skipped" ] && ctest --test-dir "$B" -L gpu -V -R "$skipped" 2>&1 \
    | awk '/: Skipped$/ { getline r; sub(/^[0-9]+: /, "", r); print "skip reason: " r }' | sort | uniq -c
  return $rc
}

s_bandwidth() {
  need_gpu "push/pull bandwidth"
  "./$B/bench/gpu_bandwidth"
}

s_ps_apply() {
  echo "host apply with all $NPROC cores, next to a memcpy on the same cores"
  if [ "$quick" = 1 ]; then "./$B/bench/ps_apply" --threads "$NPROC" --sizes 3300000,100000000 --ks 1,8 --reps 3
  else "./$B/bench/ps_apply" --threads "$NPROC" --reps 5; fi
}

s_throughput() {  # cnn, batch 64, one worker: adasync vs PyTorch eager and compiled
  need_gpu "throughput"
  local steps=3000 reps=2 t=$L/throughput.jsonl
  [ "$quick" = 1 ] && { steps=2000; reps=1; }
  : > "$t"
  for rep in $(seq $reps); do
    "./$B/trainer" --devices cuda --max-updates $steps --eval-every 0 --progress none --metrics "$L/tp.jsonl" >/dev/null
    python3 -c "import json;s=[json.loads(l) for l in open('$L/tp.jsonl')][-1];print(json.dumps({'framework':'adasync','samples_per_s':s['steady_samples_per_s'],'test_accuracy':s['test_accuracy']}))" | tee -a "$t"
    python3 bench/scripts/torch_reference.py --device cuda --steps $steps --warmup 50 | tee -a "$t"
    python3 bench/scripts/torch_reference.py --device cuda --steps $steps --warmup 50 --no-item | tee -a "$t"
  done
  if [ "$have_torch_cuda" = 1 ]; then
    # compiled: both modes, the slower compile last so a cut loses only it
    for mode in reduce-overhead max-autotune; do
      [ "$quick" = 1 ] && [ $mode = max-autotune ] && continue
      python3 bench/scripts/torch_reference.py --device cuda --steps $steps --warmup 50 --no-item --compile $mode | tee -a "$t"
      python3 bench/scripts/summarize_throughput.py "$t" > "$L/throughput-table.txt"  # a table even if cut
    done
  fi
  python3 bench/scripts/summarize_throughput.py "$t" | tee "$L/throughput-table.txt"
}

s_tta() {  # time to 91% on the full test set, best settings of each side
  need_gpu "time to accuracy"
  python3 bench/scripts/time_to_accuracy.py --trainer "./$B/trainer" --device cuda --target 0.91 \
    --timeout $([ "$quick" = 1 ] && echo 25 || echo 40) $([ "$quick" = 1 ] && echo --quick)
}

s_scaling() {  # P workers on their own streams of one GPU, host parameter server
  need_gpu "scaling"
  local ps="1 2 4 8" vs="async k-batch-async" tb=3s
  [ "$quick" = 1 ] && { ps="1 8"; vs=async; tb=2s; }
  printf "%-14s %4s %14s %10s\n" variant P samples/s staleness
  for v in $vs; do
    for p in $ps; do
      k=1; [ $v = k-batch-async ] && k=$p
      "./$B/trainer" --devices cuda --workers $p --variant $v --k $k --aggregate host --time-budget $tb \
        --eval-every 0 --progress none --metrics "$L/scale-$v-$p.jsonl" >/dev/null
      python3 -c "import json;s=[json.loads(l) for l in open('$L/scale-$v-$p.jsonl')][-1];print('%-14s %4d %14.0f %10.2f'%('$v',$p,s['steady_samples_per_s'],s['staleness_mean']))"
    done
  done | tee "$L/scaling-table.txt"
  awk '$1=="async"&&$2==1{a=$3} $1=="async"&&$2==8{b=$3} END{if(a>0&&b>0) printf "async P = 8 / P = 1: %.2fx (target >= 3x)\n", b/a}' "$L/scaling-table.txt"
}

s_virtual() {  # the virtual clock on the GPU, twice with --deterministic
  need_gpu "virtual clock on the GPU"
  local n=$([ "$quick" = 1 ] && echo 500 || echo 2000) c
  for run in 1 2; do
    "./$B/trainer" --devices cuda --clock virtual --deterministic --workers 8 --variant k-async --k 2 \
      --straggler exp:mean=1 --max-updates $n --eval-every 0 --progress none --metrics "$L/virtual-$run.jsonl" >/dev/null || exit 1
    echo "run $run: $(metric "$L/virtual-$run.jsonl" "['updates'],s['checksum'],round(s['wall'],2),'s wall, test acc',s['test_accuracy']")"
  done
  c1=$(metric "$L/virtual-1.jsonl" "['checksum']"); c2=$(metric "$L/virtual-2.jsonl" "['checksum']")
  if [ "$c1" = "$c2" ]; then echo "virtual clock on the GPU: bit-identical across two runs (checksum $c1)"
  else echo "virtual clock on the GPU: checksums DIFFER ($c1 vs $c2)"; exit 1; fi
}

s_resnet() {  # resnet20 on the GPU: a k-async run, bit-exact twice, batch norm by cuDNN and by ours
  need_gpu "resnet20"
  local n=$([ "$quick" = 1 ] && echo 100 || echo 300) c1 c2 run
  "./$B/trainer" --devices cuda --model resnet20 --dataset fashion-mnist32 --augment --workers 4 --variant k-async \
    --k 2 --lr 0.05 --max-updates $((2 * n)) --eval-every 0 --progress none --metrics "$L/resnet-real.jsonl" >/dev/null || exit 1
  echo "resnet20 k-async, 4 workers: $(metric "$L/resnet-real.jsonl" "['updates'],'updates,',round(s['steady_samples_per_s']),'samples/s, test acc',s['test_accuracy']")"
  for run in 1 2; do
    "./$B/trainer" --devices cuda --model resnet20 --dataset fashion-mnist32 --clock virtual --deterministic \
      --workers 4 --variant k-async --k 2 --straggler exp:mean=1 --max-updates $n --eval-every 0 --progress none \
      --metrics "$L/resnet-virtual-$run.jsonl" >/dev/null || exit 1
  done
  c1=$(metric "$L/resnet-virtual-1.jsonl" "['checksum']"); c2=$(metric "$L/resnet-virtual-2.jsonl" "['checksum']")
  if [ "$c1" = "$c2" ]; then echo "resnet20 virtual clock on the GPU: bit-identical across two runs (checksum $c1)"
  else echo "resnet20 virtual clock on the GPU: checksums DIFFER ($c1 vs $c2)"; exit 1; fi
  for bn in cudnn own; do
    "./$B/bench/layer_times" --model resnet20 --devices cuda --input 1x32x32 --batch 128 --steps 20 --cuda-bn $bn \
      > "$L/resnet-layers-$bn.txt" || exit 1
    echo "resnet20 step, batch 128, batch norm by $bn: $(grep '^total' "$L/resnet-layers-$bn.txt" | sed 's/^total *//')"
  done
}

s_deep() {  # AdaSync's deep regime with the cnn, virtual clock on the GPU
  need_gpu "deep-cnn regime"
  python3 bench/scripts/error_runtime.py --regime deep-cnn --devices cuda --trainer "./$B/trainer" --quick \
    --seeds 3 --jobs 12 --rules default --out "$L/deep-cnn" --results "$L/deep-cnn-tables.txt"
}

s_profile() {  # one multi-worker run: nsys if it works here, else the range table
  need_gpu "profile"
  local run=("./$B/trainer" --devices cuda --workers 4 --variant async --aggregate host --max-updates 2000
             --eval-every 0 --progress none)
  if command -v nsys >/dev/null 2>&1 && nsys profile -t cuda,nvtx -o "$L/profile" --force-overwrite true "${run[@]}" > "$L/nsys.log" 2>&1 \
      && [ -f "$L/profile.nsys-rep" ]; then
    nsys stats --report nvtx_sum "$L/profile.nsys-rep" 2>&1 | head -40
  else
    echo "nsys: $(command -v nsys >/dev/null && echo "failed (see nsys.log)" || echo "not installed"); ADASYNC_PROFILE=1 range table instead"
    ADASYNC_PROFILE=1 "${run[@]}" 2>&1 | tail -25
  fi
}

export keep start
export -f s_machine s_build s_tests s_resnet s_bandwidth s_ps_apply s_throughput s_tta s_scaling s_virtual s_deep s_profile
# Ordered by what the issue needs most, so a deadline cut drops the least.
step machine 15 s_machine
step build $([ $quick = 1 ] && echo 120 || echo 240) s_build
if [ -x "$B/trainer" ]; then
  step tests $([ $quick = 1 ] && echo 60 || echo 150) s_tests
  step resnet $([ $quick = 1 ] && echo 30 || echo 60) s_resnet
  step throughput $([ $quick = 1 ] && echo 75 || echo 200) s_throughput
  step tta $([ $quick = 1 ] && echo 40 || echo 130) s_tta
  step scaling $([ $quick = 1 ] && echo 15 || echo 60) s_scaling
  step virtual $([ $quick = 1 ] && echo 25 || echo 50) s_virtual
  step bandwidth $([ $quick = 1 ] && echo 20 || echo 40) s_bandwidth
  step ps_apply $([ $quick = 1 ] && echo 20 || echo 45) s_ps_apply
  [ $quick = 0 ] && step deep 100 s_deep
  [ $quick = 0 ] && step profile 40 s_profile
else
  log "no trainer in $B: every later step skipped"
fi

# ---- summary: the step table and each step's headline lines
{
  echo "# adasync GPU session ($([ $quick = 1 ] && echo quick || echo full)), $(date -u '+%F %T') UTC, commit $(git rev-parse --short HEAD 2>/dev/null), $(( $(date +%s) - start ))s of ${budget}s"
  cat "$L/machine.txt" 2>/dev/null
  echo; cat "$L/steps.tsv"
  sect() { local lines; lines=$(grep -E "$3" "$L/$1.txt" 2>/dev/null | head -"${4:-20}")
           [ -n "$lines" ] && { echo; echo "## $2"; echo "$lines"; }; }
  sect build build "adasync:|Built target|error"
  sect tests "gpu tests" "gpu tests:|tests passed|tests failed|\(Skipped\)|skip reason|\(Failed\)|Timeout" 30
  sect resnet "resnet20 on the GPU (batch norm: cuDNN against ours)" "resnet20|skipped"
  sect throughput "throughput vs PyTorch (cnn, batch 64, one worker)" "skipped"
  sect throughput-table "throughput vs PyTorch (cnn, batch 64, one worker; written after each compiled mode)" "."
  sect tta "time to 91%" "^(side|adasync|pytorch|best|time to)|skipped"
  sect scaling "workers on one GPU (host PS)" "variant|async|skipped"
  sect virtual "virtual clock on the GPU" "run|virtual|skipped"
  sect bandwidth "push/pull bandwidth" "." 
  sect ps_apply "host apply vs memcpy ($NPROC threads)" "."  40
  sect deep "AdaSync deep regime, cnn (virtual clock on the GPU)" "==|K|default|envelope|skipped" 30
  sect profile "profile (one run, P = 4 async)" "." 30
} > "$OUT/summary.txt"
log "done in $(( $(date +%s) - start ))s; summary:"
cat "$OUT/summary.txt"
if [ $pack = 1 ]; then
  tar czf "$OUT/logs.tar.gz" -C "$OUT" log && rm -rf "$L"
fi
exit 0
