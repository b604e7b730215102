#!/usr/bin/env python3
"""adasync vs PyTorch on the CPU, side by side in one run.

The same cnn (conv5x5-32, ReLU, pool2, conv5x5-64, ReLU, pool2, fc-1024,
ReLU, fc-10), batch 64, SGD with momentum 0.9 at lr 0.05, the same
Fashion-MNIST normalisation, the same thread count. Throughput: `--rounds`
alternating runs of `--steps` steps each (median samples/s, warm-up
excluded). Accuracy: one epoch each, test accuracy at the end.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def adasync(trainer, threads, steps=0, epochs=0):
    with tempfile.TemporaryDirectory() as d:
        m = os.path.join(d, "m.jsonl")
        args = [trainer, "--threads", str(threads), "--devices", "cpu", "--eval-every", "0", "--progress", "none",
                "--metrics", m]
        args += ["--max-updates", str(steps)] if steps else ["--epochs", str(epochs)]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        s = [json.loads(l) for l in open(m)][-1]
        return s["steady_samples_per_s"], s["test_accuracy"]


def torch_ref(threads, steps=0, epochs=0):
    args = [sys.executable, os.path.join(HERE, "torch_reference.py"), "--threads", str(threads), "--warmup", "3"]
    args += ["--steps", str(steps)] if steps else ["--epochs", str(epochs)]
    r = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    return r["samples_per_s"], r["test_accuracy"], r["framework"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trainer", default="build/trainer")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-epoch", action="store_true", help="skip the one-epoch accuracy comparison")
    a = ap.parse_args()
    ours, theirs, name = [], [], "pytorch"
    for _ in range(a.rounds):
        ours.append(adasync(a.trainer, a.threads, steps=a.steps)[0])
        sps, _, name = torch_ref(a.threads, steps=a.steps)
        theirs.append(sps)
    o, t = statistics.median(ours), statistics.median(theirs)
    print(f"cnn, batch 64, {a.threads} CPU threads, {a.rounds} alternating rounds of {a.steps} steps")
    print(f"{'framework':28s} {'samples/s (median)':>19s} {'all rounds':>30s}")
    print(f"{'adasync':28s} {o:19.0f} {' '.join(f'{x:.0f}' for x in ours):>30s}")
    print(f"{name:28s} {t:19.0f} {' '.join(f'{x:.0f}' for x in theirs):>30s}")
    print(f"throughput ratio adasync / pytorch: {o / t:.2f}x (target >= 1.0x)")
    if not a.no_epoch:
        _, acc_o = adasync(a.trainer, a.threads, epochs=1)
        _, acc_t, _ = torch_ref(a.threads, epochs=1)
        print(f"test accuracy after one epoch: adasync {100 * acc_o:.2f}%, pytorch {100 * acc_t:.2f}% "
              f"(difference {100 * (acc_o - acc_t):+.2f} points; target >= -0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
