"""Fixed cost per experiment: where a fedray experiment's seconds go outside its rounds.

Runs ``--experiments`` (default 12, the laptop sweep's grid) 5-hospital
small_cnn experiments on the synthetic images, all on one shared
``ray.init``, each as a Tune trial of the laptop sweep runs it:
``compose_config`` → ``prepare_experiment`` → ``run_experiment`` →
``fedray.results.write_run`` (``--preset sweep-trial``, the default:
``+sweep=privacy_tradeoff``, the grid's learning rates × ε in order, audit
on), or as plain ``python -m fedray`` does (``--preset cli``). ``--audit-off-runs`` more experiments repeat the first one
with ``audit.enabled=false``.

Per experiment:

- wall: compose + prepare + run_experiment + write_run (Ray start is once per
  process and reported on its own);
- rounds: the sum of ``round_seconds`` in ``result.rounds``;
- fixed cost = wall − rounds (the issue's definition).

The fixed cost is broken down with ``time.perf_counter`` around the calls
(this script wraps, for timing only, the module-level functions that
``fedray.federation.experiment`` and its wrap-up call: ``deal_data``, ``plan_privacy``,
``audit_inputs``, ``audit_summary``, ``summarise``, …; nothing in fedray is changed) and, inside
the actors, with Ray's task timeline (``ray.timeline()``: each actor
creation (``Host.__init__``: only when the pool has no fitting actors), each
party's set-up (``Host.start``: the driver and hospitals of this experiment)
and the auditor (``Host.run``). Experiments run one after another in this
process share its actor pool (:mod:`fedray.federation.pool`), as the
experiments of a reused Tune trial actor do: the first one creates the
actors, the later ones reuse them.

Also measured, once: how long a fresh Python process takes to import torch,
torchvision, opacus, ray and the modules an actor process imports
(``fedray.federation.hospital``, ``.driver``), which packages that time goes
to (``python -X importtime``) and which fedray module pulls each one in; how
long ``ray.init`` takes; and how long 6 Ray actors (5 hospitals + driver) take
to start when they import nothing, torch only, or ``fedray.federation.hospital``.

The machine this was written on has 2 shared cores: quote ratios; the load
average is printed next to every experiment.

    python benchmarks/fixed_cost.py                          # the 12 sweep-trial experiments + 1 audit-off
    python benchmarks/fixed_cost.py --preset cli --experiments 2 --json fixed_cost.json
"""

from __future__ import annotations

import argparse
import datetime
import functools
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, markdown_table, run_and_report

# The laptop sweep's grid (conf/sweep/privacy_tradeoff.yaml), in Tune's order, cycled over the experiments
SWEEP_GRID = [(lr, eps) for lr in ["0.02", "0.05", "0.1"] for eps in ["0.1", "1.0", "10.0", "inf"]]
IMPORT_MODULES = ["torch", "torchvision", "opacus", "ray", "fedray.federation.hospital", "fedray.federation.driver",
                  "fedray.federation.experiment", "fedray.results"]
# Packages whose first import is worth tracing back to the fedray module that asks for it.
HEAVY_PACKAGES = ["torch", "torchvision", "ray", "opacus", "sklearn", "scipy", "pandas", "pyarrow", "matplotlib",
                  "diffprivlib", "dp_accounting", "sympy", "cryptography", "PIL", "numpy", "yaml", "omegaconf", "hydra"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--experiments", type=int, default=12, help="experiments with the audit on")
    p.add_argument("--audit-off-runs", type=int, default=1,
                   help="extra experiments repeating the first one with audit.enabled=false")
    p.add_argument("--preset", choices=["sweep-trial", "cli"], default="sweep-trial",
                   help="sweep-trial: a trial of +sweep=privacy_tradeoff (DP-SGD, 5 rounds x 2 local epochs, batch "
                        "16, its lr x eps grid in order); cli: `python -m fedray` defaults (non-private)")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="a further Hydra override for every experiment (repeatable)")
    p.add_argument("--import-repeats", type=int, default=2,
                   help="fresh processes per module for the import times (0: skip imports)")
    p.add_argument("--no-actor-baselines", action="store_true",
                   help="skip starting 6 bare / torch / fedray actors after ray.init")
    p.add_argument("--no-constructor-profile", action="store_true",
                   help="skip the cProfile of one Hospital constructor run in this process")
    p.add_argument("--python", default=sys.executable, help="interpreter for the fresh-process import times")
    p.add_argument("--keep-runs", action="store_true", help="keep the run directories written by write_run")
    p.add_argument("--json", default=None, help="also write everything measured to this JSON file")
    return p.parse_args(argv)


