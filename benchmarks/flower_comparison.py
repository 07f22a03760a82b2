"""fedray against Flower's simulation, side by side on the same workload: whole-run wall time and time per round.

Three workloads (``--workload``):

- ``isic-mobilenet`` (the default; issue 11): MobileNetV3-small from scratch at
  64 px on the ISIC images (``Train/<class>/*.jpg``, 9 classes), 70/10/20 split,
  5 hospitals dealt ``equal_per_class``, 4 rounds of FedAvg, 1 local epoch,
  batch 32, SGD lr 0.05 momentum 0.9, flips, colour ZCA; every hospital every
  round. The Flower side decodes and deals the images itself, with the same
  steps.
- ``ehr-mlp`` (many virtual clients): fedray's ``data=ehr_synthetic model=mlp``
  (4,000 generated patient records, 12 columns scaled to their public ranges;
  an MLP 12-64-32-2), K = 100 hospitals dealt ``iid``, m = 10 per round, 10
  rounds, 2 local epochs, batch 32, SGD lr 0.05 momentum 0.9.
- ``images-small-cnn`` (many virtual clients): fedray's ``data=synthetic
  model=small_cnn`` (the generated tinted-stripe images, 32 px, 4 classes,
  ``--samples-per-class 1000``: 4,000 images, so that each of the 100 hospitals
  holds validation records too), K = 100 ``iid``, m = 10 per round, the same
  budget, flips and colour ZCA.

All three are non-private with no audit, and every round evaluates the global
model on the whole validation and test sets and, on each of the round's
hospitals, on that hospital's own validation shard (fedray's participants do
without DP, so as many of Flower's nodes do too; ``--flower-client-eval none``
drops it there alone).
For the many-client workloads this script first runs fedray's own data code in
this interpreter (compose the same overrides, ``deal_data``, ``fit_input_map``,
and fedray's model builder under ``torch.manual_seed(seed)``) and writes the
dealt shards, the held-out sets, the input map and the initial weights to a
temporary folder that the Flower side reads (``_flower_side.py --dealt``); the
Flower interpreter never needs fedray. After the fedray run the script checks
that fedray dealt the same shard sizes it exported.

One difference remains in the many-client workloads: fedray samples the round's
hospitals by Poisson sampling (each independently with probability q = m/K, the
sampler its client-level DP accountant analyses, so a round trains Bin(100, 0.1)
hospitals: 10 on average), Flower's FedAvg a fixed m = 10 (``fraction_train =
m/K``). The expected work per round is the same; the per-round counts are in the
JSON (``train_nodes`` on Flower's side).

- **fedray**: ``python -m fedray <the workload's overrides> audit.enabled=false``
  in a subprocess (this interpreter), ``cluster=local``: the hospitals share
  ``fl.actors`` hospital actors (``--fedray-actors``; fedray's default on a
  CPU-only machine is one per core, 2 on a 2-core laptop) and a driver actor,
  one torch thread each. By default it is launched through
  ``_fedray_cli_timed.py``, which runs the same ``fedray.__main__.main()`` with a
  clock on its phases (imports, Hydra, prepare, ``ray.init``,
  ``run_experiment``, ``write_run``, ``ray.shutdown``); ``--plain-cli`` runs
  ``python -m fedray`` itself.
- **Flower**: ``benchmarks/_flower_side.py`` in a subprocess of a *separate*
  interpreter that has ``flwr[simulation]`` (``--flower-python``; fedray's own
  environment never needs Flower): ``flwr.simulation.run_simulation`` with K
  supernodes, ``FedAvg`` (message API; ``fraction_train = m/K``,
  ``fraction_evaluate = m/K``), client resources ``--flower-client-cpus`` (Flower
  sizes its actor pool as CPUs / num_cpus: the ISIC default 0.4 gives 5 client
  actors on 2 cores, one per hospital; the many-client default 1.0 gives one per
  core, as fedray's ``fl.actors`` default does), one torch thread each.

Each side's **wall time** is its whole process, start to exit, measured here:
interpreter start, imports, loading (ISIC: decoding) or generating the data,
Ray start, actors, the rounds, writing results (fedray: run directory with
Parquet, PNG, models; Flower: nothing), shutdown. The export for the
many-client workloads happens before either side starts and is in neither's
wall time; the Flower side then reads the dealt shards where fedray generates
and deals them inside its wall (the table prints how long ``deal_data`` took in
the export: milliseconds for the table, seconds for the images). **Rounds**
come from each side's own clock: fedray's ``round_seconds`` (``rounds.parquet``),
Flower's from the strategy's ``configure_train`` to the end of the server-side
evaluation of that round. Both sides' round 1 also waits for client actors
still starting (fedray's hospitals, Flower's pool), so the steady-state figure
is the median of rounds 2..R.

With ``--repeats k`` the two sides alternate which goes first.

    python benchmarks/flower_comparison.py --data-root ../shared/data/isic-skin-cancer-9
    python benchmarks/flower_comparison.py --data-root $ISIC_DIR --repeats 2 --json flower.json
    python benchmarks/flower_comparison.py --workload ehr-mlp --repeats 2 --json flower_ehr.json
    python benchmarks/flower_comparison.py --workload images-small-cnn --repeats 2 --json flower_images.json

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


# Each workload's defaults for the shared flags; a flag given on the command line wins.
WORKLOADS = {
    "isic-mobilenet": {
        "defaults": {"hospitals": 5, "clients_per_round": None, "rounds": 4, "local_epochs": 1, "batch_size": 32,
                     "lr": 0.05, "image_size": 64, "flower_client_cpus": 0.4},
        "describe": "MobileNetV3-small from scratch, ISIC at {image_size} px, {hospitals} hospitals "
                    "(equal_per_class), every hospital every round",
    },
    "ehr-mlp": {
        "defaults": {"hospitals": 100, "clients_per_round": 10, "rounds": 10, "local_epochs": 2, "batch_size": 32,
                     "lr": 0.05, "image_size": None, "flower_client_cpus": 1.0},
        "describe": "MLP on the generated EHR table (data=ehr_synthetic model=mlp), K = {hospitals} hospitals (iid), "
                    "m = {clients_per_round} a round (fedray: Poisson, q = m/K; Flower: a fixed m)",
    },
    "images-small-cnn": {
        "defaults": {"hospitals": 100, "clients_per_round": 10, "rounds": 10, "local_epochs": 2, "batch_size": 32,
                     "lr": 0.05, "image_size": 32, "samples_per_class": 1000, "flower_client_cpus": 1.0},
        "describe": "small_cnn on the generated images (data=synthetic model=small_cnn) at {image_size} px, "
                    "{samples_per_class} a class, K = {hospitals} hospitals (iid), m = {clients_per_round} a round "
                    "(fedray: Poisson, q = m/K; Flower: a fixed m)",
    },
}
DEALT = ("ehr-mlp", "images-small-cnn")  # the workloads whose data this script exports from fedray's own deal


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--workload", choices=tuple(WORKLOADS), default="isic-mobilenet",
                   help="what both sides run (see the module docstring); it sets the defaults of the budget flags "
                        "below (shown: isic-mobilenet's; ehr-mlp and images-small-cnn: --hospitals 100 "
                        "--clients-per-round 10 --rounds 10 --local-epochs 2 --flower-client-cpus 1.0)")
    add_workload_arguments(p, data_root_default=DEFAULT_DATA_ROOT)
    p.add_argument("--clients-per-round", type=int, default=None,
                   help="m: fedray's fl.clients_per_round (Poisson, q = m/K), Flower's fixed m "
                        "(default: every hospital)")
    p.add_argument("--samples-per-class", type=int, default=None,
                   help="images-small-cnn: data.samples_per_class (1000)")
    p.add_argument("--fedray-actors", type=int, default=None,
                   help="fedray's fl.actors (default: fedray's own, one per core on a CPU-only machine)")
    p.add_argument("--flower-python", default=DEFAULT_FLOWER_PYTHON,
                   help="interpreter with flwr[simulation], torch, torchvision, pillow (env FLOWER_PYTHON)")
    p.add_argument("--flower-client-cpus", type=float, default=None,
                   help="Flower client_resources num_cpus (its actor pool is CPUs / this): 0.4 for isic-mobilenet "
                        "(5 client actors on 2 cores), 1.0 for the many-client workloads (one per core)")
    p.add_argument("--flower-client-eval", choices=("round", "all", "none"), default="round",
                   help="which of Flower's nodes evaluate on their validation shards every round: as many as train "
                        "(round: as fedray's hospitals do, the round's participants), all, or none (Flower does "
                        "less work than fedray)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each side; the order alternates")
    p.add_argument("--plain-cli", action="store_true",
                   help="run `python -m fedray` itself, without _fedray_cli_timed.py's clock on its phases")
    p.add_argument("--skip-fedray", action="store_true")
    p.add_argument("--skip-flower", action="store_true")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="a further Hydra override for the fedray side (repeatable; the many-client workloads' "
                        "exported data follow it too)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds before a side's process is stopped")
    p.add_argument("--json", default=None, help="also write everything measured to this JSON file")
    chosen, _ = p.parse_known_args(argv)
    p.set_defaults(**{"samples_per_class": None, **WORKLOADS[chosen.workload]["defaults"]})
    args = p.parse_args(argv)
    if args.workload in DEALT and args.flower_client_eval == "none":
        print("note: --flower-client-eval none: Flower's nodes skip the per-hospital evaluation fedray's hospitals "
              "still do", file=sys.stderr)
    return args


def fedray_overrides(args) -> list[str]:
    """The workload as Hydra overrides of ``python -m fedray`` (without the run directory)."""
    budget = [f"fl.num_hospitals={args.hospitals}", f"fl.rounds={args.rounds}", f"fl.local_epochs={args.local_epochs}",
              f"train.batch_size={args.batch_size}", f"train.lr={args.lr}"]
    if args.clients_per_round is not None:
        budget.append(f"fl.clients_per_round={args.clients_per_round}")
    if args.fedray_actors is not None:
        budget.append(f"fl.actors={args.fedray_actors}")
    common = ["strategy=fedavg", "privacy=none", "audit.enabled=false"]
    if args.workload == "isic-mobilenet":
        data = ["data=isic", f"data.root={args.data_root}", f"data.image_size={args.image_size}",
                "model=mobilenet_v3_small", "model.pretrained=false"]
    elif args.workload == "ehr-mlp":
        data = ["data=ehr_synthetic", "model=mlp", "fl.partition.scheme=iid"]
    else:
        data = ["data=synthetic", f"data.image_size={args.image_size}",
                f"data.samples_per_class={args.samples_per_class}", "model=small_cnn", "fl.partition.scheme=iid"]
    return [*data, *common, *budget, *args.extra]


def export_dealt(args, folder: Path) -> dict:
    """Deal the workload with fedray's own code, in this interpreter, and write what the Flower side reads.

    ``folder`` gets, for each hospital k, ``train_x_k.npy``, ``train_y_k.npy``,
    ``val_x_k.npy``, ``val_y_k.npy`` (raw inputs: uint8 images or float32 rows);
    the held-out ``val_x/val_y/test_x/test_y.npy``; ``init_params.npz`` (the
    initial weights of fedray's model builder under ``torch.manual_seed(seed)``,
    as fedray's driver builds its first global model); and ``meta.json`` (model,
    input map, classes, shard sizes). Returns the meta.
    """
    import numpy as np
    import torch
    from _common import compose
    from fedray.data.deal import deal_data
    from fedray.data.feature_scaling import FeatureScaling
    from fedray.models import build_model, build_table_model, model_family
    from fedray.privacy.preprocessing import fit_input_map

    cfg = compose(fedray_overrides(args), run_dir=folder)
    deal_data(cfg, fit_input_map=lambda shards: fit_input_map(cfg, shards))  # its first imports (sklearn, scipy)
    start = time.perf_counter()
    dealt = deal_data(cfg, fit_input_map=lambda shards: fit_input_map(cfg, shards))
    deal_seconds = time.perf_counter() - start  # the data work alone, as a second call pays it
    train = dealt.splits.train
    num_classes, kind = len(train.class_names), train.kind
    num_features = int(train.inputs.shape[1]) if kind == "table" else None
    folder.mkdir(parents=True, exist_ok=True)

    def save(name: str, array) -> None:
        np.save(folder / f"{name}.npy", np.ascontiguousarray(np.asarray(array)))

    for k, (t, v) in enumerate(zip(dealt.train_shards, dealt.val_shards)):
        for part, records in (("train", t), ("val", v)):
            save(f"{part}_x_{k}", records.inputs)
            save(f"{part}_y_{k}", records.labels)
    for part in ("val", "test"):
        records = getattr(dealt.splits, part)
        save(f"{part}_x", records.inputs)
        save(f"{part}_y", records.labels)
    mapping = dealt.input_map
    if isinstance(mapping, FeatureScaling):
        input_map = {"kind": "feature_scaling", "low": mapping.ranges[:, 0].tolist(),
                     "high": mapping.ranges[:, 1].tolist()}
    else:
        input_map = {"kind": "whitening", "method": mapping.method, "mean": mapping.mean.tolist(),
                     "matrix": mapping.matrix.tolist()}
    torch.manual_seed(cfg.seed)
    if model_family(cfg.model.name) == "table":
        model = build_table_model(cfg.model, num_classes=num_classes, num_features=num_features)
        spec = {"name": cfg.model.name, "hidden": [int(h) for h in cfg.model.hidden]}
    else:
        model = build_model(cfg.model, num_classes=num_classes, image_size=cfg.data.image_size)
        spec = {"name": cfg.model.name}
    np.savez(folder / "init_params.npz", **{name: t.detach().cpu().numpy() for name, t in model.state_dict().items()})
    meta = {"workload": args.workload, "kind": kind, "model": spec, "num_classes": num_classes,
            "num_features": num_features, "hospitals": len(dealt.train_shards), "augment": cfg.data.augment,
            "input_map": input_map, "train_sizes": [len(s) for s in dealt.train_shards],
            "val_sizes": [len(s) for s in dealt.val_shards],
            "splits": {split: len(getattr(dealt.splits, split)) for split in ("train", "val", "test")},
            "parameters": int(sum(t.numel() for t in model.parameters())), "source": dealt.splits.source,
            "deal_seconds": deal_seconds}
    (folder / "meta.json").write_text(json.dumps(meta))
    return meta


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
    cmd = [sys.executable, *launcher, *fedray_overrides(args), f"hydra.run.dir={run_dir}"]
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
        "train_nodes": _fedray_participants(frame, per_round.index),
        "splits": {k: summary["data"][k] for k in ("train", "val", "test")},
        "final_test_accuracy": summary["final_test"]["accuracy"],
        "final_test_balanced_accuracy": summary["final_test"]["balanced_accuracy"],
    })
    return out


def _fedray_participants(frame, rounds) -> list[int] | None:
    """How many hospitals trained in each round (their training rows in ``rounds.parquet``), or None if not there."""
    if not {"scope", "split", "hospital"} <= set(frame.columns):
        return None
    trained = frame[(frame["scope"] == "hospital") & (frame["split"] == "train")]
    counts = trained.groupby("round")["hospital"].nunique()
    return [int(counts.get(r, 0)) for r in rounds]


def flower_side(args, tmp: Path, index: int, dealt: Path | None) -> dict:
    if dealt is not None:
        data = ["--dealt", str(dealt)]
    else:
        data = ["--data-root", args.data_root, "--image-size", str(args.image_size), "--hospitals", str(args.hospitals)]
    cmd = [args.flower_python, str(HERE / "_flower_side.py"), *data, "--rounds", str(args.rounds),
           "--local-epochs", str(args.local_epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
           "--client-cpus", str(args.flower_client_cpus), "--client-eval", args.flower_client_eval,
           "--out", str(tmp / f"flower-run{index}.json")]
    if args.clients_per_round is not None:
        cmd += ["--clients-per-round", str(args.clients_per_round)]
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
        "train_nodes": [r.get("train_nodes") for r in res["rounds"]],
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
    if args.workload == "isic-mobilenet" and not (Path(args.data_root) / "Train").is_dir():
        raise SystemExit(f"--data-root {args.data_root} has no Train/ folder (the ISIC images, Train/<class>/*.jpg)")
    workload = {k: getattr(args, k) for k in ("image_size", "hospitals", "clients_per_round", "rounds",
                                              "local_epochs", "batch_size", "lr", "samples_per_class")}
    out = {"command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
           "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_at_start": os.getloadavg(),
           "workload_name": args.workload, "workload": workload, "fedray_overrides": fedray_overrides(args),
           "flower_client_cpus": args.flower_client_cpus, "flower_client_eval": args.flower_client_eval,
           "runs": []}
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
        dealt = None
        if args.workload in DEALT and "flower" in sides:
            dealt = tmp / "dealt"
            t0 = time.perf_counter()
            meta = export_dealt(args, dealt)
            out["export"] = {"seconds": time.perf_counter() - t0, **{k: meta[k] for k in (
                "train_sizes", "val_sizes", "splits", "parameters", "source", "input_map", "deal_seconds")}}
            print(f"  exported fedray's deal for Flower: {meta['source']}; {len(meta['train_sizes'])} hospitals, "
                  f"{_sizes(meta['train_sizes'])} training records; {meta['parameters']} parameters "
                  f"({out['export']['seconds']:.1f} s)", file=sys.stderr, flush=True)
        for i in range(args.repeats):
            for side in (sides if i % 2 == 0 else list(reversed(sides))):
                res = fedray_side(args, tmp, i) if side == "fedray" else flower_side(args, tmp, i, dealt)
                if "error" in res:
                    print(f"{side} run {i} failed (exit {res['returncode']}):\n{res['error']}", file=sys.stderr)
                else:
                    print(f"  {side} run {i}: wall {res['wall']:.1f} s, rounds {sum(res['round_seconds']):.1f} s, "
                          f"load {res['load_start']:.1f}→{res['load_end']:.1f}", file=sys.stderr, flush=True)
                    if side == "fedray" and "export" in out and res["train_sizes"] != out["export"]["train_sizes"]:
                        raise SystemExit("fedray's run dealt other shards than the export the Flower side reads: "
                                         f"{_sizes(res['train_sizes'])} against "
                                         f"{_sizes(out['export']['train_sizes'])}")
                out["runs"].append(res)
    out["load_at_end"] = os.getloadavg()
    return out


def _sizes(sizes: list[int]) -> str:
    """Shard sizes in a few words: the list for a handful, else ``K × lo–hi (sum)``."""
    if len(sizes) <= 8:
        return str(list(sizes))
    lo, hi = min(sizes), max(sizes)
    return f"{len(sizes)} × {lo}{'' if lo == hi else f'–{hi}'} ({sum(sizes)})"


def _stats(runs: list[dict]) -> dict | None:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return None
    med = statistics.median
    loads = [x for r in ok for x in (r["load_start"], r["load_end"])]
    return {
        "runs": len(ok),
        "wall": med([r["wall"] for r in ok]),
        "rounds": med([sum(r["round_seconds"]) for r in ok]),
        "round1": med([r["round_seconds"][0] for r in ok]),
        "steady": med([med(r["round_seconds"][1:]) for r in ok if len(r["round_seconds"]) > 1] or [float("nan")]),
        "fixed": med([r["wall"] - sum(r["round_seconds"]) for r in ok]),
        "overhead": med([r["wall"] - len(r["round_seconds"]) * med(r["round_seconds"][1:] or r["round_seconds"])
                         for r in ok]),
        "train_sizes": _sizes(ok[0]["train_sizes"]), "splits": ok[0]["splits"],
        "clients": _mean_clients(ok),
        "accuracy": med([r["final_test_accuracy"] for r in ok]),
        "load": f"{min(loads):.1f}–{max(loads):.1f}",
    }


def _mean_clients(runs: list[dict]) -> str:
    """Hospitals trained per round, mean over every round of ``runs`` (min–max), or n/a when not recorded."""
    counts = [n for r in runs for n in (r.get("train_nodes") or []) if n is not None]
    if not counts:
        return "n/a"
    return f"{statistics.mean(counts):.1f} ({min(counts)}–{max(counts)})"


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
        "prepare_experiment (load or generate the data, split, deal, input map; ISIC: decode the JPEGs)":
            _span(p, "prepare_experiment"),
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
        "data (ISIC: decode the JPEGs, split, deal, ZCA, write shards; else read fedray's held-out sets)":
            run["data_seconds"],
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
    workload = res["workload"]
    head = [f"command: `{res['command']}`",
            f"date: {res['date']}; {res['machine']}; load average (1/5/15 min) at start "
            f"{'/'.join(f'{x:.1f}' for x in res['load_at_start'])}, at end "
            f"{'/'.join(f'{x:.1f}' for x in res['load_at_end'])}",
            f"workload {res['workload_name']}: " + WORKLOADS[res["workload_name"]]["describe"].format(**workload)
            + ", {rounds} rounds, {local_epochs} local epoch(s), batch {batch_size}, SGD lr {lr}, FedAvg, "
              "non-private, no audit".format(**workload),
            f"Flower: client_resources num_cpus {res['flower_client_cpus']}, client evaluation "
            f"{res['flower_client_eval']}; fedray: `{' '.join(res['fedray_overrides'])}`"]
    if res.get("export"):
        deal = res["export"].get("deal_seconds", float("nan"))
        head.append(f"Flower read fedray's deal, exported before the runs: fedray's deal_data (generate, split, "
                    f"partition, input map; imports warm) took {deal:.1f} s there, work inside fedray's wall time "
                    "that Flower's skips")
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
        ["hospitals trained per round, mean (min–max)", cell(f, "clients"), cell(w, "clients"), ""],
        ["train / val / test", *("n/a" if s is None else "{train} / {val} / {test}".format(**s["splits"])
                                 for s in (f, w)), ""],
        ["final test accuracy (sanity)", cell(f, "accuracy"), cell(w, "accuracy"), ""],
        ["runs (median over)", cell(f, "runs"), cell(w, "runs"), ""],
        ["1-min load average at its runs' starts and ends, min–max", cell(f, "load"), cell(w, "load"), ""],
    ]
    table = markdown_table(["measure", "fedray", "Flower " + next((r["flwr"] for r in res["runs"]
                                                                   if r["side"] == "flower" and "flwr" in r), ""),
                            "fedray / Flower"], rows)
    per_run = markdown_table(
        ["run", "side", "wall s", "rounds s", "per round s", "inside the process"],
        [[i, r["side"], r["wall"], sum(r.get("round_seconds", [])) if "error" not in r else "failed",
          ", ".join(f"{x:.1f}" for x in r.get("round_seconds", [])),
          (f"run_experiment {r['run_experiment_seconds']:.1f} s" if r["side"] == "fedray" else
           f"imports {r['imports_seconds']:.1f} s, data {r['data_seconds']:.1f} s, run_simulation "
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
