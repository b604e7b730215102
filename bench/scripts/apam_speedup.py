#!/usr/bin/env python3
"""APAM speed-up in virtual time, both ways (ALGORITHMS.md section 6):

1. The reference protocol: time for a fixed number of epochs, at (about) equal
   final accuracy, with 1, 2, 5, 10, 20 workers as in the reference. Without a
   cost for the parameter server's own work that speed-up is exactly P, so the
   virtual clock models the PS as a single server with a service time S per
   update (--ps-time): pushes queue while it applies. Three values of S: 0;
   the apply cost measured here (real clock, one worker: ps/apply time over
   forward+backward time, in units of one mini-batch's compute); and the S at
   which this queue gives the reference's 11.42x at 20 workers (fitted by
   bisection on the same single-server model), to show what the reference's
   curve implies about its server.
2. Time to a fixed test accuracy: asynchronous AMSGrad (every gradient applied
   on arrival, full mini-batch per worker) with 1, 2, 4, 8, 16 workers, against
   synchronous AMSGrad with the same mini-batch split across the workers and
   against asynchronous SGD, with the measured S. Median over seeds.

Compute time of a mini-batch of b samples ~ Exp(mean b / B) time units, B the
full batch, so one worker takes one unit per full mini-batch and split batches
are proportionally faster. Fashion-MNIST, lenet5, B = 48.

  apam_speedup.py [--trainer build/trainer] [--target 0.85] [--seeds 1,2,3] [--epochs 2] [--quick]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

WORKERS = [1, 2, 4, 8, 16]
REF_WORKERS = [1, 2, 5, 10, 20]
REF_SPEEDUP = [1.00, 2.02, 4.49, 7.11, 11.42]
REFERENCE = "1.00 / 2.02 / 4.49 / 7.11 / 11.42 with 1 / 2 / 5 / 10 / 20 workers (C++/MPI on CPUs, LeNet-5 on MNIST)"


def measured_ps_time(trainer, batch):
    """The PS's apply time over one mini-batch's forward + backward, measured
    on the real clock with one worker (ADASYNC_PROFILE=1 range totals)."""
    env = dict(os.environ, ADASYNC_PROFILE="1")
    out = subprocess.run([trainer, "--model", "lenet5", "--workers", "1", "--variant", "async", "--optimizer",
                          "amsgrad", "--lr", "1e-3", "--batch", str(batch), "--max-updates", "400", "--threads", "1",
                          "--eval-every", "0", "--devices", "cpu", "--progress", "none"],
                         check=True, capture_output=True, text=True, env=env)
    ms = {}
    for line in (out.stdout + out.stderr).splitlines():
        f = line.split()
        if len(f) == 4 and f[0] in ("ps/apply", "w0/forward", "w0/backward"):
            ms[f[0]] = float(f[3])
    return ms["ps/apply"] / (ms["w0/forward"] + ms["w0/backward"]), ms


def queue_speedup(P, S, updates=40000, seed=1):
    """Fixed work (updates) with P async workers, Exp(1) compute, one server
    of service time S: the single-server model the virtual clock implements
    (pushes served in arrival order; the worker restarts when its update is
    done). Returns T(1) / T(P)."""
    import heapq
    import random

    def run(p):
        rng = random.Random(seed)
        q = [(rng.expovariate(1.0), w) for w in range(p)]
        heapq.heapify(q)
        free = t = 0.0
        for _ in range(updates):
            t, w = heapq.heappop(q)
            t = max(t, free)
            free = t + S
            heapq.heappush(q, (free + rng.expovariate(1.0), w))
        return free
    return run(1) / run(P)


def fit_ps_time(P, target):
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if queue_speedup(P, mid, updates=20000) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def fixed_work(trainer, P, S, seed, a, tmp):
    """Reference protocol: virtual time for --epochs epochs of APAM, and the final accuracy."""
    path = os.path.join(tmp, "w.jsonl")
    cmd = [trainer, "--model", "lenet5", "--clock", "virtual", "--seed", str(seed), "--devices", "cpu",
           "--progress", "none", "--metrics", path, "--epochs", str(a.epochs), "--eval-every", "0",
           "--workers", str(P), "--variant", "async", "--optimizer", "amsgrad", "--lr", str(a.amsgrad_lr),
           "--batch", str(a.batch), "--straggler", "exp:mean=1", "--ps-time", f"{S:.6g}", "--threads", "1"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    summary = [json.loads(l) for l in open(path)][-1]
    return summary["time"], summary["test_accuracy"]


def time_to_target(trainer, args, seed, a, tmp):
    path = os.path.join(tmp, "m.jsonl")
    cmd = [trainer, "--model", "lenet5", "--clock", "virtual", "--seed", str(seed), "--devices", "cpu",
           "--progress", "none", "--metrics", path, "--target-accuracy", str(a.target), "--threads", "1",
           "--eval-every", f"{a.eval_every}s", "--eval-samples", "5000", "--time-budget", str(a.budget),
           "--ps-time", f"{a.ps_time:.6g}"] + args
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
    ap.add_argument("--epochs", type=float, default=2, help="reference protocol: epochs of work")
    ap.add_argument("--quick", action="store_true", help="one seed, workers 1, 4, 16; half an epoch")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    workers, ref_workers = WORKERS, REF_WORKERS
    if a.quick:
        seeds, workers, ref_workers, a.epochs = seeds[:1], [1, 4, 16], [1, 5, 20], 0.5
    B = a.batch
    s_measured, ms = measured_ps_time(a.trainer, B)
    s_fit = fit_ps_time(20, REF_SPEEDUP[-1])
    a.ps_time = s_measured
    print(f"PS service time S per update, in units of one mini-batch's compute (Exp(1) mean): measured here "
          f"{s_measured:.4f} (apply {ms['ps/apply']:.3f} ms, forward+backward "
          f"{ms['w0/forward'] + ms['w0/backward']:.3f} ms, lenet5, batch {B}, AMSGrad, one thread); "
          f"fitted to the reference's 11.42x at 20 workers: {s_fit:.4f}")
    print(f"\n1. Reference protocol: virtual time for {a.epochs:g} epochs of APAM (async AMSGrad, lr "
          f"{a.amsgrad_lr:g}), speed-up T(1)/T(P), final test accuracy; median over seeds {','.join(map(str, seeds))}")
    print(f"{'S':>8s}" + "".join(f"{'P=' + str(p):>18s}" for p in ref_workers))
    with tempfile.TemporaryDirectory() as tmp:
        for label, S in (("0", 0.0), ("measured", s_measured), ("fitted", s_fit)):
            res = {p: [fixed_work(a.trainer, p, S, sd, a, tmp) for sd in seeds] for p in ref_workers}
            t = {p: statistics.median(x[0] for x in res[p]) for p in ref_workers}
            acc = {p: statistics.median(x[1] for x in res[p]) for p in ref_workers}
            print(f"{label:>8s}" + "".join(f"{t[ref_workers[0]] / t[p]:7.2f}x {100 * acc[p]:6.2f}%  " for p in ref_workers))
        model = "".join(f"{queue_speedup(p, s_fit):7.2f}x          " for p in ref_workers)
        print(f"{'queue':>8s}{model}  (the single-server model alone at the fitted S)")
    print("reference: " + "".join(f"{x:7.2f}x          " for p, x in zip(REF_WORKERS, REF_SPEEDUP) if p in ref_workers))
    print(f"\n2. Time to {100 * a.target:.0f}% test accuracy, S = {s_measured:.4f} (measured)")
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
