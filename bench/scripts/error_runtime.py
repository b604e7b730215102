#!/usr/bin/env python3
"""Error-runtime benchmark: test loss and error against clock time for fixed K
and for each AdaSync rule, reproducing the central picture of "Slow and Stale
Gradients Can Win the Race". Named regimes (ALGORITHMS.md section 5):

  convex      linear (softmax regression) on Fashion-MNIST, P = 8, batch 8,
              Exp(1) times, lr 0.02, budget 2000, k-async and k-sync, 15 seeds
  deep        mlp, P = 8, batch 32, Exp(1), lr 0.2, budget 1500, 15 seeds
  deep-cnn    the cnn, lr 0.1, budget 800, k-async K = 1, 2, 4, 3 seeds: for
              --devices cuda on a GPU (not part of all)
  stragglers  convex and mlp with shifted-exponential and Pareto times, P = 16,
              and convex at P = 32, 15 seeds
  short       the cnn, P = 8, batch 32, lr 0.1, budget 800 (time to accuracy;
              K = 1-2 win there), also on the real clock with --real

For every regime but short it prints the median test loss of each fixed K and
each rule, the envelope of the fixed-K medians, and the target: each rule's
median within 1.10x of the envelope at every evaluation after the first tenth
of the budget, within 1.03x of the best fixed K at the end, and reaching the
envelope's loss at 25%, 50% and 90% of the budget no later than 1.1x the best
fixed K (per seed; the median over seeds with a 95% bootstrap interval, which
must allow 1.1x); and against the baselines of ALGORITHMS.md 5.2 (m-sync,
Rennala, Ringmaster, each at its best configuration). PNGs: loss and error
against time (baselines dotted), K against time.

  error_runtime.py [--regime convex|deep|deep-cnn|stragglers|short|all|CELL,...] [--quick]
                   [--seeds N] [--first-seed 1] [--rules sqrt,plateau,...] [--jobs 2] [--no-baselines]
                   [--trainer build/trainer] [--out bench/results/error-runtime]
  short only:      [--budget 800] [--real [--real-mean 300ms]]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# ---------------------------------------------------------------- regimes
# Each regime: where the error-runtime trade-off exists (ALGORITHMS.md
# section 5: constant learning rate, noisy gradients, runs long enough that
# small K plateaus). Curves are test loss (full test set) against virtual time.
RULES = ["sqrt", "sqrt-round", "order-stat", "runtime", "plateau", "runtime-plateau"]  # the last is the default


def regime_specs(quick):
    conv = dict(model="linear", batch=8, lr=0.02, budget=2000, evals=50, ks=[1, 2, 4, 8], workers=8,
                straggler="exp:mean=1", seeds=15, variants=["k-async", "k-sync"])
    mlp = dict(model="mlp", batch=32, lr=0.2, budget=1500, evals=30, ks=[1, 2, 4, 8], workers=8,
               straggler="exp:mean=1", seeds=15, variants=["k-async", "k-sync"])
    specs = {
        "convex": [dict(conv, name="convex")],
        "deep": [dict(mlp, name="deep-mlp")],
        # The cnn version of deep: for --devices cuda (bench/gpu_session.sh); not in "all".
        "deep-cnn": [dict(mlp, name="deep-cnn", model="cnn", lr=0.1, budget=800, evals=20, ks=[1, 2, 4],
                          seeds=3, variants=["k-async"])],
        "stragglers": [
            dict(conv, name="stragglers-convex-shifted-exp", workers=16, ks=[1, 2, 4, 8, 16],
                 straggler="shifted-exp:shift=1,mean=1", seeds=15),
            dict(conv, name="stragglers-convex-pareto", workers=16, ks=[1, 2, 4, 8, 16],
                 straggler="pareto:scale=1,shape=1.5", seeds=15),
            # K = 1 diverges here (16 workers, staleness about 15, lr 0.2): the measured K0 must avoid it.
            dict(mlp, name="stragglers-mlp-pareto", workers=16, ks=[1, 2, 4, 8, 16],
                 straggler="pareto:scale=1,shape=1.5", seeds=15, variants=["k-async"]),
            dict(conv, name="stragglers-convex-shifted-exp-p32", workers=32, ks=[1, 2, 4, 8, 16, 32],
                 straggler="shifted-exp:shift=1,mean=1", seeds=15),
            dict(conv, name="stragglers-convex-pareto-p32", workers=32, ks=[1, 2, 4, 8, 16, 32],
                 straggler="pareto:scale=1,shape=1.5", seeds=15),
        ],
    }
    # The paper's CIFAR-10 experiment: resnet20, P = 8, batch 32, lr 0.12 (and
    # with a step decay at half and three quarters of the budget's epochs),
    # K in {1, 2, 4, 8} and AdaSync, Exp(1) compute times, augmentation. On
    # CIFAR-10 with --cifar-dir, else on Fashion-MNIST padded to 32x32.
    # The virtual clock computes only the gradients that count (K per update):
    # a budget of 400 is 1.7 epochs of Fashion-MNIST at K = 1 and 5-6 minutes
    # of a core per run here (20 runs, 55 minutes on 2 cores), what the CPU
    # allows, not the paper's tens of epochs.
    res = dict(model="resnet20", batch=32, lr=0.12, budget=400, evals=10, ks=[1, 2, 4, 8], workers=8,
               straggler="exp:mean=1", seeds=2, variants=["k-sync"], extra=["--augment"], momentum=0)
    specs["cifar"] = [dict(res, name="cifar-resnet20"),
                      dict(res, name="cifar-resnet20-step", step=(0.5, 0.75))]
    if quick:
        for lst in specs.values():
            for s in lst:
                s["seeds"] = min(s["seeds"], 3)
                s["budget"] = s["budget"] / 2
                s["evals"] = min(s["evals"], 25)
    return specs


def rule_flags(rule):
    """A rule name, optionally with @T0 (decision interval) and :z=Z (plateau)."""
    extra = []
    if "@" in rule:
        rule, t0 = rule.split("@")
        extra += ["--schedule-every", t0]
    rule, *opts = rule.split(":")
    for o in opts:  # z=Z, u=N: the plateau rule's significance and window
        key, val = o.split("=")
        extra += [{"z": "--plateau-z", "u": "--plateau-updates", "h": "--plateau-horizon"}[key], val]
    if rule == "sqrt-round":
        return ["--schedule", "adasync", "--adasync-rule", "sqrt", "--sqrt-rounding", "round"] + extra
    if rule == "default":
        return ["--schedule", "adasync"] + extra
    return ["--schedule", "adasync", "--adasync-rule", rule] + extra


def step_milestones(spec):
    """Milestones in epochs: those of the fixed K = 1 run (E[T] = 1/P under
    Exp(1)) at the spec's shares of the budget, about."""
    epochs = spec["budget"] * spec["workers"] * spec["batch"] / 50000
    return ",".join(f"{f * epochs:.3g}" for f in spec["step"])


