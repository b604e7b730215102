#!/usr/bin/env python3
"""Error-runtime benchmark: test error against clock time for fixed K and for
AdaSync, reproducing the central picture of "Slow and Stale Gradients Can Win
the Race".

Fashion-MNIST, the cnn, P = 8 workers, batch 32 per worker, exponential
compute times (mean 1 time unit), plain SGD, the same learning rate for all;
virtual clock by default (deterministic, machine-independent), or the real
clock with injected delays (--real). For each configuration and seed the
trainer writes JSON Lines metrics; this script prints a time-to-accuracy
table (median over seeds) and draws test error against time (PNG, matplotlib).

  error_runtime.py [--trainer build/trainer] [--seeds 1,2,3,4,5] [--budget 800]
                   [--real [--real-mean 300ms]] [--quick] [--out bench/results/error-runtime]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CONFIGS = [
    # name, flags
    ("sync (K=8)", ["--variant", "sync"]),
    ("k-async K=1", ["--variant", "k-async", "--k", "1"]),
    ("k-async K=2", ["--variant", "k-async", "--k", "2"]),
    ("k-async K=3", ["--variant", "k-async", "--k", "3"]),
    ("k-async K=4", ["--variant", "k-async", "--k", "4"]),
    ("k-async K=8", ["--variant", "k-async", "--k", "8"]),
    ("k-batch-async K=4", ["--variant", "k-batch-async", "--k", "4"]),
    ("AdaSync (k-async)", ["--variant", "k-async", "--schedule", "adasync", "--k0", "1"]),
    # The order-statistic rule raises K later (K = 3 at F0/Ft > 4.67, not 4);
    # under Exp times k-async's time per update is k-sync's, the rule's premise.
    ("AdaSync order-stat (k-async)",
     ["--variant", "k-async", "--schedule", "adasync", "--k0", "1", "--adasync-rule", "order-stat"]),
    # The same with decisions every tenth of the budget (@T0): K = 1 lasts
    # until the first decision, and K = 3 comes later.
    ("AdaSync order-stat T10 (k-async)",
     ["--variant", "k-async", "--schedule", "adasync", "--k0", "1", "--adasync-rule", "order-stat",
      "--schedule-every", "@T0"]),
]
FIXED_K = ["k-async K=1", "k-async K=2", "k-async K=3", "k-async K=4", "k-async K=8"]
TARGETS = [0.85, 0.88, 0.90]


def metrics_path(outdir, clock, name, seed):
    tag = name.split(" (")[0].replace(" ", "_").replace("=", "")
    return os.path.join(outdir, f"{clock}-{tag}-seed{seed}.jsonl")


def run(trainer, name, flags, seed, a, outdir):
    path = metrics_path(outdir, "real" if a.real else "virtual", name, seed)
    if os.path.exists(path) and not a.rerun:
        return path
    flags = [f"{a.budget / 10:g}s" if x == "@T0" else x for x in flags]
    args = [trainer, "--model", "cnn", "--workers", "8", "--batch", "32", "--lr", str(a.lr), "--momentum", "0",
            "--seed", str(seed), "--eval-samples", str(a.eval_samples), "--progress", "none",
            "--metrics", path] + flags
    if a.real:
        args += ["--clock", "real", "--straggler", f"exp:mean={a.real_mean}", "--time-budget", f"{a.budget}s",
                 "--eval-every", f"{a.budget / a.evals}s", "--devices", a.devices]
    else:
        args += ["--clock", "virtual", "--straggler", "exp:mean=1", "--time-budget", str(a.budget),
                 "--eval-every", f"{a.budget / a.evals}s", "--devices", a.devices]
    t0 = time.time()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    print(f"  {name:22s} seed {seed}: {time.time() - t0:6.1f} s wall", file=sys.stderr, flush=True)
    return path


def curve(path):
    pts, ks = [], []
    for line in open(path):
        j = json.loads(line)
        if j.get("event") in ("eval", "final"):
            pts.append((j["time"], j["test_accuracy"]))
        if j.get("event") == "k_change":
            ks.append((j["time"], j["k"]))
    return pts, ks


def parse_seconds(text):
    for suffix, f in (("ms", 1e-3), ("us", 1e-6), ("s", 1.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * f
    return float(text)


def time_to(pts, target):
    for t, acc in pts:
        if acc >= target:
            return t
    return float("inf")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trainer", default="build/trainer")
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--budget", type=float, default=800, help="clock time per run (virtual units, or seconds with --real)")
    ap.add_argument("--evals", type=int, default=50)
    ap.add_argument("--eval-samples", type=int, default=5000)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--real", action="store_true", help="real clock with injected delays")
    ap.add_argument("--real-mean", default="300ms",
                    help="mean injected compute time with --real; keep it well above the real compute time of a "
                         "gradient times P / cores, so that the delays, not CPU contention, set the arrival order")
    ap.add_argument("--virtual-dir", default="bench/results/error-runtime",
                    help="with --real: virtual-clock results to overlay on the plot (time in mean compute times)")
    ap.add_argument("--devices", default="cpu")
    ap.add_argument("--quick", action="store_true", help="one seed, a quarter of the budget")
    ap.add_argument("--rerun", action="store_true", help="rerun even when the metrics file exists")
    ap.add_argument("--out", default="bench/results/error-runtime")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    if a.quick:
        seeds, a.budget = seeds[:1], a.budget / 4
    os.makedirs(a.out, exist_ok=True)

    curves = {}
    for name, flags in CONFIGS:
        curves[name] = []
        for seed in seeds:
            curves[name].append(curve(run(a.trainer, name, flags, seed, a, a.out)))

    clock = "real seconds" if a.real else "virtual time units (mean compute time = 1)"
    print(f"P = 8, batch 32, Exp compute times, lr {a.lr}, budget {a.budget:g} {clock}; "
          f"median over seeds {','.join(map(str, seeds))}")
    hdr = "".join(f"{'t(' + str(int(100 * x)) + '%)':>10s}" for x in TARGETS)
    print(f"{'configuration':30s}{hdr}{'final acc':>11s}")
    med_t = {}
    for name, _ in CONFIGS:
        ts = [statistics.median([time_to(p, x) for p, _ in curves[name]]) for x in TARGETS]
        fin = statistics.median([p[-1][1] for p, _ in curves[name]])
        med_t[name] = (ts, fin)
        cells = "".join(f"{t:10.1f}" if t != float("inf") else f"{'-':>10s}" for t in ts)
        print(f"{name:30s}{cells}{100 * fin:10.2f}%")
    # Each AdaSync rule against the best fixed K for each target.
    for ada in (n for n, _ in CONFIGS if n.startswith("AdaSync")):
        ada_t, ada_fin = med_t[ada]
        print(f"\n{ada}:")
        for i, x in enumerate(TARGETS):
            best = min(FIXED_K, key=lambda n: med_t[n][0][i])
            bt = med_t[best][0][i]
            if bt == float("inf"):
                reached = "reaches it at %.1f" % ada_t[i] if ada_t[i] != float("inf") else "does not reach it either"
                print(f"  reach {int(100 * x)}%: no fixed K reaches it within the budget; AdaSync {reached}")
                continue
            if ada_t[i] == float("inf"):
                print(f"  reach {int(100 * x)}%: AdaSync does not reach it within the budget; "
                      f"best fixed {best} {bt:.1f} MISSED")
                continue
            ratio = ada_t[i] / bt if bt != 0 else float("nan")
            ok = "ok" if ratio <= 1.1 else "MISSED"
            print(f"  reach {int(100 * x)}%: AdaSync {ada_t[i]:.1f}, best fixed {best} {bt:.1f}: {ratio:.2f}x "
                  f"(target <= 1.1x) {ok}")
        best_fin_name = max(FIXED_K, key=lambda n: med_t[n][1])
        diff = 100 * (ada_fin - med_t[best_fin_name][1])
        print(f"  final: AdaSync {100 * ada_fin:.2f}%, best fixed {best_fin_name} "
              f"{100 * med_t[best_fin_name][1]:.2f}%: {diff:+.2f} points (target >= -0.3) "
              f"{'ok' if diff >= -0.3 else 'MISSED'}")
        ks = curves[ada][0][1]
        print("  K changes (seed %d): %s" % (seeds[0], ", ".join(f"K={k} at {t:.0f}" for t, k in ks) or "none"))

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no matplotlib: plot skipped (apt-get install python3-matplotlib)")
        return 0
    fig, ax = plt.subplots(figsize=(8, 5))
    # With --real, time is shown in units of the mean injected compute time,
    # the virtual clock's unit, and the virtual curves are overlaid (dotted).
    scale = 1.0 / parse_seconds(a.real_mean) if a.real else 1.0
    colors = {}
    for name, _ in CONFIGS:
        runs = curves[name]
        n = min(len(p) for p, _ in runs)
        ts = [scale * runs[0][0][i][0] for i in range(n)]
        err = [100 * (1 - statistics.median([p[i][1] for p, _ in runs])) for i in range(n)]
        style = {"lw": 1.3}
        if name.startswith("AdaSync"):
            ls = ":" if "T10" in name else "--" if "order-stat" in name else "-"
            style = {"lw": 2.5, "color": "black", "ls": ls}
        if name.startswith("sync"):  # with P = 8 it is k-async K=8 exactly: dashed, so both show
            style = {"lw": 2.0, "ls": "--", "color": "grey"}
        line, = ax.plot(ts, err, label=name + (" (real)" if a.real else ""), **style)
        colors[name] = line.get_color()
    if a.real:
        t_max = scale * a.budget
        for name, _ in CONFIGS:
            vr = []
            for seed in seeds:
                path = metrics_path(a.virtual_dir, "virtual", name, seed)
                if os.path.exists(path):
                    vr.append(curve(path)[0])
            if not vr:
                continue
            n = min(len(p) for p in vr)
            ts = [vr[0][i][0] for i in range(n) if vr[0][i][0] <= t_max]
            err = [100 * (1 - statistics.median([p[i][1] for p in vr])) for i in range(len(ts))]
            ax.plot(ts, err, ls=":", lw=1.2, color=colors[name])
        ax.plot([], [], ls=":", color="grey", label="virtual clock, same configuration")
    ax.set_xlabel("time (mean compute times: real seconds / %s)" % a.real_mean if a.real else f"time ({clock})")
    ax.set_ylabel("test error (%)")
    ax.set_ylim(8, 30)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"Fashion-MNIST cnn, P = 8, {'real' if a.real else 'virtual'} clock, median of {len(seeds)} seed(s)")
    png = os.path.join(a.out, f"error-runtime-{'real' if a.real else 'virtual'}.png")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
