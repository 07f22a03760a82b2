"""The floor of any simulation whose parties are Ray actors on this machine: a whole run that does no work.

``flower_comparison.py`` times two simulators whose parties live in Ray actors
(fedray's default ``cluster=local``, Flower's ``run_simulation``). Both pay, before
their first round and after their last, for Ray and for every process that will
train importing torch. This script times that much alone, as a whole process
(interpreter start to exit, measured from outside), so that a ratio between
two whole runs can be read against what neither can avoid:

1. ``import torch, ray`` in the main process (a simulator needs both);
2. ``ray.init`` as fedray's ``cluster=local`` calls it (a fresh local instance,
   ``include_dashboard=False``, the CPUs of the machine);
3. ``--actors`` actors (default 2: one per core, fedray's hospital actors and
   Flower's client pool on 2 cores), each importing torch and
   ``torch._dynamo`` (which every ``torch.optim`` optimizer imports at its
   first step), answering one call; ``--driver-actor`` adds one more that
   imports torch only (fedray's driver; Flower's server runs in the main
   process);
4. ``ray.shutdown`` and the interpreter's exit.

No data, no model, no round. Phases come from the inner process's clock;
``--python`` runs the same inner process in another interpreter (e.g. Flower's
venv, with its own Ray), which needs torch and Ray only.

    python benchmarks/ray_floor.py --repeats 3
    python benchmarks/ray_floor.py --repeats 3 --driver-actor
    python benchmarks/ray_floor.py --repeats 3 --python ../flower-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PHASES = ("import torch, ray", "ray.init", "actors started (torch, torch._dynamo)", "ray.shutdown",
          "interpreter start and exit")


def inner(actors: int, driver_actor: bool) -> None:
    """The run that does nothing; prints one JSON line of phase boundaries (seconds since this process began)."""
    t0 = time.perf_counter()
    import logging

    import ray
    import torch  # noqa: F401

    marks = {"imports": time.perf_counter() - t0}
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR)
    marks["init"] = time.perf_counter() - t0

    @ray.remote(num_cpus=0)
    class Party:
        def __init__(self, modules):
            import importlib

            for module in modules:
                importlib.import_module(module)

        def ping(self):
            return True

    parties = [Party.remote(("torch", "torch._dynamo")) for _ in range(actors)]
    parties += [Party.remote(("torch",))] if driver_actor else []
    ray.get([party.ping.remote() for party in parties])
    marks["actors"] = time.perf_counter() - t0
    ray.shutdown()
    marks["shutdown"] = time.perf_counter() - t0
    print("RAY_FLOOR " + json.dumps({**marks, "ray": ray.__version__}), flush=True)


def outer(args) -> dict:
    runs = []
    cmd = [args.python, str(Path(__file__).resolve()), "--inner", "--actors", str(args.actors),
           *(["--driver-actor"] if args.driver_actor else [])]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    for i in range(args.repeats):
        load = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"run {i} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        marks = next(json.loads(line.removeprefix("RAY_FLOOR ")) for line in proc.stdout.splitlines()
                     if line.startswith("RAY_FLOOR "))
        runs.append({"wall": wall, "load_start": load, **marks})
        print(f"  run {i}: wall {wall:.1f} s (load {load:.1f})", file=sys.stderr, flush=True)
    return {"command": " ".join([sys.executable, *sys.argv]), "python": args.python, "actors": args.actors,
            "driver_actor": args.driver_actor, "cores": os.cpu_count(), "runs": runs}


def render(out: dict) -> str:
    from _common import markdown_table, median

    def phase(run: dict) -> list[float]:
        return [run["imports"], run["init"] - run["imports"], run["actors"] - run["init"],
                run["shutdown"] - run["actors"], run["wall"] - run["shutdown"]]

    per_run = [phase(run) for run in out["runs"]]
    rows = [[name, f"{median([p[k] for p in per_run]):.2f}"] for k, name in enumerate(PHASES)]
    rows.append(["**whole process (wall)**", f"**{median([run['wall'] for run in out['runs']]):.2f}**"])
    parties = f"{out['actors']} training actor(s)" + (" + a driver actor" if out["driver_actor"] else "")
    walls = ", ".join(f"{run['wall']:.1f}" for run in out["runs"])
    return (f"Ray {out['runs'][0]['ray']} ({out['python']}), {out['cores']} cores, {parties}; medians of "
            f"{len(out['runs'])} runs (walls {walls} s; load "
            f"{min(r['load_start'] for r in out['runs']):.1f}–{max(r['load_start'] for r in out['runs']):.1f})\n\n"
            + markdown_table(["phase", "seconds"], rows))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--actors", type=int, default=2, help="actors that will train (import torch and torch._dynamo)")
    p.add_argument("--driver-actor", action="store_true", help="one more actor importing torch (fedray's driver)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--python", default=sys.executable, help="the interpreter of the runs (it needs torch and ray)")
    p.add_argument("--json", default=None, help="also write everything measured to this JSON file")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.inner:
        inner(args.actors, args.driver_actor)
        return
    out = outer(args)
    print(render(out))
    if args.json:
        from _common import save_json

        save_json(args.json, out)


if __name__ == "__main__":
    main()
