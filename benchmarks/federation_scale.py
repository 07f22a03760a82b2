"""Many hospitals on one machine: round time and peak memory as the federation grows at a fixed cohort.

Each row is one ``python -m fedray`` on the synthetic EHR data with the MLP:
K hospitals (``fl.num_hospitals``) of about ``--records-per-hospital``
records each (so a hospital's turn costs the same at every K), m sampled per
round (``fl.clients_per_round``: Poisson, q = m/K), on the default hospital
actors (2 on a 2-core laptop), non-private unless overridden, audit off. The
hospitals are virtual (:mod:`fedray.federation.residency`): their state lives
with the driver's proxy and their shards in Ray's object store, so a round's
cost should follow m, not K, and memory should grow only by the shards.

Columns: the median ``round_seconds`` over rounds 2..R (round 1 also waits for
the actors' imports), the whole process's wall time, and the peak over time of
the summed resident memory (VmRSS) of the run's process tree: the CLI, Ray's
GCS and raylet, the driver and hospital actors (shared pages such as the
object store count once per process that maps them, so this overstates).
The ratio columns compare each row with the first. Quote ratios from one run:
this machine is noisy.

    python benchmarks/federation_scale.py                       # K = 50, 200, 1000 at m = 10, 10 rounds
    python benchmarks/federation_scale.py --hospitals 1000 --clients-per-round 20 --rounds 20
    python benchmarks/federation_scale.py -- privacy=dpfedavg privacy.epsilon=10   # extra fedray overrides
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

from _common import REPO_ROOT, markdown_table


def tree_rss_bytes(root: int) -> int:
    """The summed VmRSS of ``root`` and all its descendants, read from /proc (Linux)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def one_run(hospitals: int, args, extra: list[str], out: Path) -> dict:
    run_dir = out / f"k{hospitals}-{time.monotonic_ns()}"
    overrides = ["data=ehr_synthetic", "model=mlp", "fl.partition.scheme=iid", "audit.enabled=false",
                 f"data.num_records={hospitals * args.records_per_hospital}", f"fl.num_hospitals={hospitals}",
                 f"fl.clients_per_round={args.clients_per_round}", f"fl.rounds={args.rounds}", "fl.local_epochs=1",
                 *extra, f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "fedray", *overrides], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss_bytes(proc.pid))
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"K={hospitals} failed:\n{output[-3000:]}")
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    per_round = rounds.groupby("round")["round_seconds"].first()
    steady = per_round[per_round.index > 1]
    return {"hospitals": hospitals, "round_seconds": float(steady.median()), "wall_seconds": wall,
            "peak_rss_gb": peak[0] / 2**30, "rounds": int(per_round.index.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hospitals", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--clients-per-round", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--records-per-hospital", type=int, default=40)
    args, extra = parser.parse_known_args()
    extra = [e for e in extra if e != "--"]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [one_run(k, args, extra, Path(tmp)) for k in args.hospitals]
    first = rows[0]
    print(f"EHR MLP, m = {args.clients_per_round} per round, {args.rounds} rounds, "
          f"{args.records_per_hospital} records per hospital, overrides: {' '.join(extra) or 'none'}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(markdown_table(
        ["K hospitals", "round (s, median of 2..R)", "x first", "whole run (s)", "peak RSS (GB)", "x first"],
        [[r["hospitals"], f"{r['round_seconds']:.3f}", f"{r['round_seconds'] / first['round_seconds']:.2f}",
          f"{r['wall_seconds']:.1f}", f"{r['peak_rss_gb']:.2f}", f"{r['peak_rss_gb'] / first['peak_rss_gb']:.2f}"]
         for r in rows]))


if __name__ == "__main__":
    main()