def torch_sync(a, spec, samples, log):
    """PyTorch trains the same network synchronously (batch P x m, the same lr,
    schedule and augmentation) for the samples the K = P run counted."""
    try:
        import torch  # noqa: F401
    except ImportError:
        log("  PyTorch sync: skipped (torch not importable)")
        return
    if a.cifar_dir:
        log("  PyTorch sync: skipped (its reference reads Fashion-MNIST only)")
        return
    epochs = samples / 60000
    args = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference.py"),
            "--model", spec["model"], "--batch", str(spec["workers"] * spec["batch"]), "--lr", str(spec["lr"]),
            "--momentum", "0", "--epochs", f"{epochs:.4f}", "--warmup", "0", "--threads", "2", "--augment"]
    if "step" in spec:
        args += ["--lr-milestones", step_milestones(spec)]
    r = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    log(f"  PyTorch sync (batch {spec['workers'] * spec['batch']}, {epochs:.3f} epochs, the K = {spec['workers']} "
        f"run's samples): test accuracy {100 * r['test_accuracy']:.2f}%")


def regime_run(a, spec, variant, tag, flags, seed):
    path = os.path.join(a.out, spec["name"], f"{variant}-{tag}-seed{seed}.jsonl")
    if os.path.exists(path) and not a.rerun:
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    budget = spec["budget"]
    data = (["--dataset", "cifar10", "--data-dir", a.cifar_dir] if a.cifar_dir else ["--dataset", "fashion-mnist32"]) \
        if spec["model"].startswith("resnet") else []
    extra = list(spec.get("extra", []))
    if "step" in spec:
        extra += ["--lr-schedule", "step", "--lr-milestones", step_milestones(spec)]
    args = [a.trainer, "--model", spec["model"], "--workers", str(spec["workers"]), "--batch", str(spec["batch"]),
            "--lr", str(spec["lr"]), "--momentum", "0", "--seed", str(seed), "--variant", variant,
            "--clock", "virtual", "--straggler", spec["straggler"], "--time-budget", f"{budget:g}",
            "--eval-every", f"{budget / spec['evals']:g}s", "--eval-samples", "0", "--threads", "1",
            "--progress", "none", "--devices", a.devices, "--metrics", path + ".part"] + data + extra + flags
    rc = subprocess.run(args, stdout=subprocess.DEVNULL).returncode
    # A run that diverged stops on --nonfinite-limit with exit code 1: its
    # curve ends there (median_curve counts the rest as an infinite loss).
    if rc != 0 and not (rc == 1 and stop_reason(path + ".part") == "non-finite limit"):
        raise subprocess.CalledProcessError(rc, args)
    os.replace(path + ".part", path)
    return path


