"""What the privacy audit costs a single run: the default ``python -m fedray`` with the audit off, with the
driver's round view only, and with the step-level view (the default), each with and without DP-SGD.

Each configuration runs ``--repeats`` times, taking turns (so the machine's
load hits all alike); one row per configuration gives the medians of the
process's wall time, the summary's ``wall_seconds`` and its phases
(:mod:`fedray.results.timing`), and the wall time against the same
mechanism's run without the audit. The audit's own costs are the reference
models and attacks (phase ``audit``), the canaries in every step
(``rounds``) and building the canaries (``setup``). Quote ratios from one
run: this machine is noisy.

    python benchmarks/audit_cost.py [--repeats 3] [overrides ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from _common import markdown_table
from single_run import PHASES, one_run

AUDITS = {"no audit": ["audit.enabled=false"], "round view": ["audit.observer=round"],
          "step view (default)": ["audit.observer=step"]}
MECHANISMS = {"non-private": [], "DP-SGD, epsilon=10": ["privacy=dpsgd", "privacy.epsilon=10"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args, overrides = parser.parse_known_args()
    configs = {(mechanism, audit): [*MECHANISMS[mechanism], *AUDITS[audit], *overrides]
               for mechanism in MECHANISMS for audit in AUDITS}
    runs: dict[tuple, list[dict]] = {key: [] for key in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for key, config in configs.items():
                runs[key].append(one_run(" / ".join(key), config, Path(tmp)))
                print(f"repeat {repeat + 1}/{args.repeats} {' / '.join(key)}: {runs[key][-1]['wall']:.1f} s "
                      f"(load average {os.getloadavg()[0]:.2f})", flush=True)
    medians = {key: {k: statistics.median(run.get(k, 0.0) for run in measured) for k in ("process", "wall", *PHASES)}
               for key, measured in runs.items()}
    rows = [[mechanism, audit, f"{m['process']:.1f}", f"{m['wall']:.1f}", *(f"{m[p]:.1f}" for p in PHASES),
             f"{m['wall'] / medians[(mechanism, 'no audit')]['wall']:.2f}x"]
            for (mechanism, audit), m in medians.items()]
    print(markdown_table(["mechanism", "audit", "process s", "wall_seconds", *(f"{p} s" for p in PHASES),
                          "wall / no audit"], rows))


if __name__ == "__main__":
    main()
