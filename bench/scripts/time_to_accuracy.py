#!/usr/bin/env python3
"""Time to accuracy: wall seconds from the start of training until the full
Fashion-MNIST test set (10,000 images) reaches the target, for a few adasync
settings and a few PyTorch settings run one after the other on the same
device, then the best of each side.

Both sides check the full test set at the same sample interval (a quarter
epoch by default); the time is that of the parameters that reached the target
(earlier evaluations count, the one that reached it does not: adasync's
target_time). Data loading and upload are outside it. PyTorch's torch.compile time is excluded and reported.
One seed per setting: a single run's time moves by an evaluation interval.

  time_to_accuracy.py [--trainer build/trainer] [--device cuda|cpu]
                      [--target 0.91] [--quick] [--timeout 60] [--max-epochs 15]

Without a usable GPU (--device cuda) each side prints why it is skipped and
the script exits 0.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
N_TRAIN = 60000


# (label, trainer flags); batch is read from the flags for the evaluation interval
def adasync_grid(quick):
    grid = [
        ("sync sgd-m0.9 lr0.05 b64", ["--batch", "64", "--lr", "0.05", "--momentum", "0.9"]),
        ("sync sgd-m0.9 lr0.1 b128", ["--batch", "128", "--lr", "0.1", "--momentum", "0.9"]),
        ("sync adam lr1e-3 b128", ["--batch", "128", "--optimizer", "adam", "--lr", "0.001"]),
        ("k-batch-async P=4 K=4 sgd lr0.05 b64", ["--workers", "4", "--variant", "k-batch-async", "--k", "4",
                                                  "--aggregate", "host", "--batch", "64", "--lr", "0.05"]),
    ]
    return grid[:2] if quick else grid


# (label, torch_reference flags)
def torch_grid(quick):
    grid = [
        ("eager sgd-m0.9 lr0.05 b64", ["--batch", "64", "--lr", "0.05", "--momentum", "0.9"]),
        ("eager sgd-m0.9 lr0.1 b128", ["--batch", "128", "--lr", "0.1", "--momentum", "0.9"]),
        ("eager adam lr1e-3 b128", ["--batch", "128", "--optimizer", "adam", "--lr", "0.001"]),
        # compiled last; mode default: the shortest compile (it is excluded, but it must fit the session)
        ("compiled sgd-m0.9 lr0.1 b128", ["--batch", "128", "--lr", "0.1", "--momentum", "0.9",
                                          "--compile", "default"]),
    ]
    return grid[:2] if quick else grid


def batch_of(flags):
    return int(flags[flags.index("--batch") + 1]) if "--batch" in flags else 64


def run_adasync(a, label, flags, tmp):
    path = os.path.join(tmp, "tta.jsonl")
    every = max(1, int(N_TRAIN * a.eval_epochs / batch_of(flags)))
    # --workers P with k-batch-async: an update is P batches
    if "--k" in flags:
        every = max(1, every // int(flags[flags.index("--k") + 1]))
    cmd = [a.trainer, "--devices", a.device, "--target-accuracy", str(a.target), "--eval-samples", "0",
           "--eval-every", str(every), "--epochs", str(a.max_epochs), "--progress", "none",
           "--metrics", path] + flags
    t0 = time.time()
    try:
        p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=a.timeout)
    except subprocess.TimeoutExpired:
        return {"side": "adasync", "label": label, "error": f"timeout after {a.timeout} s"}
    if p.returncode != 0:
        return {"side": "adasync", "label": label, "error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    rows = [json.loads(l) for l in open(path)]
    summ = rows[-1]
    hit = summ.get("target_time", -1)
    reached = hit is not None and hit >= 0
    evals = [r for r in rows if r.get("event") in ("eval", "final")]
    # the evaluation that reached the target, else the final one
    at = next((r for r in evals if reached and r["test_accuracy"] >= a.target), evals[-1] if evals else {})
    return {"side": "adasync", "label": label, "reached": reached, "target_s": hit if reached else None,
            "compile_s": 0, "epochs": at.get("samples", 0) / N_TRAIN, "test_accuracy": at.get("test_accuracy", 0),
            "process_s": time.time() - t0}


def run_torch(a, label, flags):
    every = max(1, int(N_TRAIN * a.eval_epochs / batch_of(flags)))
    compiled = "--compile" in flags
    cmd = [sys.executable, os.path.join(HERE, "torch_reference.py"), "--device", a.device,
           "--target-accuracy", str(a.target), "--eval-every", str(every), "--epochs", str(a.max_epochs),
           "--warmup", "3" if compiled else "0", "--threads", str(a.threads)] + flags
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout + (60 if compiled else 0))
    except subprocess.TimeoutExpired:
        return {"side": "pytorch", "label": label, "error": f"timeout after {a.timeout} s"}
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"side": "pytorch", "label": label, "error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    r = json.loads(lines[-1])
    if "skipped" in r:
        return {"side": "pytorch", "label": label, "skipped": r["skipped"]}
    r.update(side="pytorch", label=label)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trainer", default="build/trainer")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--target", type=float, default=0.91)
    ap.add_argument("--max-epochs", type=float, default=15)
    ap.add_argument("--eval-epochs", type=float, default=0.25, help="epochs between test-set checks")
    ap.add_argument("--timeout", type=float, default=60, help="seconds per run")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (PyTorch on --device cpu)")
    ap.add_argument("--quick", action="store_true", help="two settings per side")
    ap.add_argument("--sides", default="adasync,pytorch")
    a = ap.parse_args()

    results = []
    tmp = tempfile.mkdtemp(prefix="tta-")
    try:
        if "adasync" in a.sides:
            gpu_ok = a.device != "cuda" or (shutil.which("nvidia-smi") and
                                            subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0)
            if not gpu_ok:
                print("adasync: skipped (--device cuda, and nvidia-smi finds no GPU)")
            else:
                for label, flags in adasync_grid(a.quick):
                    r = run_adasync(a, label, flags, tmp)
                    print(json.dumps(r), flush=True)
                    results.append(r)
        if "pytorch" in a.sides:
            for label, flags in torch_grid(a.quick):
                if "--compile" in flags and a.device != "cuda":
                    continue  # compilation on the CPU takes longer than the run
                r = run_torch(a, label, flags)
                print(json.dumps(r), flush=True)
                results.append(r)
                if "skipped" in r:
                    print(f"pytorch: skipped ({r['skipped']})")
                    break
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\ntime to {a.target:.0%} test accuracy (full test set, checked every {a.eval_epochs:g} epoch), {a.device}")
    print(f"{'side':8s} {'setting':40s} {'seconds':>8s} {'epochs':>7s} {'acc':>9s} {'compile s':>9s}")
    for r in results:
        if "error" in r or "skipped" in r:
            print(f"{r['side']:8s} {r['label']:40s} {r.get('error') or 'skipped: ' + r['skipped']}")
            continue
        t = f"{r['target_s']:8.2f}" if r["reached"] else f"{'-':>8s}"
        print(f"{r['side']:8s} {r['label']:40s} {t} {r['epochs']:7.2f} {r['test_accuracy']:9.4f} {r['compile_s']:9.1f}")
    best = {}
    for side in ("adasync", "pytorch"):
        ok = [r for r in results if r["side"] == side and r.get("reached")]
        if ok:
            best[side] = min(ok, key=lambda r: r["target_s"])
            print(f"best {side}: {best[side]['label']}, {best[side]['target_s']:.2f} s")
        else:
            print(f"best {side}: none reached {a.target:.0%}")
    if len(best) == 2:
        ours, theirs = best["adasync"]["target_s"], best["pytorch"]["target_s"]
        print(f"adasync {ours:.2f} s against PyTorch {theirs:.2f} s ({theirs / ours:.2f}x); target under 5 s and ahead: "
              f"{'met' if ours < 5 and ours < theirs else 'missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
