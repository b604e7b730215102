#!/usr/bin/env python3
"""adasync vs PyTorch on the CPU, side by side in one run.

The same cnn (conv5x5-32, ReLU, pool2, conv5x5-64, ReLU, pool2, fc-1024,
ReLU, fc-10), batch 64, SGD with momentum 0.9 at lr 0.05, the same
Fashion-MNIST normalisation, the same thread count. Throughput: `--rounds`
alternating runs of `--steps` steps each (median samples/s, warm-up
excluded). Accuracy: one epoch each, test accuracy at the end, for
`--epoch-seeds` seeds each (the model's initialisation and batch order), so
that adasync's accuracy is judged against PyTorch's own seed-to-seed spread.

--cpu-path avx2 emulates an AVX2-only machine on one with AVX-512: adasync
runs with ADASYNC_CPU_PATH=avx2, PyTorch with ATEN_CPU_CAPABILITY=avx2,
ONEDNN_MAX_CPU_ISA=AVX2 (its convolutions) and MKL_ENABLE_INSTRUCTIONS=AVX2
(its GEMMs). OpenBLAS (adasync's GEMM) keeps OPENBLAS_CORETYPE, Haswell here.
"""
import argparse
import json
import os
import statistics
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# Environment that caps each framework at a CPU path (see the docstring).
PATH_ENV = {
    "avx512": ({"ADASYNC_CPU_PATH": "avx512"}, {"ATEN_CPU_CAPABILITY": "avx512"}),
    "avx2": ({"ADASYNC_CPU_PATH": "avx2"},
             {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}),
}
ENV_OURS, ENV_TORCH = dict(os.environ), dict(os.environ)
# A run counts as quiet when other processes used no more than the CPUs it
# leaves free (1 - threads / cpus) plus this share meanwhile: on a shared
# machine a framework whose threads spin loses far more to a neighbour's build
# than one that does not.
QUIET = 0.10


def busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]  # all but idle and iowait


def measured(fn):
    """fn's result and the share of the machine other processes used meanwhile."""
    t0, b0, r0 = time.monotonic(), busy_ticks(), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = fn()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, busy = time.monotonic() - t0, (busy_ticks() - b0) / os.sysconf("SC_CLK_TCK")
    ours = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return out, max(0.0, busy - ours) / (wall * os.cpu_count())


def cpu_info():
    model, flags = "?", set()
    try:
        for line in open("/proc/cpuinfo"):
            k, _, v = line.partition(":")
            if k.strip() == "model name":
                model = v.strip()
            elif k.strip() == "flags":
                flags = set(v.split())
    except OSError:
        pass
    feats = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16") if f in flags]
    return model, feats


MODEL = {"cnn": ["--model", "cnn"], "resnet20": ["--model", "resnet20", "--dataset", "fashion-mnist32"]}
OPTS = {"model": "cnn", "batch": 64}


def adasync(trainer, threads, steps=0, epochs=0, seed=1):
    with tempfile.TemporaryDirectory() as d:
        m = os.path.join(d, "m.jsonl")
        args = [trainer, "--threads", str(threads), "--devices", "cpu", "--eval-every", "0", "--progress", "none",
                "--metrics", m, "--batch", str(OPTS["batch"]), "--seed", str(seed)] + MODEL[OPTS["model"]]
        args += ["--max-updates", str(steps)] if steps else ["--epochs", str(epochs)]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, env=ENV_OURS)
        s = [json.loads(l) for l in open(m)][-1]
        return s["steady_samples_per_s"], s["test_accuracy"]