def stop_reason(path):
    try:
        last = open(path).read().splitlines()[-1]
        return json.loads(last).get("stop_reason", "")
    except (OSError, IndexError, ValueError):
        return ""


def loss_curve(path):
    pts, ks = [], []
    for line in open(path):
        j = json.loads(line)
        if j.get("event") == "eval":
            # A diverged run's loss is NaN (null in JSON): worse than any.
            loss = j["test_loss"] if j["test_loss"] is not None else float("inf")
            pts.append((j["time"], loss, j["test_accuracy"]))
        if j.get("event") == "k_change":
            ks.append((j["time"], j["k"], j["reason"]))
    return pts, ks


def median_curve(runs, longest=None):
    # A run that diverged stops early: its missing evaluations count as an
    # infinite loss and zero accuracy. `longest`: the evaluation times to
    # report at (default: those of the longest run).
    longest = longest or max(runs, key=lambda r: len(r[0]))[0]
    inf = (0, float("inf"), 0.0)
    return [(longest[i][0], statistics.median((p[i] if i < len(p) else inf)[1] for p, _ in runs),
             statistics.median((p[i] if i < len(p) else inf)[2] for p, _ in runs)) for i in range(len(longest))]


def first_time(curve, level):
    for t, loss, _ in curve:
        if loss <= level:
            return t
    return float("inf")


LEVELS = (0.25, 0.5, 0.9)  # the envelope's loss at these shares of the budget


def bootstrap_ratio(rule_times, fixed_times, draws=2000, seed=12345):
    """Median time to a level of a rule over the best fixed K's (the K with the
    smallest median), and its 95% bootstrap interval: seeds drawn with
    replacement, the same draw for the rule and every K (paired)."""
    import random

    def ratio(idx):
        med = lambda ts: statistics.median(ts[i] for i in idx)  # noqa: E731
        best = min(med(ts) for ts in fixed_times.values())
        r = med(rule_times)
        if best == float("inf"):
            return float("inf") if r == float("inf") else 0.0
        return r / best if best > 0 else float("inf")
    n = len(rule_times)
    point = ratio(range(n))
    rng = random.Random(seed)
    rs = sorted(ratio([rng.randrange(n) for _ in range(n)]) for _ in range(draws))
    return point, rs[int(0.025 * draws)], rs[int(0.975 * draws) - 1]


def judge(curve, fixed, budget, runs=None, fixed_runs=None):
    """The target of a rule's median curve against the fixed-K medians: within
    1.10x of the envelope after a tenth of the budget, within 1.03x of the best
    fixed K at the end, and reaching the envelope's loss at 25%, 50% and 90% of
    the budget no later than 1.1x the best fixed K: per seed, the median over
    seeds, passing when its 95% bootstrap interval allows 1.1x (`runs`: each
    seed's curve, `fixed_runs`: each K's; without them, on the medians)."""
    n = min(len(curve), *(len(c) for c in fixed.values()))
    env = [min(c[i][1] for c in fixed.values()) for i in range(n)]
    worst, worst_t = 0.0, 0.0
    for i in range(n):
        if curve[i][0] > budget / 10 + 1e-9 and curve[i][1] / env[i] > worst:
            worst, worst_t = curve[i][1] / env[i], curve[i][0]
    best_name = min(fixed, key=lambda k: fixed[k][n - 1][1])
    final = curve[n - 1][1] / fixed[best_name][n - 1][1]
    levels = []
    for frac in LEVELS:
        # The envelope at that time, averaged over the evaluations within a
        # twentieth of the budget of it (a single median is noisy, and the
        # lowest one reached so far is a minimum of noise that no curve meets).
        near = [env[j] for j in range(n) if abs(curve[j][0] - frac * budget) <= budget / 20 + 1e-9]
        level = sum(near) / len(near)
        if runs is None:
            best_t = min(first_time(c, level) for c in fixed.values())
            r = first_time(curve, level) / best_t
            levels.append((level, r, r, r))
            continue
        rt = [first_time(pts, level) for pts, _ in runs]
        ft = {k: [first_time(pts, level) for pts, _ in fr] for k, fr in fixed_runs.items()}
        levels.append((level,) + bootstrap_ratio(rt, ft))
    ok = worst <= 1.10 and final <= 1.03 and all(lo <= 1.1 for _, _, lo, _ in levels)
    return dict(worst=worst, worst_t=worst_t, final=final, best=best_name, levels=levels, ok=ok, env=env)


