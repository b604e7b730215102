#!/usr/bin/env python3
"""Median samples/s per framework from JSON lines (one object per run), and
adasync's ratio to each reference, measured in the same session. The fastest
torch.compile mode is named, with its compile time, against the target
(adasync >= 1.5x compiled PyTorch). Lines with "skipped" are listed as such."""
import json
import statistics
import sys
from collections import defaultdict


def main(path):
    runs = defaultdict(list)
    acc = defaultdict(list)
    compile_s = defaultdict(list)
    skipped = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if "skipped" in r:
                skipped[r["framework"]] = r["skipped"]
                continue
            runs[r["framework"]].append(r["samples_per_s"])
            if "test_accuracy" in r:
                acc[r["framework"]].append(r["test_accuracy"])
            if "compile_s" in r:
                compile_s[r["framework"]].append(r["compile_s"])
    for name, why in skipped.items():
        print(f"{name}: skipped ({why})")
    if "adasync" not in runs:
        print("no adasync run found in", path)
        return 0 if skipped else 1
    ours = statistics.median(runs["adasync"])
    print(f"{'framework':48s} {'runs':>4s} {'samples/s (median)':>19s} {'test acc':>9s} {'compile s':>9s} {'adasync / it':>13s}")
    for name, v in sorted(runs.items(), key=lambda kv: kv[0] != "adasync"):
        m = statistics.median(v)
        a = statistics.median(acc[name]) if acc[name] else float("nan")
        c = f"{statistics.median(compile_s[name]):9.1f}" if compile_s[name] else f"{'':9s}"
        ratio = "" if name == "adasync" else f"{ours / m:12.2f}x"
        print(f"{name:48s} {len(v):4d} {m:19.0f} {a:9.4f} {c} {ratio:>13s}")
    compiled = {n: statistics.median(v) for n, v in runs.items() if "compile(" in n}
    if compiled:
        best = max(compiled, key=compiled.get)
        r = ours / compiled[best]
        print(f"fastest compiled PyTorch: {best} ({compiled[best]:.0f} samples/s, compile "
              f"{statistics.median(compile_s[best]):.1f} s, excluded); adasync / it = {r:.2f}x "
              f"(target >= 1.5x: {'met' if r >= 1.5 else 'missed'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
