"""fedray against Flower's simulation, side by side on the same workload: whole-run wall time and time per round.

The workload (issue 11): MobileNetV3-small from scratch at 64 px on the ISIC
images (``Train/<class>/*.jpg``, 9 classes), 70/10/20 split, 5 hospitals
dealt ``equal_per_class``, 4 rounds of FedAvg, 1 local epoch, batch 32, SGD
lr 0.05 momentum 0.9, flips, colour ZCA; non-private, no audit; every round
evaluates the global model on the whole validation and test sets and each
hospital on its own validation shard.

- **fedray**: ``python -m fedray data=isic model=mobilenet_v3_small ... audit.enabled=false``
  in a subprocess (this interpreter), ``cluster=local``: 5 hospital actors of
  0.25 CPU each and a driver actor, one torch thread each. By default it is
  launched through ``_fedray_cli_timed.py``, which runs the same
  ``fedray.__main__.main()`` with a clock on its phases (imports, Hydra,
  prepare, ``ray.init``, ``run_experiment``, ``write_run``, ``ray.shutdown``);
  ``--plain-cli`` runs ``python -m fedray`` itself.
- **Flower**: ``benchmarks/_flower_side.py`` in a subprocess of a *separate*
  interpreter that has ``flwr[simulation]`` (``--flower-python``; fedray's own
  environment never needs Flower): ``flwr.simulation.run_simulation`` with 5
  supernodes, ``FedAvg`` (message API), client resources ``--flower-client-cpus``
  (0.4 CPU: Flower sizes its actor pool as CPUs / num_cpus, so 0.4 on 2 cores
  gives 5 client actors, as fedray has 5 hospital actors), one torch thread each.

Each side's **wall time** is its whole process, start to exit, measured here:
interpreter start, imports, decoding the images, Ray start, actors, the
rounds, writing results (fedray: run directory with Parquet, PNG, models;
Flower: nothing), shutdown. **Rounds** come from each side's own clock:
fedray's ``round_seconds`` (``rounds.parquet``), Flower's from the strategy's
``configure_train`` to the end of the server-side evaluation of that round.
Both sides' round 1 also waits for client actors still starting (fedray's
hospitals, Flower's pool), so the steady-state figure is the median of rounds
2..R.

With ``--repeats k`` the two sides alternate which goes first.

    python benchmarks/flower_comparison.py --data-root ../shared/data/isic-skin-cancer-9
    python benchmarks/flower_comparison.py --data-root $ISIC_DIR --repeats 2 --json flower.json

Setting up the Flower interpreter (once; kept out of fedray's install and CI):

    python3 -m venv ../flower-venv
    ../flower-venv/bin/pip install 'flwr[simulation]==1.42.0' torch==2.14.1 torchvision==0.29.1 pillow
    # or, in a virtualenv of its own: pip install -e '.[flower]'
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, add_workload_arguments, markdown_table, run_and_report

HERE = Path(__file__).resolve().parent
DEFAULT_FLOWER_PYTHON = os.environ.get("FLOWER_PYTHON", str(REPO_ROOT.parent / "flower-venv" / "bin" / "python"))
DEFAULT_DATA_ROOT = os.environ.get("ISIC_DIR", str(REPO_ROOT.parent / "shared" / "data" / "isic-skin-cancer-9"))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_workload_arguments(p, data_root_default=DEFAULT_DATA_ROOT)
    p.add_argument("--flower-python", default=DEFAULT_FLOWER_PYTHON,
                   help="interpreter with flwr[simulation], torch, torchvision, pillow (env FLOWER_PYTHON)")
    p.add_argument("--flower-client-cpus", type=float, default=0.4,
                   help="Flower client_resources num_cpus (0.4 on 2 cores: a pool of 5 client actors)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each side; the order alternates")
    p.add_argument("--plain-cli", action="store_true",
                   help="run `python -m fedray` itself, without _fedray_cli_timed.py's clock on its phases")
    p.add_argument("--skip-fedray", action="store_true")
    p.add_argument("--skip-flower", action="store_true")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="a further Hydra override for the fedray side (repeatable)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds before a side's process is stopped")
    p.add_argument("--json", default=None, help="also write everything measured to this JSON file")
    return p.parse_args(argv)


def load() -> float:
    return os.getloadavg()[0]


def run_process(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> tuple[float, int]:
    """(wall seconds from start to exit, return code); stdout and stderr go to ``log``."""
    with open(log, "w") as out:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, timeout=timeout,
                                  env=env)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = 124
        return time.perf_counter() - t0, code


def tail(path: Path, lines: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def fedray_side(args, tmp: Path, index: int) -> dict:
    run_dir = tmp / f"fedray-run{index}"
    launcher = ["-m", "fedray"] if args.plain_cli else [str(HERE / "_fedray_cli_timed.py")]
    cmd = [sys.executable, *launcher, "data=isic", f"data.root={args.data_root}",
           f"data.image_size={args.image_size}", "model=mobilenet_v3_small", "model.pretrained=false", "strategy=fedavg",
           "privacy=none", "audit.enabled=false", f"fl.num_hospitals={args.hospitals}", f"fl.rounds={args.rounds}",
           f"fl.local_epochs={args.local_epochs}", f"train.batch_size={args.batch_size}", f"train.lr={args.lr}",
           *args.extra, f"hydra.run.dir={run_dir}"]
    log = tmp / f"fedray-run{index}.log"
    load_start = load()
    print(f"  fedray run {index}: {' '.join(shlex.quote(c) for c in cmd[1:])}", file=sys.stderr, flush=True)
    wall, code = run_process(cmd, log, args.timeout)
    out = {"side": "fedray", "command": cmd, "wall": wall, "returncode": code, "load_start": load_start,
           "load_end": load()}
    if code != 0:
        out["error"] = tail(log)
        return out
    import pandas as pd

    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("FEDRAY_PHASES "):
            out["phases"] = json.loads(line.removeprefix("FEDRAY_PHASES "))
    summary = json.loads((run_dir / "summary.json").read_text())
    frame = pd.read_parquet(run_dir / "rounds.parquet")
    per_round = frame.groupby("round")["round_seconds"].first().sort_index()
    out.update({
        "round_seconds": [float(v) for v in per_round.values],
        "run_experiment_seconds": summary["wall_seconds"],
        "train_sizes": summary["data"]["hospital_train_sizes"],
        "splits": {k: summary["data"][k] for k in ("train", "val", "test")},
        "final_test_accuracy": summary["final_test"]["accuracy"],
        "final_test_balanced_accuracy": summary["final_test"]["balanced_accuracy"],
    })
    return out


def flower_side(args, tmp: Path, index: int) -> dict:
    cmd = [args.flower_python, str(HERE / "_flower_side.py"), "--data-root", args.data_root,
           "--image-size", str(args.image_size), "--hospitals", str(args.hospitals), "--rounds", str(args.rounds),
           "--local-epochs", str(args.local_epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
           "--client-cpus", str(args.flower_client_cpus), "--out", str(tmp / f"flower-run{index}.json")]
    log = tmp / f"flower-run{index}.log"
    load_start = load()
    print(f"  Flower run {index}: {' '.join(shlex.quote(c) for c in cmd)}", file=sys.stderr, flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    wall, code = run_process(cmd, log, args.timeout, env=env)
    out = {"side": "flower", "command": cmd, "wall": wall, "returncode": code, "load_start": load_start,
           "load_end": load()}
    result_file = tmp / f"flower-run{index}.json"
    if code != 0 or not result_file.exists():
        out["error"] = tail(log)
        return out
    res = json.loads(result_file.read_text())
    out.update({
        "round_seconds": [r["round_seconds"] for r in res["rounds"]],
        "run_simulation_seconds": res["run_simulation_seconds"], "imports_seconds": res["imports_seconds"],
        "data_seconds": res["data_seconds"], "train_sizes": res["train_sizes"], "splits": res["splits"],
        "final_test_accuracy": res["final"].get("test_accuracy"), "flwr": res["flwr"],
        "simulation_start_to_round1": res["simulation_start_to_round1"], "after_last_round": res["after_last_round"],
        "client_resources": res["client_resources"],
    })
    return out


def flower_available(args) -> str | None:
    """None when the Flower interpreter can import flwr, else why not."""
    if not Path(args.flower_python).exists():
        return f"{args.flower_python} does not exist"
    probe = subprocess.run([args.flower_python, "-c", "import flwr, torch, torchvision, PIL; print(flwr.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"{args.flower_python} cannot import flwr/torch/torchvision/PIL ({probe.stderr.strip().splitlines()[-1:]})"
    return None


def run(args) -> dict:
    if not (Path(args.data_root) / "Train").is_dir():
        raise SystemExit(f"--data-root {args.data_root} has no Train/ folder (the ISIC images, Train/<class>/*.jpg)")
    out = {"command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
           "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_at_start": os.getloadavg(),
           "workload": {k: getattr(args, k) for k in ("image_size", "hospitals", "rounds", "local_epochs",
                                                      "batch_size", "lr")}, "runs": []}
    flower_missing = None if args.skip_flower else flower_available(args)
    if flower_missing:
        out["flower_skipped"] = flower_missing
        print(f"Flower side skipped: {flower_missing}. Create it with: python3 -m venv ../flower-venv && "
              "../flower-venv/bin/pip install 'flwr[simulation]==1.42.0' torch==2.14.1 torchvision==0.29.1 "
              "pillow (or pass --flower-python)", file=sys.stderr, flush=True)
    sides = [s for s, skip in (("fedray", args.skip_fedray), ("flower", args.skip_flower or flower_missing))
             if not skip]
    with tempfile.TemporaryDirectory(prefix="fedray-vs-flower-") as folder:
        tmp = Path(folder)
        for i in range(args.repeats):
            for side in (sides if i % 2 == 0 else list(reversed(sides))):
                res = (fedray_side if side == "fedray" else flower_side)(args, tmp, i)
                if "error" in res:
                    print(f"{side} run {i} failed (exit {res['returncode']}):\n{res['error']}", file=sys.stderr)
                else:
                    print(f"  {side} run {i}: wall {res['wall']:.1f} s, rounds {sum(res['round_seconds']):.1f} s, "
                          f"load {res['load_start']:.1f}→{res['load_end']:.1f}", file=sys.stderr, flush=True)
                out["runs"].append(res)
    out["load_at_end"] = os.getloadavg()
    return out


def _stats(runs: list[dict]) -> dict | None:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return None
    med = statistics.median
    return {
        "runs": len(ok),
        "wall": med([r["wall"] for r in ok]),
        "rounds": med([sum(r["round_seconds"]) for r in ok]),
        "round1": med([r["round_seconds"][0] for r in ok]),
        "steady": med([med(r["round_seconds"][1:]) for r in ok if len(r["round_seconds"]) > 1] or [float("nan")]),
        "fixed": med([r["wall"] - sum(r["round_seconds"]) for r in ok]),
        "overhead": med([r["wall"] - len(r["round_seconds"]) * med(r["round_seconds"][1:] or r["round_seconds"])
                         for r in ok]),
        "train_sizes": ok[0]["train_sizes"], "splits": ok[0]["splits"],
        "accuracy": med([r["final_test_accuracy"] for r in ok]),
        "load": f"{min(r['load_start'] for r in ok):.1f}–{max(r['load_end'] for r in ok):.1f}",
    }


def _span(phases: dict, key: str, edge: int | None = None) -> float:
    """Duration of phase ``key`` (its first call), or its start (edge 0) / end (edge 1); nan when not timed."""
    if key not in phases:
        return float("nan")
    start, end = phases[key][0]
    return end - start if edge is None else (start, end)[edge]


def fedray_phases(run: dict) -> dict[str, float]:
    p, rounds = run.get("phases", {}), sum(run["round_seconds"])
    rexp = _span(p, "run_experiment")
    return {
        "interpreter start + import fedray.__main__ (hydra, fedray.config)": _span(p, "import fedray.__main__", 1),
        "imports run_single needs (ray, fedray.federation.*, fedray.results: torch, opacus, sklearn, ...)":
            _span(p, "imports of run_single"),
        "config checks + Hydra compose (twice: pre-check and @hydra.main)":
            _span(p, "run_single", 0) - _span(p, "imports of run_single", 1),
        "prepare_experiment (decode the JPEGs, split, deal, ZCA)": _span(p, "prepare_experiment"),
        "ray.init": _span(p, "ray.init (connect)"),
        "run_experiment outside rounds (actor start-up, teardown)": rexp - rounds,
        "rounds (Σ round_seconds)": rounds,
        "write_run (config, models, Parquet, PNG)": _span(p, "write_run"),
        "ray.shutdown": _span(p, "ray.shutdown"),
        "after run_single: Hydra, atexit handlers, interpreter exit": run["wall"] - _span(p, "run_single", 1),
    }


def flower_phases(run: dict) -> dict[str, float]:
    rounds = run["round_seconds"]
    sim = run["run_simulation_seconds"]
    return {
        "imports (torch, torchvision, flwr)": run["imports_seconds"],
        "decode the JPEGs, split, deal, ZCA, write shards": run["data_seconds"],
        "run_simulation: until the strategy's round 1 starts (ServerApp thread)":
            run.get("simulation_start_to_round1", float("nan")),
        "run_simulation: round 1 (includes ray.init and the client actors' start-up, in parallel)": rounds[0],
        "run_simulation: rounds 2..R": sum(rounds[1:]),
        "run_simulation: after the last round (actors stopped, Ray shut down)": run.get("after_last_round", float("nan")),
        "rest: interpreter start and exit": run["wall"] - run["imports_seconds"] - run["data_seconds"] - sim,
    }


def phase_table(runs: list[dict], phases) -> str:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return ""
    per = [phases(r) for r in ok]
    wall = statistics.median([r["wall"] for r in ok])
    rows = []
    for key in per[0]:
        m = statistics.median([p[key] for p in per])
        rows.append([key, m, m / wall])
    rows.append(["whole run (wall)", wall, 1.0])
    return markdown_table(["phase (median over runs)", "seconds", "share of wall"], rows)


def render(res: dict) -> str:
    head = [f"command: `{res['command']}`",
            f"date: {res['date']}; {res['machine']}; load average (1/5/15 min) at start "
            f"{'/'.join(f'{x:.1f}' for x in res['load_at_start'])}, at end "
            f"{'/'.join(f'{x:.1f}' for x in res['load_at_end'])}",
            "workload: MobileNetV3-small from scratch, ISIC at {image_size} px, {hospitals} hospitals, {rounds} rounds, "
            "{local_epochs} local epoch(s), batch {batch_size}, SGD lr {lr}, FedAvg, non-private, no audit"
            .format(**res["workload"])]
    if res.get("flower_skipped"):
        head.append(f"Flower side skipped: {res['flower_skipped']}")
    f = _stats([r for r in res["runs"] if r["side"] == "fedray"])
    w = _stats([r for r in res["runs"] if r["side"] == "flower"])
    failed = [f"{r['side']} run failed (exit {r['returncode']})" for r in res["runs"] if "error" in r]
    if failed:
        head.append("; ".join(failed))

    def cell(s, key):
        return "n/a" if s is None else s[key]

    def ratio(key):
        if f is None or w is None or not w[key]:
            return "n/a"
        return f[key] / w[key]

    rows = [
        ["whole run, process start → exit (s)", cell(f, "wall"), cell(w, "wall"), ratio("wall")],
        ["time inside rounds, Σ (s)", cell(f, "rounds"), cell(w, "rounds"), ratio("rounds")],
        ["round 1, incl. waiting for client actors still starting (s)", cell(f, "round1"), cell(w, "round1"),
         ratio("round1")],
        ["steady round: median of rounds 2..R (s)", cell(f, "steady"), cell(w, "steady"), ratio("steady")],
        ["fixed cost: wall − Σ rounds (s)", cell(f, "fixed"), cell(w, "fixed"), ratio("fixed")],
        ["wall − R × steady round: start-up and teardown wherever counted (s)", cell(f, "overhead"),
         cell(w, "overhead"), ratio("overhead")],
        ["hospital training shards", cell(f, "train_sizes"), cell(w, "train_sizes"), ""],
        ["train / val / test", *("n/a" if s is None else "{train} / {val} / {test}".format(**s["splits"])
                                 for s in (f, w)), ""],
        ["final test accuracy (sanity)", cell(f, "accuracy"), cell(w, "accuracy"), ""],
        ["runs (median over)", cell(f, "runs"), cell(w, "runs"), ""],
        ["load average during its runs", cell(f, "load"), cell(w, "load"), ""],
    ]
    table = markdown_table(["measure", "fedray", "Flower " + next((r["flwr"] for r in res["runs"]
                                                                   if r["side"] == "flower" and "flwr" in r), ""),
                            "fedray / Flower"], rows)
    per_run = markdown_table(
        ["run", "side", "wall s", "rounds s", "per round s", "inside the process"],
        [[i, r["side"], r["wall"], sum(r.get("round_seconds", [])) if "error" not in r else "failed",
          ", ".join(f"{x:.1f}" for x in r.get("round_seconds", [])),
          (f"run_experiment {r['run_experiment_seconds']:.1f} s" if r["side"] == "fedray" else
           f"imports {r['imports_seconds']:.1f} s, decode+split {r['data_seconds']:.1f} s, run_simulation "
           f"{r['run_simulation_seconds']:.1f} s") if "error" not in r else ""]
         for i, r in enumerate(res["runs"])])
    parts = ["\n".join(head), table, "Each run (in the order they ran)\n\n" + per_run]
    fedray_runs = [r for r in res["runs"] if r["side"] == "fedray" and "phases" in r]
    if fedray_runs:
        parts.append("Where fedray's wall goes (CLI phases, from _fedray_cli_timed.py)\n\n"
                     + phase_table(fedray_runs, fedray_phases))
    flower_runs = [r for r in res["runs"] if r["side"] == "flower"]
    if any("error" not in r for r in flower_runs):
        parts.append("Where Flower's wall goes\n\n" + phase_table(flower_runs, flower_phases))
    return "\n\n".join(parts)


def main(argv=None) -> None:
    run_and_report(parse_args, run, render, argv)


if __name__ == "__main__":
    main()
