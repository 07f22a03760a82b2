"""A single ``python -m fedray`` end to end: its whole wall time against its rounds, per cluster kind.

Runs the default config (5 hospitals, small_cnn on the synthetic images, 5
rounds, audit on) as a user types it, ``--repeats`` times per way of running
it (the default: a local Ray started by the run, the driver in its actor and
the five hospitals sharing as many actors as the machine has CPUs; the same
with one actor per hospital, ``fl.actors=5``; ``cluster=inprocess``: no Ray,
the parties one after another in the CLI's process), alternating them so
that the machine's load hits all alike.
Each run's ``summary.json`` holds ``wall_seconds`` (the process's start to its
results) and ``timing`` (its phases, :mod:`fedray.results.timing`); the
process's own wall time, interpreter start and exit included, is measured
here around it.

Prints one row per kind: the median over the repeats of the process wall
time, the summary's wall time and each phase, and the ratio of the wall time
to the rounds' own time. Quote ratios from one run: this machine is noisy.

    python benchmarks/single_run.py [--repeats 3] [overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, markdown_table

KINDS = {"default (local Ray, hospitals share the CPUs' count of actors)": [],
         "local Ray, one actor per hospital (fl.actors=5)": ["fl.actors=5"],
         "cluster=inprocess": ["cluster=inprocess"]}
PHASES = ("startup", "setup", "rounds", "audit", "wrap_up")


def one_run(kind: str, overrides: list[str], out: Path) -> dict:
    """One ``python -m fedray`` with ``overrides``: its process wall time, ``wall_seconds`` and phases."""
    run_dir = out / f"run-{time.monotonic_ns()}"
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fedray", *overrides, f"hydra.run.dir={run_dir}"],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    process_seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-2000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"process": process_seconds, "wall": summary["wall_seconds"], **summary["timing"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args, overrides = parser.parse_known_args()
    runs: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for kind in KINDS:
                runs[kind].append(one_run(kind, [*KINDS[kind], *overrides], Path(tmp)))
                print(f"repeat {repeat + 1}/{args.repeats} {kind}: {runs[kind][-1]['process']:.1f} s "
                      f"(load average {os.getloadavg()[0]:.2f})", flush=True)
    rows = []
    for kind, measured in runs.items():
        median = {key: statistics.median(run.get(key, 0.0) for run in measured) for key in ("process", "wall", *PHASES)}
        rows.append([kind, f"{median['process']:.1f}", f"{median['wall']:.1f}",
                     *(f"{median[p]:.1f}" for p in PHASES), f"{median['wall'] / median['rounds']:.1f}x"])
    print(markdown_table(["run", "process s", "wall_seconds", *(f"{p} s" for p in PHASES), "wall / rounds"], rows))


if __name__ == "__main__":
    main()
