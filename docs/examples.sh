#!/usr/bin/env bash
# Runs every example of README.md and docs/*.md: the lines of the fenced
# blocks opened with ```sh example, each with a short limit added
# (--max-updates 3, but not to a replay or an export; the final evaluation
# still runs), in order, in one scratch directory.
# An example that needs what the machine lacks (a GPU, mpirun, other hosts)
# is skipped, saying so. Ends with "N passed, N failed, N skipped"; exits 1
# if any failed.
# Usage: docs/examples.sh [TRAINER]   (TRAINER: build/trainer)
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
trainer="$(realpath "${1:-$root/build/trainer}")"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
passed=0 failed=0 skipped=0
while IFS=$'\t' read -r file cmd; do
  why=""
  case "$cmd" in
    *"--devices cuda"*) nvidia-smi -L >/dev/null 2>&1 || why="needs a GPU (--devices cuda)" ;;
  esac
  case "$cmd" in
    mpirun*) command -v mpirun >/dev/null || why="needs mpirun (Open MPI)" ;;
  esac
  case "$cmd" in
    *"--host "*) why="runs on other hosts" ;;
  esac
  case "$cmd" in
    *"--dataset cifar10 --data-dir "*)
      dir="${cmd#*--data-dir }"; dir="${dir%% *}"
      [ -d "$scratch/$dir" ] || [ -d "$dir" ] || why="needs CIFAR-10's binary batches in $dir"
      ;;
  esac
  if [ -n "$why" ]; then
    echo "skip ($why): $file: $cmd"
    skipped=$((skipped + 1))
    continue
  fi
  # The binary as built; mpirun gets --oversubscribe (its ranks may outnumber the cores here).
  run="${cmd//.\/build\/trainer/$trainer}"
  run="${run/#mpirun /mpirun --oversubscribe }"
  # A replay or an export takes no limit (they train nothing).
  limit="--max-updates 3"
  case "$cmd" in *"--replay "* | *"--export "*) limit="" ;; esac
  t0=$SECONDS
  # stdin from /dev/null: mpirun would read the rest of the list.
  if (cd "$scratch" && timeout 300 bash -c "$run $limit --progress plain" </dev/null >"$scratch/log" 2>&1); then
    echo "ok ($((SECONDS - t0)) s): $file: $cmd"
    passed=$((passed + 1))
  else
    echo "FAILED: $file: $cmd"
    sed 's/^/    /' "$scratch/log" | tail -20
    failed=$((failed + 1))
  fi
done < <(cd "$root" && awk '
  FNR == 1 { inblock = 0 }
  /^```sh example[[:space:]]*$/ { inblock = 1; next }
  /^```/ { inblock = 0; next }
  inblock && NF && $1 !~ /^#/ { print FILENAME "\t" $0 }' README.md docs/*.md)
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
