"""``python -m fedray +sweep=<name>``: a Ray Tune sweep whose trials are federated experiments.

The sweep directory ``sweeps/<name>/<timestamp>/`` holds ``sweep.json`` (what
was swept), Tune's experiment (``tune/``, unless ``sweep.storage_path`` puts
it on shared storage), each trial's run directory (``trials/<id>/``) and, at
the end, the frontier (``frontier.parquet``, ``rounds.parquet``,
``frontier.png``, ``report.md``).

Everything a trial could reject (data, model, privacy parameters, resources)
is checked here first, so a bad grid fails in one line before any trial runs.
Interrupted sweeps continue with ``sweep.resume=<sweep dir>``: Tune restores
the experiment, finished trials are not rerun, and the frontier has exactly
one row per trial.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from fedray.errors import FedrayError
from fedray.federation.cluster import connect
from fedray.federation.experiment import prepare_experiment, resolve_for_data, validate_model
from fedray.privacy.setup import plan_privacy
from fedray.sweep.frontier import write_frontier
from fedray.sweep.resources import check_trial_fits, trial_bundles
from fedray.sweep.space import apply_params, axis_paths, grid, normalise_space
from fedray.sweep.trial import run_trial

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
MANIFEST = "sweep.json"
PROGRESS_COLUMNS = {"round": "round", "test_accuracy": "test acc", "test_balanced_accuracy": "test bal acc",
                    "epsilon_spent": "eps spent", "round_seconds": "s/round"}
TUNE_NAME = "tune"


def run_sweep(cfg: dict) -> dict:
    # Tune's classic table reporter shows just PROGRESS_COLUMNS (the newer one prints every metric,
    # including the summary JSON); no automatic TensorBoard logger.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    sweep = cfg["sweep"] = {**cfg["sweep"], "space": normalise_space(cfg["sweep"].get("space") or {})}
    paths = axis_paths(sweep, cfg)
    out_dir = Path(sweep["resume"] or sweep["out_dir"]).expanduser().resolve()
    manifest = {"sweep": sweep["name"], "space": _jsonable(sweep["space"]), "paths": paths}
    if sweep.get("resume"):
        _check_resume_dir(out_dir, manifest)
    trial_cfgs = [apply_params(cfg, params, paths, CONF_DIR) for params in grid(sweep)]
    _validate_trials(trial_cfgs)
    started_ray = connect(cfg["cluster"])
    try:
        gpus_present = ray.cluster_resources().get("GPU", 0) > 0
        nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
        for trial_cfg in trial_cfgs:
            check_trial_fits(trial_bundles(trial_cfg, gpus_present=gpus_present), nodes)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
        tuner = _tuner(cfg, paths, out_dir, gpus_present)
        result_grid = tuner.fit()
    finally:
        if started_ray:
            ray.shutdown()
    records = [trial_record(result, list(paths)) for result in result_grid]
    written = write_frontier(out_dir, records, axes=list(paths), sweep_name=sweep["name"],
                             utility=sweep.get("optimized_metric", "test_balanced_accuracy"))
    completed = sum(r["status"] == "completed" for r in records)
    print(f"sweep {sweep['name']}: {completed}/{len(records)} trials completed\nfrontier: {written['frontier']}",
          flush=True)
    return {"out_dir": str(out_dir), "records": records}


def _validate_trials(trial_cfgs: list[dict]) -> None:
    """Load the data once and check every trial's model and privacy settings against it."""
    prepared = prepare_experiment(trial_cfgs[0])
    train = prepared.dealt.splits.train
    sizes = [len(s) for s in prepared.dealt.train_shards]
    for trial_cfg in trial_cfgs:
        trial_cfg = resolve_for_data(trial_cfg, train)
        validate_model(trial_cfg, prepared.num_classes, train.kind)
        same_shards = (trial_cfg["mode"], trial_cfg["fl"]["num_hospitals"]) == \
            (prepared.cfg["mode"], prepared.cfg["fl"]["num_hospitals"])
        if same_shards:  # privacy plans depend on the shard sizes this preparation dealt
            plan_privacy(trial_cfg, shard_sizes=sizes, ranges_public=train.ranges_public)


