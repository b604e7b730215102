#!/usr/bin/env python3
"""Median samples/s per framework from JSON lines (one object per run), and
adasync's ratio to each reference, measured in the same session."""
import json
import statistics
import sys
from collections import defaultdict


def main(path):
    runs = defaultdict(list)
    acc = defaultdict(list)
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            runs[r["framework"]].append(r["samples_per_s"])
            if "test_accuracy" in r:
                acc[r["framework"]].append(r["test_accuracy"])
    if "adasync" not in runs:
        print("no adasync run found in", path)
        return 1
    ours = statistics.median(runs["adasync"])
    print(f"{'framework':42s} {'runs':>4s} {'samples/s (median)':>19s} {'test acc':>9s} {'adasync / it':>13s}")
    for name, v in sorted(runs.items(), key=lambda kv: kv[0] != "adasync"):
        m = statistics.median(v)
        a = statistics.median(acc[name]) if acc[name] else float("nan")
        ratio = "" if name == "adasync" else f"{ours / m:12.2f}x"
        print(f"{name:42s} {len(v):4d} {m:19.0f} {a:9.4f} {ratio:>13s}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