def baseline_jobs(spec):
    """The neighbouring algorithms of ALGORITHMS.md 5.2 on the same compute
    times, each over its own grid: m-sync (k-sync, m in the regime's K),
    Rennala (k-batch-sync, K in the same), Ringmaster (async, staleness bound
    R in P/8 .. 2P)."""
    p = spec["workers"]
    rs = sorted({r for r in (p // 8, p // 4, p // 2, p, 2 * p) if r >= 1})
    return {"m-sync": [("k-sync", f"K{k}", ["--k", str(k)], f"m={k}") for k in spec["ks"]],
            "Rennala": [("k-batch-sync", f"K{k}", ["--k", str(k)], f"batch {k}x") for k in spec["ks"]],
            "Ringmaster": [("async", f"R{r}", ["--k", "1", "--max-staleness", str(r)], f"R={r}") for r in rs]}


def run_regime(a, spec, rules, log):
    seeds = list(range(a.first_seed, a.first_seed + (a.seeds or spec["seeds"])))
    jobs = []
    variants = [v for v in spec["variants"] if not a.variants or v in a.variants.split(",")]
    for variant in variants:
        for k in spec["ks"]:
            jobs.append((variant, f"K{k}", ["--k", str(k)]))
        for r in rules:
            jobs.append((variant, r, rule_flags(r) + ["--k0", str(spec.get("k0", "auto"))]))
    baselines = baseline_jobs(spec) if a.baselines else {}
    for fam in baselines.values():
        for v, t, f, _ in fam:
            if (v, t, f) not in jobs:
                jobs.append((v, t, f))
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(a.jobs) as ex:
        futs = {(v, t, s): ex.submit(regime_run, a, spec, v, t, f, s) for v, t, f in jobs for s in seeds}
        paths = {key: f.result() for key, f in futs.items()}
    results = {}
    dataset = ("CIFAR-10" if a.cifar_dir else "Fashion-MNIST padded to 32x32") if spec["model"].startswith("resnet") \
        else "Fashion-MNIST"
    log(f"\n== regime {spec['name']}: {spec['model']} on {dataset}, P = {spec['workers']}, batch {spec['batch']}, "
        f"lr {spec['lr']}, {spec['straggler']} compute times, budget {spec['budget']:g}, AdaSync from "
        f"K0 = {spec.get('k0', 'auto')}, virtual clock, "
        f"median of seeds {seeds[0]}-{seeds[-1]}")
    # The best configuration of each baseline: the smallest final median loss.
    base_best = {}
    for fam, cfgs in baselines.items():
        cands = []
        for v, t, _, label in cfgs:
            runs = [loss_curve(paths[(v, t, s)]) for s in seeds]
            cands.append((label, median_curve(runs), runs))
        n_min = min(len(c[1]) for c in cands)
        base_best[fam] = min(cands, key=lambda c: c[1][n_min - 1][1] if len(c[1]) >= n_min else float("inf"))
    for variant in variants:
        # Every curve on the grid of the longest run of this variant: where
        # every seed of a K diverged, that K's curve is infinite throughout.
        runs_of = {t: [loss_curve(paths[(variant, t, s)]) for s in seeds] for t in [f"K{k}" for k in spec["ks"]] + rules}
        grid = max((r[0] for runs in runs_of.values() for r in runs), key=len)
        fixed = {f"K={k}": median_curve(runs_of[f"K{k}"], grid) for k in spec["ks"]}
        fixed_runs = {f"K={k}": runs_of[f"K{k}"] for k in spec["ks"]}
        n = min(len(c) for c in fixed.values())
        log(f"\n{variant}: median test loss")
        cols = list(fixed) + rules
        curves = dict(fixed)
        kpaths = {}
        for r in rules:
            runs = runs_of[r]
            curves[r] = median_curve(runs, grid)
            kpaths[r] = runs
        env = [min(c[i][1] for c in fixed.values()) for i in range(n)]
        log(f"{'time':>8s}" + "".join(f"{c:>11s}" for c in cols) + f"{'envelope':>10s}")
        step = max(1, n // 10)
        for i in list(range(step - 1, n, step)):
            log(f"{curves[cols[0]][i][0]:8.0f}" + "".join(f"{curves[c][i][1]:11.4f}" for c in cols) + f"{env[i]:10.4f}")
        log(f"{'final acc':>8s}" + "".join(f"{100 * curves[c][n - 1][2]:10.2f}%" for c in cols))
        for r in rules:
            j = judge(curves[r], fixed, spec["budget"], kpaths[r], fixed_runs)
            results[(variant, r)] = j
            lv = ", ".join(f"{lev:.3f}: {ratio:.2f}x [{lo:.2f}, {hi:.2f}]" for lev, ratio, lo, hi in j["levels"])
            log(f"  {r:11s} worst/envelope {j['worst']:.3f} (t={j['worst_t']:.0f}), final/{j['best']} {j['final']:.3f}, "
                f"time to levels (25/50/90%, 95% interval) {lv}  {'MET' if j['ok'] else 'missed'}")
            ks = kpaths[r][0][1]
            log(f"  {'':11s} K changes (seed {seeds[0]}): " +
                (", ".join(f"{k} at {t:.0f}" for t, k, _ in ks) or "none"))
            for fam, (label, bc, bruns) in base_best.items():
                nb = min(n, len(bc))
                fin = curves[r][nb - 1][1] / bc[nb - 1][1]
                lev = j["levels"][-1][0]
                rt = statistics.median(first_time(p, lev) for p, _ in kpaths[r])
                bt = statistics.median(first_time(p, lev) for p, _ in bruns)
                if bt == float("inf"):
                    tr, tt = (0.0, "never reached by it") if rt < float("inf") else (1.0, "reached by neither")
                else:
                    tr = rt / bt if bt > 0 else float("inf")
                    tt = f"{tr:.2f}x"
                verdict = "beats it" if fin <= 1.0 and tr <= 1.0 else "does not beat it"
                log(f"  {'':11s} vs {fam} (best: {label}): final loss {fin:.3f}x, time to the 90% level {tt}: "
                    f"{verdict}")
        plot_regime(a, spec, variant, curves, fixed, env, rules, kpaths, seeds,
                    {f"{fam} {label}": bc for fam, (label, bc, _) in base_best.items()})
        if spec["model"].startswith("resnet") and spec["workers"] in spec["ks"]:
            last = [json.loads(l) for l in open(paths[(variant, f"K{spec['workers']}", seeds[0])])
                    if '"eval"' in l][-1]
            torch_sync(a, spec, last["samples"], log)
    return results


def plot_regime(a, spec, variant, curves, fixed, env, rules, kpaths, seeds, baselines=None):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for col, (ax, what) in enumerate(zip(axes[:2], ("test loss", "test error (%)"))):
        for name, c in curves.items():
            ys = [p[1] if col == 0 else 100 * (1 - p[2]) for p in c]
            style = dict(lw=1.2) if name in fixed else dict(lw=2.0, ls="--")
            if name == RULES[-1]:  # the default
                style = dict(lw=2.8, color="black", label=name + " (default)")
            ax.plot([p[0] for p in c], ys, **dict(dict(label=name), **style))
        for name, c in (baselines or {}).items():
            ys = [p[1] if col == 0 else 100 * (1 - p[2]) for p in c]
            ax.plot([p[0] for p in c], ys, ls=":", lw=1.6, label=name)
        if col == 0:
            ax.plot([p[0] for p in list(fixed.values())[0][:len(env)]], env, color="black", lw=3, alpha=0.25,
                    label="envelope of fixed K")
        ax.set_xlabel("virtual time (mean compute times)")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    lo = min(env)
    axes[0].set_ylim(lo * 0.95, lo * 1.8)
    axes[0].legend(fontsize=7, ncol=2)
    ax = axes[2]
    for r in rules:
        # K against time, median over seeds on the evaluation grid.
        grid = [p[0] for p in curves[r]]
        ks = []
        for t in grid:
            vals = []
            for pts, changes in kpaths[r]:
                # --k0 auto: the stale variants warm up at K = P, the sync ones start at 1.
                k = spec.get("k0") or (spec["workers"] if variant in ("k-async", "k-batch-async") else 1)
                for tc, kc, _ in changes:
                    if tc <= t:
                        k = kc
                vals.append(k)
            ks.append(statistics.median(vals))
        ax.step(grid, ks, where="post", label=r)
    ax.set_xlabel("virtual time")
    ax.set_ylabel("K (median over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(f"{spec['name']}: {spec['model']}, {variant}, P = {spec['workers']}, {spec['straggler']}, "
                 f"median of {len(seeds)} seeds")
    fig.tight_layout()
    png = os.path.join(a.out, f"{spec['name']}-{variant}.png")
    fig.savefig(png, dpi=90)
    plt.close(fig)


CONFIGS = [
    # name, flags
    ("sync (K=8)", ["--variant", "sync"]),
    ("k-async K=1", ["--variant", "k-async", "--k", "1"]),
    ("k-async K=2", ["--variant", "k-async", "--k", "2"]),
    ("k-async K=3", ["--variant", "k-async", "--k", "3"]),
    ("k-async K=4", ["--variant", "k-async", "--k", "4"]),
    ("k-async K=8", ["--variant", "k-async", "--k", "8"]),
    ("k-batch-async K=4", ["--variant", "k-batch-async", "--k", "4"]),
    # The sqrt rule was the default until the plateau rule replaced it.
    ("AdaSync (k-async)", ["--variant", "k-async", "--schedule", "adasync", "--k0", "1", "--adasync-rule", "sqrt"]),
    ("AdaSync default (k-async)", ["--variant", "k-async", "--schedule", "adasync", "--k0", "1"]),
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
    ap.add_argument("--regime", default="short",
                    help="convex, deep, deep-cnn, stragglers, cifar, short, all, or cells by name (comma-separated)")
    ap.add_argument("--cifar-dir", default="", help="cifar regime: the CIFAR-10 binary batches (default: "
                    "Fashion-MNIST padded to 32x32 stands in)")
    ap.add_argument("--rules", default=",".join(RULES), help="AdaSync rules to run (regimes other than short)")
    ap.add_argument("--variants", default="", help="only these of each cell's variants (comma-separated; default all)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (regimes other than short)")
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--results", default="", help="append the regime tables to this file")
    ap.add_argument("--trainer", default="build/trainer")
    ap.add_argument("--seeds", default="", help="short: a list (1,2,3,4,5); other regimes: how many")
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
    ap.add_argument("--no-baselines", dest="baselines", action="store_false",
                    help="regimes: leave out m-sync, Rennala and Ringmaster (ALGORITHMS.md 5.2)")
    ap.add_argument("--out", default="", help="run files, tables and plots (default bench/results/error-runtime "
                    "for short, bench/results/error-runtime-regimes otherwise)")
    a = ap.parse_args()
    if not a.out:
        a.out = "bench/results/error-runtime" if a.regime == "short" else "bench/results/error-runtime-regimes"
    if a.regime != "short":
        return regimes_main(a)
    seeds = [int(s) for s in (a.seeds or "1,2,3,4,5").split(",")]
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
            style = {"lw": 2.5, "color": "crimson" if "default" in name else "black", "ls": ls}
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


def regimes_main(a):
    names = ["convex", "deep", "stragglers"] if a.regime == "all" else a.regime.split(",")
    specs = regime_specs(a.quick)
    # A cell of a regime by its name (e.g. stragglers-mlp-pareto) runs alone.
    cells = {s["name"]: [s] for lst in specs.values() for s in lst}
    for n in names:
        if n not in specs and n not in cells:
            print(f"error_runtime.py: --regime: expected convex, deep, deep-cnn, stragglers, cifar, short, all or a "
                  f"cell's name ({', '.join(cells)}), found '{n}'", file=sys.stderr)
            return 2
    a.seeds = int(a.seeds) if a.seeds else 0
    rules = [r for r in a.rules.split(",") if r]
    os.makedirs(a.out, exist_ok=True)
    out = open(a.results, "a") if a.results else None

    def log(line):
        print(line, flush=True)
        if out:
            out.write(line + "\n")
    for n in names:
        for spec in specs.get(n, cells.get(n)):
            run_regime(a, spec, rules, log)
    if out:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
