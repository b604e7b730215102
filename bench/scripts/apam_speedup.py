#!/usr/bin/env python3
"""APAM speed-up in virtual time: asynchronous AMSGrad (every gradient applied
on arrival, full mini-batch per worker) with 1, 2, 4, 8, 16 workers, against
synchronous AMSGrad with the same mini-batch split across the workers and
against asynchronous SGD. Time to a fixed test accuracy, median over seeds.

Compute time of a mini-batch of b samples ~ Exp(mean b / B) time units, B the
full batch, so one worker takes one unit per full mini-batch and split batches
are proportionally faster. Fashion-MNIST, lenet5, B = 48.

  apam_speedup.py [--trainer build/trainer] [--target 0.85] [--seeds 1,2,3] [--quick]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

WORKERS = [1, 2, 4, 8, 16]
REFERENCE = "1.00 / 2.02 / 4.49 / 7.11 / 11.42 with 1 / 2 / 5 / 10 / 20 workers (C++/MPI on CPUs, LeNet-5 on MNIST)"


def time_to_target(trainer, args, seed, a, tmp):
    path = os.path.join(tmp, "m.jsonl")
    cmd = [trainer, "--model", "lenet5", "--clock", "virtual", "--seed", str(seed), "--devices", "cpu",
           "--progress", "none", "--metrics", path, "--target-accuracy", str(a.target),
           "--eval-every", f"{a.eval_every}s", "--eval-samples", "5000", "--time-budget", str(a.budget)] + args
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    summary = [json.loads(l) for l in open(path)][-1]
    return summary["target_time"] if summary["target_time"] >= 0 else float("inf")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trainer", default="build/trainer")
    ap.add_argument("--target", type=float, default=0.85)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--budget", type=float, default=4000)
    ap.add_argument("--eval-every", type=float, default=10)
    ap.add_argument("--amsgrad-lr", type=float, default=1e-3)
    ap.add_argument("--sgd-lr", type=float, default=0.05)
    ap.add_argument("--quick", action="store_true", help="one seed, workers 1, 4, 16")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    workers = WORKERS
    if a.quick:
        seeds, workers = seeds[:1], [1, 4, 16]
    B = a.batch
    methods = {
        "APAM (async AMSGrad)": lambda p: ["--workers", str(p), "--variant", "async", "--optimizer", "amsgrad",
                                           "--lr", str(a.amsgrad_lr), "--batch", str(B), "--straggler", "exp:mean=1"],
        "sync AMSGrad, split batch": lambda p: ["--workers", str(p), "--variant", "sync", "--optimizer", "amsgrad",
                                                "--lr", str(a.amsgrad_lr), "--batch", str(B // p),
                                                "--straggler", f"exp:mean={1.0 / p}"],
        "async SGD": lambda p: ["--workers", str(p), "--variant", "async", "--optimizer", "sgd", "--momentum", "0",
                                "--lr", str(a.sgd_lr), "--batch", str(B), "--straggler", "exp:mean=1"],
    }
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in methods.items():
            for p in workers:
                ts = [time_to_target(a.trainer, flags(p), s, a, tmp) for s in seeds]
                times[(name, p)] = statistics.median(ts)
                print(f"  {name:28s} P={p:2d}: {times[(name, p)]:8.1f}", file=sys.stderr, flush=True)
    print(f"time (virtual units; one full mini-batch of {B} takes Exp(1)) to {100 * a.target:.0f}% test accuracy, "
          f"lenet5 on Fashion-MNIST, median over seeds {','.join(map(str, seeds))}")
    hdr = "".join(f"{'P=' + str(p):>16s}" for p in workers)
    print(f"{'method':30s}{hdr}")
    base = times[("sync AMSGrad, split batch", 1)]
    for name in methods:
        cells = ""
        for p in workers:
            t = times[(name, p)]
            cells += f"{t:8.0f} ({base / t:4.2f}x)" if t != float("inf") else f"{'-':>16s}"
        print(f"{name:30s}{cells}")
    print("(speed-up against one worker running AMSGrad; the same for all rows)")
    print("reference speed-ups (ALGORITHMS.md section 6): " + REFERENCE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