def load() -> float:
    return os.getloadavg()[0]


def experiment_overrides(args, index: int, *, audit: bool) -> list[str]:
    if args.preset == "sweep-trial":
        lr, eps = SWEEP_GRID[index % len(SWEEP_GRID)]
        base = ["sweep=privacy_tradeoff", "model=small_cnn", f"train.lr={lr}", f"privacy.epsilon={eps}"]
    else:
        base = []
    return [*base, "data=synthetic", "fl.num_hospitals=5", f"audit.enabled={str(audit).lower()}", *args.extra]


# -- fresh-process imports ------------------------------------------------------------------------------------

def import_seconds(python: str, module: str) -> tuple[float, float]:
    """(seconds inside ``import module``, the whole process's wall seconds) in a fresh interpreter."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    t0 = time.perf_counter()
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    return float(out.stdout.strip().splitlines()[-1]), time.perf_counter() - t0


def bare_python_seconds(python: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([python, "-c", "pass"], check=True, cwd=REPO_ROOT)
    return time.perf_counter() - t0


def measure_imports(args) -> dict:
    rows = []
    bare = [bare_python_seconds(args.python) for _ in range(args.import_repeats)]
    for module in IMPORT_MODULES:
        inside, wall, loads = [], [], []
        for _ in range(args.import_repeats):
            loads.append(load())
            i, w = import_seconds(args.python, module)
            inside.append(i)
            wall.append(w)
        rows.append({"module": module, "import_min": min(inside), "import_median": statistics.median(inside),
                     "process_wall_min": min(wall), "load": statistics.mean(loads)})
        print(f"  import {module}: {min(inside):.2f} s (min of {args.import_repeats})", file=sys.stderr, flush=True)
    return {"bare_python_min": min(bare), "modules": rows, "importtime": importtime_profile(args.python)}


_IMPORTTIME = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


def importtime_profile(python: str, module: str = "fedray.federation.hospital") -> dict:
    """``python -X importtime -c 'import module'``: self time per top-level package, and who imports what first."""
    out = subprocess.run([python, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True,
                         cwd=REPO_ROOT, check=True)
    entries = []  # (self s, cumulative s, depth, name) in the order Python prints them (children before parents)
    for line in out.stderr.splitlines():
        m = _IMPORTTIME.match(line)
        if m:
            entries.append((int(m.group(1)) / 1e6, int(m.group(2)) / 1e6, len(m.group(3)), m.group(4)))
    total = sum(e[0] for e in entries)
    by_package: dict[str, float] = {}
    for self_s, _, _, name in entries:
        by_package[name.split(".")[0]] = by_package.get(name.split(".")[0], 0.0) + self_s
    first = []
    for package in HEAVY_PACKAGES:
        idx = next((i for i, e in enumerate(entries) if e[3] == package), None)
        if idx is None:
            continue
        chain, depth = [], entries[idx][2]
        for e in entries[idx + 1:]:  # a parent is printed after its children, one level up
            if e[2] < depth:
                depth = e[2]
                if e[3].startswith("fedray"):
                    chain.append(e[3])
        first.append({"package": package, "cumulative": entries[idx][1], "self_total": by_package.get(package, 0.0),
                      "first_imported_by": " → ".join(reversed(chain)) or "(directly)"})
    return {"module": module, "total_self": total,
            "by_package": sorted(by_package.items(), key=lambda kv: -kv[1])[:12], "first_import": first}


# -- timing hooks (wrappers only; behaviour unchanged) -------------------------------------------------------

class Marks:
    """Timestamps and summed durations of the wrapped calls, reset per experiment."""

    def __init__(self):
        self.first_prep = None
        self.reset()

    def reset(self):
        self.seconds: dict[str, float] = {}
        self.first_start: dict[str, float] = {}
        self.last_end: dict[str, float] = {}
        self.rounds_back: list[float] = []

    def wrap(self, module, name: str, key: str | None = None) -> bool:
        fn = getattr(module, name, None)
        if fn is None or getattr(fn, "_fixed_cost_wrapped", False):
            return fn is not None
        key = key or name

        @functools.wraps(fn)
        def timed(*a, **kw):
            t0 = time.perf_counter()
            self.first_start.setdefault(key, t0)
            try:
                return fn(*a, **kw)
            finally:
                t1 = time.perf_counter()
                self.seconds[key] = self.seconds.get(key, 0.0) + t1 - t0
                self.last_end[key] = t1

        timed._fixed_cost_wrapped = True
        setattr(module, name, timed)
        return True


def install_hooks(marks: Marks) -> list[str]:
    """Wrap what ``run_experiment`` / ``prepare_experiment`` / ``write_run`` call; return the names not found."""
    import fedray.audit.auditor as auditor
    import fedray.federation.experiment as experiment
    import fedray.federation.wrap_up as wrap_up
    import fedray.results.run_dir as run_dir

    missing = []
    for module, names in ((experiment, ["check_mechanism", "deal_data", "plan_records", "plan_privacy",
                                        "validate_model", "plan_insertions", "hospital_setups"]),
                          (wrap_up, ["summarise"]),
                          (auditor, ["audit_inputs", "audit_summary"]),  # the wrap-up imports them when it audits
                          (run_dir, ["save_state_dicts", "plot_learning_curve", "rounds_frame"])):
        for name in names:
            if not marks.wrap(module, name):
                missing.append(f"{module.__name__}.{name}")
    return missing


# -- Ray: start, bare actors, timeline ---------------------------------------------------------------------

def actor_baselines(num_cpus: float, count: int = 6) -> dict:
    """Seconds until ``count`` fresh actors have all answered: importing nothing, torch, the hospital module."""
    import ray

    def make(imports: str):
        @ray.remote(num_cpus=num_cpus)
        class Probe:
            def __init__(self):
                if imports:
                    __import__(imports)

            def ready(self):
                return os.getpid()
        return Probe

    out = {}
    for label, imports in [("bare", ""), ("import torch", "torch"),
                           ("import fedray.federation.hospital", "fedray.federation.hospital")]:
        t0 = time.perf_counter()
        actors = [make(imports).remote() for _ in range(count)]
        ray.get([a.ready.remote() for a in actors])
        out[label] = time.perf_counter() - t0
        for a in actors:
            ray.kill(a)
        time.sleep(1.0)  # let the killed workers exit before the next batch
        print(f"  {count} actors, {label}: {out[label]:.1f} s", file=sys.stderr, flush=True)
    return out


def timeline_window(start_epoch: float, end_epoch: float) -> dict:
    """Actor constructors and the auditor task that ran in [start, end] (epoch seconds), from Ray's timeline."""
    import ray

    time.sleep(2.0)  # task events reach the GCS about once a second
    try:
        events = ray.timeline()
    except Exception as err:  # noqa: BLE001 - the breakdown just loses its in-actor rows
        return {"error": f"{type(err).__name__}: {err}"}
    spans: dict[str, list[tuple[float, float]]] = {}
    for e in events:
        if e.get("ph") != "X" or not str(e.get("cat", "")).startswith("task::"):
            continue
        ts = e["ts"] / 1e6
        if not (start_epoch - 1 <= ts <= end_epoch + 1):
            continue
        name = e["cat"].removeprefix("task::")
        spans.setdefault(name, []).append((ts, ts + e.get("dur", 0) / 1e6))
    return {k: sorted(v) for k, v in spans.items()}


