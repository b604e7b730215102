#!/usr/bin/env python3
"""SwarmSGD benchmark in virtual time: time to a fixed test accuracy, final
accuracy and bytes moved per worker, for SwarmSGD in full precision, 16 and 8
bits on the ring and the complete graph, against synchronous SGD through the
parameter server on the same workers with the same straggler model.

P = 8 workers, Fashion-MNIST, lenet5, batch 32 per worker, plain SGD at the
same learning rate, compute time per mini-batch ~ Exp(1); median over seeds.
Bytes per worker: SwarmSGD counts every message a node sends; synchronous
SGD pushes one gradient and pulls one model per worker per update (4 bytes a
parameter each way).

  swarm_bench.py [--trainer build/trainer] [--target 0.80] [--budget 800] [--lr 0.1] [--seeds 1,2,3] [--quick]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

PARAMS_LENET5 = 61706


def run(trainer, flags, seed, a, tmp):
    path = os.path.join(tmp, "m.jsonl")
    cmd = [trainer, "--model", "lenet5", "--workers", "8", "--batch", "32", "--lr", str(a.lr), "--momentum", "0",
           "--clock", "virtual", "--straggler", "exp:mean=1", "--time-budget", str(a.budget), "--seed", str(seed),
           "--eval-every", f"{a.budget / 40}s", "--eval-samples", "5000", "--devices", "cpu", "--progress", "none",
           "--metrics", path] + flags
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    lines = [json.loads(l) for l in open(path)]
    evals = [l for l in lines if l.get("event") == "eval"]
    final = [l for l in lines if l.get("event") == "final"][-1]
    summary = lines[-1]
    t = next((e["time"] for e in evals if e["test_accuracy"] >= a.target), float("inf"))
    if "bytes_per_worker" in final:
        per_worker = final["bytes_per_worker"]
    else:
        per_worker = summary["updates"] * 2 * 4 * PARAMS_LENET5
    return t, final["test_accuracy"], per_worker, final.get("out_of_range", 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trainer", default="build/trainer")
    ap.add_argument("--target", type=float, default=0.80)
    ap.add_argument("--budget", type=float, default=800)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--quick", action="store_true", help="one seed, half the budget")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    if a.quick:
        seeds, a.budget = seeds[:1], a.budget / 2
    configs = [("sync SGD (parameter server)", ["--variant", "sync"])]
    for graph in ["ring", "complete"]:
        for bits in [0, 16, 8]:
            name = f"SwarmSGD {graph}, {'full precision' if bits == 0 else str(bits) + '-bit'}"
            configs.append((name, ["--variant", "swarm", "--graph", graph, "--local-steps", "4", "--quantize", str(bits)]))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in configs:
            r = [run(a.trainer, flags, s, a, tmp) for s in seeds]
            rows[name] = tuple(statistics.median(x[i] for x in r) for i in range(4))
            print(f"  {name:34s} done", file=sys.stderr, flush=True)
    print(f"P = 8, lenet5 on Fashion-MNIST, batch 32, lr {a.lr}, Exp(1) compute times, budget {a.budget:g} virtual "
          f"units, median over seeds {','.join(map(str, seeds))}")
    print(f"{'configuration':36s}{'t(' + str(int(100 * a.target)) + '%)':>9s}{'final acc':>11s}{'MB/worker':>11s}"
          f"{'out of range':>14s}")
    for name, _ in configs:
        t, acc, b, oor = rows[name]
        ts = f"{t:9.1f}" if t != float("inf") else f"{'-':>9s}"
        print(f"{name:36s}{ts}{100 * acc:10.2f}%{b / 1e6:11.1f}{int(oor):14d}")
    for graph in ["ring", "complete"]:
        fp, q8 = rows[f"SwarmSGD {graph}, full precision"], rows[f"SwarmSGD {graph}, 8-bit"]
        dacc, ratio = 100 * (q8[1] - fp[1]), q8[2] / fp[2]
        ok = "ok" if dacc >= -0.5 and ratio <= 0.25 else "MISSED"
        print(f"{graph}: 8-bit vs full precision: {dacc:+.2f} points (target >= -0.5), {ratio:.3f} of the bytes "
              f"(target <= 0.25) {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
