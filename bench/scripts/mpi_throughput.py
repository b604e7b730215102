#!/usr/bin/env python3
"""Throughput over MPI against the in-process engine, side by side.

For P = 1, 2, 3 workers: the trainer with P worker threads in one process,
and the same run under `mpirun -np P+1 --transport mpi` (the parameter
server on rank 0, one worker per rank), alternating, --rounds each; steady
samples/s (after the first update) from the metrics' summary, medians. CPU
workers, one thread each. The ratio is MPI / in-process: what moving the
workers into other processes costs (on one host, through shared memory).

  python3 bench/scripts/mpi_throughput.py --trainer build/trainer [--model mlp] [--rounds 3] [--extra '...']
      [--mpi-also '--no-shared-memory']   (a second MPI run in each round, with these flags)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def run(cmd, env):
    with tempfile.TemporaryDirectory() as d:
        metrics = os.path.join(d, "m.jsonl")
        p = subprocess.run(cmd + ["--metrics", metrics], env=env, capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
        with open(metrics) as f:
            for line in f:
                j = json.loads(line)
                if j.get("event") == "summary":
                    return j["steady_samples_per_s"]
    sys.exit("no summary in the metrics")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trainer", default="build/trainer")
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--variant", default="async")
    ap.add_argument("--updates", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", default="1,2,3")
    ap.add_argument("--extra", default="", help="more trainer flags for both sides, e.g. '--local-steps 1000'")
    ap.add_argument("--mpi-also", default="", help="a second MPI run in each round with these flags added")
    a = ap.parse_args()
    env = dict(os.environ, **MPI_ENV)
    flags = ["--model", a.model, "--dataset", a.dataset, "--variant", a.variant, "--max-updates", str(a.updates),
             "--threads", "1", "--devices", "cpu", "--progress", "none", "--eval-every", "0"] + a.extra.split()
    print(f"{a.model} on {a.dataset}, {a.variant}, {a.updates} updates, CPU workers (1 thread each), "
          f"{os.cpu_count()} cores, medians of {a.rounds} alternating rounds")
    also = a.mpi_also.split()
    head = f"{'workers':>8} {'in-process samples/s':>22} {'MPI samples/s':>15} {'MPI / in-process':>18}"
    if also:
        head += f" {'with ' + a.mpi_also:>30}"
    print(head + "   rounds (local / mpi" + (" / with" if also else "") + ")")
    for P in [int(x) for x in a.workers.split(",")]:
        local, mpi, mpi2 = [], [], []
        mpirun = ["mpirun", "--oversubscribe", "-np", str(P + 1), a.trainer, "--transport", "mpi", "--workers", str(P)]
        for _ in range(a.rounds):
            local.append(run([a.trainer, "--workers", str(P)] + flags, env))
            mpi.append(run(mpirun + flags, env))
            if also:
                mpi2.append(run(mpirun + flags + also, env))
        l, m = statistics.median(local), statistics.median(mpi)
        cols = [local, mpi] + ([mpi2] if also else [])
        rounds = " ".join("/".join(f"{c[i]:.0f}" for c in cols) for i in range(a.rounds))
        line = f"{P:>8} {l:>22.0f} {m:>15.0f} {m / l:>17.2f}x"
        if also:
            line += f" {statistics.median(mpi2) / l:>29.2f}x"
        print(f"{line}   {rounds}")


if __name__ == "__main__":
    main()