def torch_ref(threads, steps=0, epochs=0, seed=1):
    args = [sys.executable, os.path.join(HERE, "torch_reference.py"), "--threads", str(threads), "--warmup", "3",
            "--model", OPTS["model"], "--batch", str(OPTS["batch"]), "--seed", str(seed)]
    args += ["--steps", str(steps)] if steps else ["--epochs", str(epochs)]
    r = json.loads(subprocess.run(args, check=True, capture_output=True, text=True,
                                  env=ENV_TORCH).stdout.strip().splitlines()[-1])
    return r["samples_per_s"], r["test_accuracy"], r["framework"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trainer", default="build/trainer")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-epoch", action="store_true", help="skip the one-epoch accuracy comparison")
    ap.add_argument("--epoch-seeds", type=int, default=1, help="seeds of the one-epoch comparison, each framework")
    ap.add_argument("--epoch-only", action="store_true", help="only the one-epoch accuracy comparison")
    ap.add_argument("--cpu-path", choices=sorted(PATH_ENV), help="cap both frameworks at this CPU path")
    ap.add_argument("--target", type=float, default=1.3, help="throughput ratio to report against")
    ap.add_argument("--model", choices=sorted(MODEL), default="cnn",
                    help="resnet20: on Fashion-MNIST padded to 32x32 (CIFAR-10's size), both frameworks")
    ap.add_argument("--batch", type=int, default=0, help="default 64 (cnn), 128 (resnet20)")
    a = ap.parse_args()
    OPTS["model"], OPTS["batch"] = a.model, a.batch or (128 if a.model == "resnet20" else 64)
    if a.cpu_path:
        ENV_OURS.update(PATH_ENV[a.cpu_path][0])
        ENV_TORCH.update(PATH_ENV[a.cpu_path][1])
    model, feats = cpu_info()
    print(f"cpu: {model}, {os.cpu_count()} logical cpus, features {' '.join(feats)}")
    print(f"paths: adasync {ENV_OURS.get('ADASYNC_CPU_PATH', 'best')}, pytorch "
          + " ".join(f"{k}={v}" for k, v in PATH_ENV.get(a.cpu_path, ({}, {}))[1].items())
          + f"; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}")
    ours, theirs, name = [], [], "pytorch"
    for _ in range(0 if a.epoch_only else a.rounds):
        (o, _), load_o = measured(lambda: adasync(a.trainer, a.threads, steps=a.steps))
        (t, _, name), load_t = measured(lambda: torch_ref(a.threads, steps=a.steps))
        ours.append((o, load_o))
        theirs.append((t, load_t))
    if not a.epoch_only:
        free = 1 - a.threads / os.cpu_count()
        quiet = [i for i in range(a.rounds) if ours[i][1] < free + QUIET and theirs[i][1] < free + QUIET]
        use = quiet if quiet else list(range(a.rounds))
        o = statistics.median(ours[i][0] for i in use)
        t = statistics.median(theirs[i][0] for i in use)
        print(f"{a.model}, batch {OPTS['batch']}, {a.threads} CPU threads, {a.rounds} alternating rounds of {a.steps} steps")
        print(f"{'framework':28s} {'samples/s (median)':>19s}   all rounds (others' share of the CPUs meanwhile)")
        print(f"{'adasync':28s} {o:19.0f}   {'  '.join(f'{x:.0f} ({100 * l:.0f}%)' for x, l in ours)}")
        print(f"{name:28s} {t:19.0f}   {'  '.join(f'{x:.0f} ({100 * l:.0f}%)' for x, l in theirs)}")
        if quiet:
            print(f"medians over the {len(quiet)} quiet rounds (others < {100 * (free + QUIET):.0f}% during both runs): "
                  + " ".join(str(i + 1) for i in quiet))
        else:
            print(f"no quiet round (others >= {100 * (free + QUIET):.0f}% during every round): medians over all rounds, "
                  "not to be trusted")
        print(f"throughput ratio adasync / pytorch: {o / t:.2f}x (target >= {a.target:.1f}x); "
              f"per round: {' '.join(f'{x[0] / y[0]:.2f}' for x, y in zip(ours, theirs))}")
    if not a.no_epoch and a.epoch_seeds == 1:
        _, acc_o = adasync(a.trainer, a.threads, epochs=1)
        _, acc_t, _ = torch_ref(a.threads, epochs=1)
        print(f"test accuracy after one epoch: adasync {100 * acc_o:.2f}%, pytorch {100 * acc_t:.2f}% "
              f"(difference {100 * (acc_o - acc_t):+.2f} points; target >= -0.5)")
    elif not a.no_epoch:
        seeds = range(1, a.epoch_seeds + 1)
        acc_o = [adasync(a.trainer, a.threads, epochs=1, seed=s)[1] for s in seeds]
        acc_t = [torch_ref(a.threads, epochs=1, seed=s)[1] for s in seeds]
        mo, mt = statistics.mean(acc_o), statistics.mean(acc_t)
        within = min(acc_t) <= mo <= max(acc_t)
        print(f"test accuracy after one epoch, seeds 1-{a.epoch_seeds}: adasync "
              + " ".join(f"{100 * x:.2f}" for x in acc_o) + f" (mean {100 * mo:.2f}%); pytorch "
              + " ".join(f"{100 * x:.2f}" for x in acc_t) + f" (mean {100 * mt:.2f}%, spread "
              f"{100 * min(acc_t):.2f}-{100 * max(acc_t):.2f}%); adasync's mean "
              + ("within" if within else ("above" if mo > max(acc_t) else "below")) + " PyTorch's spread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