def _tuner(cfg: dict, paths: dict, out_dir: Path, gpus_present: bool) -> tune.Tuner:
    sweep = cfg["sweep"]
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base_cfg=cfg, paths=paths, conf_dir=str(CONF_DIR), out_dir=str(out_dir)),
        lambda params: tune.PlacementGroupFactory(
            trial_bundles(apply_params(cfg, params, paths, CONF_DIR), gpus_present=gpus_present),
            strategy=sweep.get("placement_strategy", "PACK"),
        ),
    )
    storage = sweep.get("storage_path") or str(out_dir)
    if "://" not in storage:  # s3://, gs://: Tune's own filesystems; otherwise a local or shared path
        storage = str(Path(storage).expanduser().resolve())
    experiment = f"{storage.rstrip('/')}/{TUNE_NAME}"
    if sweep.get("resume"):
        return tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    ranked = bool(sweep.get("scheduler")) or sweep.get("search", "grid") != "grid"
    return tune.Tuner(
        trainable,
        param_space=_param_space(sweep),
        tune_config=tune.TuneConfig(
            num_samples=int(sweep.get("num_samples", 1)),
            search_alg=_search_alg(sweep),
            scheduler=_scheduler(sweep),
            metric=sweep.get("optimized_metric") if ranked else None,
            mode=sweep.get("metric_mode", "max") if ranked else None,
            max_concurrent_trials=sweep.get("max_concurrent_trials"),
        ),
        run_config=tune.RunConfig(
            name=TUNE_NAME, storage_path=storage, failure_config=tune.FailureConfig(max_failures=0), verbose=1,
            progress_reporter=tune.CLIReporter(
                parameter_columns=list(paths), metric_columns=PROGRESS_COLUMNS, max_report_frequency=15),
            # JSON and CSV results only: the final report carries strings TensorBoard cannot log.
            callbacks=[JsonLoggerCallback(), CSVLoggerCallback()],
        ),
    )


def _param_space(sweep: dict) -> dict:
    if sweep.get("search", "grid") == "grid":
        return {axis: tune.grid_search(list(values)) for axis, values in sweep["space"].items()}
    return {axis: tune.choice(list(values)) for axis, values in sweep["space"].items()}


def _search_alg(sweep: dict):
    search = sweep.get("search", "grid")
    if search == "grid":
        return None
    if search == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError:
            raise FedrayError("sweep.search=optuna needs Optuna: pip install optuna") from None
        return OptunaSearch(seed=0)
    raise FedrayError(f"unknown sweep.search {search!r}: use grid or optuna")


def _scheduler(sweep: dict):
    name = sweep.get("scheduler")
    if name is None:
        return None
    if name == "asha":
        return tune.schedulers.ASHAScheduler(time_attr="round", grace_period=1)
    raise FedrayError(f"unknown sweep.scheduler {name!r}: use null (keep every trial) or asha")


def _check_resume_dir(out_dir: Path, manifest: dict) -> None:
    found = out_dir / MANIFEST
    if not found.is_file():
        raise FedrayError(f"sweep.resume={out_dir} holds no fedray sweep ({MANIFEST} missing): pass a sweep directory")
    previous = json.loads(found.read_text())
    if previous.get("sweep") != manifest["sweep"] or previous.get("space") != manifest["space"]:
        raise FedrayError(
            f"sweep.resume={out_dir} holds sweep {previous.get('sweep')!r} with another space: "
            f"resume with the same +sweep and sweep.space it was started with"
        )


def trial_record(result, axes: list[str]) -> dict:
    """A Tune result as the frontier's trial record."""
    metrics = result.metrics or {}
    params = {axis: result.config.get(axis) for axis in axes}
    trial_id = metrics.get("trial_id") or Path(result.path).name
    if result.error is not None or "summary_json" not in metrics:
        return {"trial_id": trial_id, "status": "failed", "error": _one_line(result.error), "params": params,
                "config": None, "summary": None, "rounds": []}
    return {
        "trial_id": trial_id, "status": "completed", "error": None, "params": params,
        "config": json.loads(metrics["config_json"]),
        "summary": json.loads(metrics["summary_json"]),
        "rounds": json.loads(metrics["rounds_json"]),
    }


def _one_line(error) -> str:
    text = str(error or "trial ended without a summary").strip().splitlines()
    return text[-1] if text else "unknown error"


def _jsonable(space: dict) -> dict:
    return {k: [("inf" if isinstance(v, float) and math.isinf(v) else v) for v in vals] for k, vals in space.items()}