def profile_hospital_constructor(prep, top: int = 14) -> dict:
    """cProfile of one ``Hospital.__init__`` in this process (modules already imported), built from
    ``hospital_setups`` as a pooled actor builds hospital 0: what a party's set-up costs besides imports."""
    import cProfile
    import pstats

    try:
        from fedray.federation.experiment import actor_resources, hospital_setups
        from fedray.federation.hospital import Hospital
        from fedray.federation.residency import hospital_kwargs

        _, hospital_res = actor_resources(prep.cfg.resources, gpus_present=False)
        kwargs = hospital_kwargs(hospital_setups(prep, hospital_res)[0])
    except Exception as err:  # noqa: BLE001 - fedray's internals moved: skip this table
        return {"error": f"{type(err).__name__}: {err}"}
    profiler = cProfile.Profile()
    before = set(sys.modules)
    t0 = time.perf_counter()
    profiler.enable()
    Hospital(**kwargs)
    profiler.disable()
    total = time.perf_counter() - t0
    imported: dict[str, int] = {}
    for name in set(sys.modules) - before:
        head = ".".join(name.split(".")[:2])
        imported[head] = imported.get(head, 0) + 1
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, func), (_, _, _, cumtime, _) in sorted(stats.stats.items(), key=lambda kv: -kv[1][3]):
        if filename == "~" or filename.startswith("<frozen") or cumtime < 0.02 * total:
            continue
        where = filename.split("site-packages/")[-1].replace(str(REPO_ROOT) + "/", "")
        rows.append({"function": f"{func} ({where}:{line})", "cumulative": cumtime})
        if len(rows) == top:
            break
    return {"seconds": total, "top": rows, "privacy": prep.cfg.privacy.name,
            "first_imported_inside": sorted(imported.items(), key=lambda kv: -kv[1])}


# -- one experiment -------------------------------------------------------------------------------------------

def run_one(args, index: int, audit: bool, marks: Marks, tmp: Path, clock_offset: float) -> dict:
    from fedray.config import compose_config
    from fedray.federation.experiment import prepare_experiment, run_experiment
    from fedray.results import write_run

    overrides = experiment_overrides(args, index, audit=audit)
    run_dir = tmp / f"run{index}{'' if audit else '-audit-off'}"
    marks.reset()
    load_start = load()
    t0 = time.perf_counter()
    cfg = compose_config(overrides, run_dir=run_dir)
    t1 = time.perf_counter()
    prep = prepare_experiment(cfg)
    t2 = time.perf_counter()
    if index == 0 and audit and marks.first_prep is None:
        marks.first_prep = prep  # profiled at the end (profile_hospital_constructor)
    result = run_experiment(cfg, prepared=prep, on_round=lambda record: marks.rounds_back.append(time.perf_counter()))
    t3 = time.perf_counter()
    write_run(run_dir, resolved_cfg=prep.cfg, rounds=result.rounds, summary=result.summary,
              models=(result.final_params, result.best_params))
    t4 = time.perf_counter()
    load_end = load()
    spans = timeline_window(t2 + clock_offset, t3 + clock_offset)

    rounds = [r["round_seconds"] for r in result.rounds]
    round1_start = marks.rounds_back[0] - rounds[0]
    last_round_back = marks.rounds_back[-1]
    s = marks.seconds
    row = {
        "index": index, "audit": audit, "overrides": overrides,
        "epsilon": result.summary.privacy["epsilon"], "load_start": load_start, "load_end": load_end,
        "wall": t4 - t0, "rounds": sum(rounds), "round_seconds": rounds, "fixed": (t4 - t0) - sum(rounds),
        "compose": t1 - t0, "prepare": t2 - t1,
        "prepare_parts": {k: s.get(k) for k in ["check_mechanism", "deal_data", "plan_records", "plan_privacy",
                                                "validate_model", "plan_insertions"]},
        "run_experiment": t3 - t2,
        "setups_call": s.get("hospital_setups"),  # the shard puts
        "startup_to_round1": round1_start - t2,
        "after_rounds": (marks.first_start.get("audit_inputs", t3) if audit else
                         marks.first_start.get("summarise", t3)) - last_round_back,
        "audit_seconds": (marks.last_end["audit_summary"] - marks.first_start["audit_inputs"])
        if audit and "audit_inputs" in marks.first_start and "audit_summary" in marks.last_end else None,
        "write_run": t4 - t3,
        "write_parts": {k: s.get(k) for k in ["save_state_dicts", "plot_learning_curve", "rounds_frame"]},
        "final_test_accuracy": result.summary.final_test.get("accuracy"),
    }
    row["tail"] = t3 - max(marks.last_end.get("audit_summary", 0.0), last_round_back)  # summary, return
    # Inside the actors (Ray timeline, epoch seconds → this process's perf_counter)
    if "error" not in spans:
        to_local = lambda ts: ts - clock_offset  # noqa: E731
        created = spans.get("Host.__init__", [])
        setups = spans.get("Host.start", [])
        row["actors_created"] = len(created)
        if setups:
            row["party_setup"] = [e - b for b, e in setups]
            row["parties_ready"] = to_local(max(e for _, e in setups)) - t2
        auditor = spans.get("Host.run", [])
        if auditor:
            row["auditor_task"] = sum(e - b for b, e in auditor)
            if "audit_inputs" in marks.last_end:
                row["auditor_wait_before_task"] = to_local(auditor[0][0]) - marks.last_end["audit_inputs"]
    else:
        row["timeline_error"] = spans["error"]
    print(f"  experiment {index} (audit {'on' if audit else 'off'}, eps {row['epsilon']}): wall {row['wall']:.1f} s, "
          f"rounds {row['rounds']:.1f} s, fixed {row['fixed']:.1f} s, load {load_start:.1f}→{load_end:.1f}",
          file=sys.stderr, flush=True)
    if not args.keep_runs:
        import shutil
        shutil.rmtree(run_dir, ignore_errors=True)
    return row


def run(args) -> dict:
    started = datetime.datetime.now().astimezone()
    out = {"command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]), "date": started.isoformat(
        timespec="seconds"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "load_at_start": os.getloadavg()}
    if args.import_repeats > 0:
        print("fresh-process imports ...", file=sys.stderr, flush=True)
        out["imports"] = measure_imports(args)

    t0 = time.perf_counter()
    import ray

    import fedray.federation.experiment  # noqa: F401
    import fedray.results  # noqa: F401
    from fedray.config import compose_config
    from fedray.federation.cluster import connect
    out["imports_in_this_process"] = time.perf_counter() - t0

    marks = Marks()
    out["hooks_missing"] = install_hooks(marks)
    tmp = Path(tempfile.mkdtemp(prefix="fedray-fixed-cost-"))
    cfg0 = compose_config(experiment_overrides(args, 0, audit=True), run_dir=tmp / "probe")
    t0 = time.perf_counter()
    started_ray = connect(cfg0.cluster)
    out["ray_init"] = time.perf_counter() - t0
    out["load_after_ray_init"] = load()
    clock_offset = time.time() - time.perf_counter()
    try:
        if not args.no_actor_baselines:
            print("actor start-up baselines ...", file=sys.stderr, flush=True)
            out["actor_baselines"] = actor_baselines(float(cfg0.resources.hospital.num_cpus))
        rows = []
        for i in range(args.experiments):
            rows.append(run_one(args, i, True, marks, tmp, clock_offset))
        for j in range(args.audit_off_runs):
            rows.append(run_one(args, 0, False, marks, tmp, clock_offset) | {"index": f"{j}-off"})
        out["experiments"] = rows
        if not args.no_constructor_profile:
            prep = marks.first_prep
            if prep is None:  # no audit-on experiment ran: prepare experiment 0's config
                from fedray.federation.experiment import prepare_experiment
                prep = prepare_experiment(compose_config(experiment_overrides(args, 0, audit=True),
                                                         run_dir=tmp / "prof"))
            print("profiling one Hospital constructor in this process ...", file=sys.stderr, flush=True)
            out["hospital_constructor_profile"] = profile_hospital_constructor(prep)
    finally:
        if started_ray:
            ray.shutdown()
    out["load_at_end"] = os.getloadavg()
    if not args.keep_runs:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# -- tables ------------------------------------------------------------------------------------------------

def _med(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(values) if values else float("nan")


def render(res: dict) -> str:
    parts = [f"command: `{res['command']}`",
             f"date: {res['date']}; {res['machine']}; load average (1/5/15 min) at start "
             f"{'/'.join(f'{x:.1f}' for x in res['load_at_start'])}, at end "
             f"{'/'.join(f'{x:.1f}' for x in res['load_at_end'])}"]
    if "imports" in res:
        imp = res["imports"]
        rows = [[m["module"], m["import_min"], m["import_median"], m["process_wall_min"], m["load"]]
                for m in imp["modules"]]
        rows.append(["(bare `python -c pass`, whole process)", "", "", imp["bare_python_min"], ""])
        parts.append("Fresh-process imports (each module alone in a new interpreter; min and median of the repeats)\n\n"
                     + markdown_table(["import", "seconds (min)", "seconds (median)", "process wall (min)",
                                       "load avg"], rows))
        it = imp["importtime"]
        parts.append(f"`python -X importtime -c 'import {it['module']}'`: {it['total_self']:.2f} s of module code in "
                     "all; the packages that take it (self time summed per top-level package), and which fedray "
                     "module first pulls each heavy one in (cumulative: that first import with everything it "
                     "loads that was not loaded yet)\n\n"
                     + markdown_table(["package", "self seconds", "share"],
                                      [[k, v, v / it["total_self"]] for k, v in it["by_package"]])
                     + "\n\n"
                     + markdown_table(["package", "first import, cumulative s", "first imported by"],
                                      [[f["package"], f["cumulative"], f["first_imported_by"]]
                                       for f in it["first_import"]]))
    ray_rows = [["`ray.init` (once per process)", res["ray_init"]],
                ["imports of fedray.federation.experiment + fedray.results in this process (once)",
                 res["imports_in_this_process"]]]
    for label, secs in (res.get("actor_baselines") or {}).items():
        ray_rows.append([f"6 Ray actors ready, constructor: {label}", secs])
    parts.append("Once per process\n\n" + markdown_table(["what", "seconds"], ray_rows))

    exps = res["experiments"]
    per = [[e["index"], "on" if e["audit"] else "off", e["epsilon"], e["wall"], e["rounds"], e["fixed"],
            e["fixed"] / e["wall"], e.get("actors_created"), f"{e['load_start']:.1f}→{e['load_end']:.1f}"]
           for e in exps]
    on = [e for e in exps if e["audit"]]
    mean_fixed = statistics.mean(e["fixed"] for e in on) if on else float("nan")
    parts.append("Per experiment (wall = compose + prepare + run_experiment + write_run; rounds = Σ round_seconds; "
                 "fixed = wall − rounds)\n\n"
                 + markdown_table(["exp", "audit", "ε", "wall s", "rounds s", "fixed s", "fixed / wall",
                                   "actors created", "load avg"], per)
                 + f"\n\n**Mean fixed cost over the {len(on)} audit-on experiments: {mean_fixed:.2f} s** "
                 "(the first creates the pooled actors, the others reuse them)")
    off = [e for e in exps if not e["audit"]]
    fixed = _med([e["fixed"] for e in on])

    def row(label, key=None, values=None):
        vals = values if values is not None else [e.get(key) for e in on]
        m = _med(vals)
        return [label, m, m / fixed if fixed and not math.isnan(m) else float("nan")]

    part = lambda group, name: [(e.get(group) or {}).get(name) for e in on]  # noqa: E731
    br = [
        row("fixed cost (wall − Σ round_seconds)", "fixed"),
        row("compose_config (Hydra)", "compose"),
        row("prepare_experiment", "prepare"),
        row("  of which deal_data (generate/decode, split, partition, whitening)", values=part("prepare_parts", "deal_data")),
        row("  of which plan_privacy (noise calibration)", values=part("prepare_parts", "plan_privacy")),
        row("  of which validate_model (one model built here)", values=part("prepare_parts", "validate_model")),
        row("  of which plan_records + plan_insertions (audit plan)",
            values=[(a or 0) + (b or 0) for a, b in zip(part("prepare_parts", "plan_records"),
                                                         part("prepare_parts", "plan_insertions"))]),
        row("actor start-up until round 1 starts (driver ready)", "startup_to_round1"),
        row("  of which hospital_setups (shard puts)", "setups_call"),
        row("  parties' set-up in their actors (Host.start, median)",
            values=[_med(e.get("party_setup") or []) for e in on]),
        row("  all parties ready (from run_experiment start)", "parties_ready"),
        row("after the last round: final params, privacy states, release the parties", "after_rounds"),
        row("audit (audit_inputs → audit_summary)", "audit_seconds"),
        row("  of which: submission → auditor starts in the driver's actor",
            "auditor_wait_before_task"),
        row("  of which: the auditor task (reference models, attacks)", "auditor_task"),
        row("summary (run_experiment's tail)", "tail"),
        row("write_run", "write_run"),
        row("  of which learning-curve PNG", values=part("write_parts", "plot_learning_curve")),
        row("  of which model state dicts", values=part("write_parts", "save_state_dicts")),
    ]
    if off:
        br.append(["fixed cost with audit.enabled=false (same config as exp 0)", _med([e["fixed"] for e in off]),
                   _med([e["fixed"] for e in off]) / fixed])
    parts.append(f"Where the fixed cost goes (medians over the {len(on)} audit-on experiments; share of their median "
                 "fixed cost; the rows are measured separately, so they need not add up exactly)\n\n"
                 + markdown_table(["phase", "seconds", "share of fixed cost"], br))
    prof = res.get("hospital_constructor_profile")
    if prof and "error" in prof:
        parts.append(f"Hospital constructor profile skipped: {prof['error']}")
    elif prof:
        parts.append(f"One `Hospital.__init__` (privacy={prof['privacy']}, experiment 0's config) run in this process "
                     f"under cProfile, its modules already imported: {prof['seconds']:.2f} s; the functions with "
                     "the largest cumulative time\n\n"
                     + markdown_table(["function", "cumulative s"], [[r["function"], r["cumulative"]]
                                                                      for r in prof["top"]])
                     + "\n\nmodules first imported inside the constructor (modules per package): "
                     + (", ".join(f"{k} ({v})" for k, v in prof["first_imported_inside"][:10]) or "none"))
    if res.get("hooks_missing"):
        parts.append("note: not found (rows left empty): " + ", ".join(res["hooks_missing"]))
    return "\n\n".join(parts)


def main(argv=None) -> None:
    run_and_report(parse_args, run, render, argv)


if __name__ == "__main__":
    main()
