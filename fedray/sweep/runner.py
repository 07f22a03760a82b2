"""``python -m fedray +sweep=<name>``: a Ray Tune sweep whose trials are federated experiments.

The sweep directory ``sweeps/<name>/<timestamp>/`` holds ``sweep.json`` (what
was swept), Tune's experiment (``tune/``, unless ``tune.storage_path`` puts
it on shared storage), each trial's run directory (``trials/<id>/``) and, at
the end, the frontier (``frontier.parquet``, ``trial_rounds.parquet``,
``frontier.png``, ``report.md``).

Everything a trial could reject (data, model, privacy parameters, resources)
is checked here first, so a bad grid fails in one line before any trial runs.
Interrupted sweeps (Ctrl-C, SIGTERM) save Tune's state, print the exact
resume command (``python -m fedray +sweep=<name> tune.resume=<sweep dir>``)
and exit non-zero without a frontier; the resume restores the experiment,
finished trials are not rerun, and the frontier has exactly one row per trial.

Search. ``tune.search=grid`` runs every combination of the space,
``random`` ``tune.num_samples`` configurations drawn uniformly from it (each
axis a choice), ``optuna`` a model-based search. With ``tune.selection``
(``poisson`` or ``negative_binomial``; needs ``search=random``) the sweep is a
private selection (Papernot & Steinke 2022, :mod:`fedray.sweep.selection`):
the number of trials K and the K configurations are drawn from the operating
system's entropy, never from the config, and the frontier reports the ε of
releasing the best one, tuning included, from every configuration's planned
RDP curve. Everything that would void that ε (more than one target ε, a
non-private trial, cross-validation, a scheduler, δ = 0) is refused here,
before Ray starts. A resumed private selection keeps the K trials Tune saved;
nothing is drawn again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import sys
from pathlib import Path

import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from fedray.config import Config, as_dict, replace
from fedray.config.compose import path_fields
from fedray.errors import FedrayError, Interrupted, SweepInterrupted
from fedray.sweep.progress import ChangeReporter
from fedray.federation.cluster import connect
from fedray.federation.experiment import prepare_experiment, resolve_for_data, validate_model
from fedray.federation.feasibility import asks_for_gpus, gpu_request_line
from fedray.privacy.mechanisms import PlanContext, check_mechanism, claims_dp, plan_privacy
from fedray.sweep.frontier import write_frontier
from fedray.federation.memory_plan import check_memory_plan, gpu_memory_bytes
from fedray.federation.runtime import alive_nodes
from fedray.sweep.resources import check_trial_fits, trial_bundles
from fedray.sweep.selection import PrivateSelection, check_distribution, draw_trial_count, max_curve, plan_curve, \
    random_points
from fedray.sweep.space import axis_paths, grid, normalise_space, trial_config
from fedray.sweep.trial import RUN_DIR, finished_run, run_trial
from fedray.tracking import tracker

MANIFEST = "sweep.json"
# How a trial hands its result to the sweep (sweep.json records it; a resume refuses another): its run
# directory's record in its final checkpoint (fedray.sweep.trial.finished_run).
TRIAL_RECORD = "run record in the final checkpoint"
PROGRESS_COLUMNS = {"round": "round", "test_accuracy": "test acc", "test_balanced_accuracy": "test bal acc",
                    "epsilon_spent": "eps spent", "round_seconds": "s/round"}
TUNE_NAME = "tune"


def run_sweep(cfg: Config, *, overrides: list[str]) -> dict:
    """Run the sweep ``cfg.sweep`` over the command line ``overrides`` (each trial adds its axis values)."""
    # Tune's classic reporter interface takes fedray's own (sweep/progress.py; the newer output would print
    # every metric and its own tables); no automatic TensorBoard logger.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # A DP trial checkpoints every round and Tune keeps two (below), so Tune snapshots its experiment state every
    # second round by design: its warning about frequent snapshots would repeat through the whole sweep.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if cfg.cluster.name == "inprocess":
        raise FedrayError("cluster=inprocess runs one experiment without Ray, but a sweep's trials are Ray actors: "
                          "use cluster=local (or cluster=remote) for +sweep")
    sweep, tune_cfg = cfg.sweep, cfg.tune
    space = normalise_space(sweep.space or {})
    paths = axis_paths(replace(sweep, space=space), cfg)
    out_dir = Path(tune_cfg.resume or tune_cfg.out_dir).expanduser().resolve()
    manifest = {"sweep": sweep.name, "space": _jsonable(space), "paths": paths, "trial_record": TRIAL_RECORD,
                **({"selection": _selection_settings(tune_cfg)} if tune_cfg.selection else {})}
    if tune_cfg.resume:
        _check_resume_dir(out_dir, manifest)
    base_overrides = [o for o in overrides if not o.lstrip("+~").startswith(("tune.resume", "tune.out_dir"))]
    trial_overrides = [*base_overrides, *_absolute_paths(cfg)]
    trial_cfgs = [trial_config(trial_overrides, params, paths) for params in grid(space)]
    check_selection_settings(tune_cfg, trial_cfgs)
    num_classes = _validate_trials(trial_cfgs)
    private = private_selection(tune_cfg, trial_cfgs) if tune_cfg.selection else None
    points = None
    if private is not None and not tune_cfg.resume:
        points = random_points(space, draw_selection_trials(tune_cfg))
    tracking = tracker(cfg.tracking)
    tracking.check()
    started_ray = connect(cfg.cluster)
    try:
        cluster = ray.cluster_resources()
        gpus_present, cluster_cpus, cluster_gpus = cluster.get("GPU", 0) > 0, cluster.get("CPU"), cluster.get("GPU")
        nodes = alive_nodes()
        gpu_bytes = gpu_memory_bytes(nodes) if gpus_present else None
        for trial_cfg in trial_cfgs:
            check_trial_fits(trial_bundles(trial_cfg, gpus_present=gpus_present, cluster_cpus=cluster_cpus,
                                           cluster_gpus=cluster_gpus), nodes)
            check_memory_plan(trial_cfg, num_classes=num_classes, gpu_bytes=gpu_bytes)
        cpu_only = gpu_request_line(cfg, gpus_present=gpus_present)
        if cpu_only and asks_for_gpus(overrides):
            print(cpu_only, flush=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
        tuner = _tuner(cfg, space, paths, trial_overrides, out_dir, gpus_present, points=points,
                       cluster_cpus=cluster_cpus, cluster_gpus=cluster_gpus,
                       callbacks=tracking.tune_callbacks(experiment=sweep.name, run_dir_key=RUN_DIR))
        for name in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis"):
            logging.getLogger(name).addFilter(_NoTuneInterruptNoise())
        try:
            result_grid = tuner.fit()
        except Interrupted:
            _print_resume(base_overrides, out_dir)
            raise
    finally:
        if started_ray:
            ray.shutdown()
    records = [trial_record(result, list(paths)) for result in result_grid]
    unfinished = [r for r in records if r["status"] == "unfinished"]
    if unfinished:
        _print_resume(base_overrides, out_dir)
        raise SweepInterrupted(f"{len(unfinished)} of {len(records)} trials did not finish; no frontier written")
    written = write_frontier(out_dir, records, axes=list(paths), sweep_name=sweep.name,
                             utility=sweep.optimized_metric, scope=selection_scope(tune_cfg), private=private)
    tracking.after_sweep(experiment=sweep.name, files=written)
    completed = sum(r["status"] == "completed" for r in records)
    print(f"sweep {sweep.name}: {completed}/{len(records)} trials completed\nfrontier: {written['frontier']}",
          flush=True)
    return {"out_dir": str(out_dir), "records": records}


class _NoTuneInterruptNoise(logging.Filter):
    """Tune's lines on an interrupt that fedray says better: its resume hint (``Tuner.restore(...)``: a fedray
    sweep resumes with :func:`_print_resume`'s command), its "Stop signal received" notice, and a
    FileNotFoundError for each trial that had not reported yet (fedray's last line counts them)."""

    NOISE = ("Tuner.restore", "Stop signal received", "Failed to fetch metrics")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(noise in record.getMessage() for noise in self.NOISE)


def _print_resume(overrides: list[str], out_dir: Path) -> None:
    words = [f"+{o}" if o.startswith("sweep=") else o for o in overrides] + [f"tune.resume={out_dir}"]
    command = " ".join(["python -m fedray", *map(shlex.quote, words)])
    print(f"fedray: sweep interrupted, its state saved; resume it with: {command}", file=sys.stderr, flush=True)


def private_selection(tune_cfg, trial_cfgs: list[Config]) -> PrivateSelection:
    """The private selection's settings and its per-trial RDP bound: the per-order maximum of the planned curve
    of every configuration of the space, each prepared as its trial would be, before Ray starts (the learning
    rate changes no plan). A plan that claims no DP, or a space whose plans all have δ = 0, is refused."""
    plans = {}
    for trial_cfg in trial_cfgs:
        if (key := _plan_key(trial_cfg)) not in plans:
            plans[key] = (trial_cfg, prepare_experiment(trial_cfg).privacy)
    curves = []
    for trial_cfg, plan in plans.values():
        curves.append(plan_curve(plan))
        if curves[-1] is None:
            raise FedrayError(f"tune.selection={tune_cfg.selection}: the privacy plan of model={trial_cfg.model.name}, "
                              f"privacy={trial_cfg.privacy.name} claims no DP, so there is no RDP curve to repeat; "
                              "give every trial a finite ε, or use tune.selection=null")
    delta = max(float(plan.delta or 0.0) for _, plan in plans.values())
    if not delta > 0:
        raise FedrayError(f"tune.selection={tune_cfg.selection}: every configuration is pure ε-DP (δ = 0), and the "
                          "Papernot-Steinke bound is an RDP one whose ε needs a δ > 0; use tune.selection=null (the "
                          "grid composition, exact for pure DP)")
    return PrivateSelection(distribution=tune_cfg.selection, mean=float(tune_cfg.selection_mean),
                            shape=float(tune_cfg.selection_shape), curve=max_curve(curves), delta=delta)


def selection_scope(tune_cfg) -> str:
    """Which trials a choice compares: those at its target ε, or (adaptive search) every trial of the sweep."""
    return "sweep" if tune_cfg.search == "optuna" or tune_cfg.scheduler is not None else "target_epsilon"


def check_selection_settings(tune_cfg, trial_cfgs: list) -> None:
    """Refuse, in one line, a private selection whose ε would not hold (fedray.sweep.selection's assumptions)."""
    if not tune_cfg.selection:
        return
    name = f"tune.selection={tune_cfg.selection}"
    check_distribution(tune_cfg.selection, tune_cfg.selection_mean, tune_cfg.selection_shape)
    if tune_cfg.search != "random":
        raise FedrayError(f"{name} with tune.search={tune_cfg.search}: a private selection runs configurations "
                          "drawn uniformly from the space; set tune.search=random")
    if tune_cfg.scheduler is not None:
        raise FedrayError(f"{name} with tune.scheduler={tune_cfg.scheduler}: stopping trials on their results is "
                          "an adaptive selection the bound does not cover; set tune.scheduler=null")
    if tune_cfg.num_samples != 1:
        raise FedrayError(f"{name} with tune.num_samples={tune_cfg.num_samples}: the number of trials is drawn "
                          f"(mean tune.selection_mean={tune_cfg.selection_mean:g}); leave tune.num_samples=1")
    public = sorted({c.privacy.name for c in trial_cfgs if not claims_dp(c)})
    if public:
        raise FedrayError(f"{name} with a non-private trial (privacy={'|'.join(public)} without a finite ε): the "
                          "selection repeats a private trial's RDP curve; give every trial a mechanism and a finite "
                          "ε, or use tune.selection=null to have the grid composition reported")
    epsilons = sorted({float(c.privacy.epsilon) for c in trial_cfgs})
    if len(epsilons) != 1:
        raise FedrayError(f"{name} needs one target ε (a private selection is per ε target); the space holds ε in "
                          f"{{{', '.join(f'{e:g}' for e in epsilons)}}}: run one sweep per ε, e.g. "
                          "sweep.space.epsilon=[1.0]")
    folds = sorted({c.cv.folds for c in trial_cfgs if c.cv.folds > 1})
    if folds:
        raise FedrayError(f"{name} with cv.folds={folds[0]}: a cross-validated trial scores k fold models trained "
                          "on overlapping records, which one trial's RDP curve does not describe; set cv.folds=1")


def draw_selection_trials(tune_cfg) -> int:
    """K from OS entropy; K = 0 (Poisson) releases nothing, which is said in one line."""
    k = draw_trial_count(tune_cfg.selection, float(tune_cfg.selection_mean), float(tune_cfg.selection_shape))
    if k == 0:
        raise FedrayError(f"tune.selection=poisson drew K = 0 trials (probability e^-{tune_cfg.selection_mean:g}): "
                          "the private selection releases nothing this time, as the mechanism allows; running it "
                          "again is a second release whose ε composes with this one (or use "
                          "tune.selection=negative_binomial, which always runs at least one trial)")
    print(f"sweep: private selection ({tune_cfg.selection}, mean {tune_cfg.selection_mean:g}): running the trials "
          "drawn; keep their number private, only the best trial is covered", flush=True)
    return k


def _plan_key(cfg: Config) -> str:
    config = as_dict(cfg)
    config.get("train", {}).pop("lr", None)
    config.pop("run_dir", None)
    return json.dumps(config, sort_keys=True, default=str)


def _selection_settings(tune_cfg) -> dict:
    return {"distribution": tune_cfg.selection, "mean": tune_cfg.selection_mean, "shape": tune_cfg.selection_shape}


def _validate_trials(trial_cfgs: list[Config]) -> int:
    """Load the data once and check every trial's model and privacy settings against it; the class count."""
    prepared = prepare_experiment(trial_cfgs[0])
    train = prepared.dealt.splits.train
    context = PlanContext(slot_counts=prepared.slot_counts,
                          ranges_public=train.ranges_public, num_features=prepared.num_features,
                          num_classes=prepared.num_classes, preprocessing=tuple(prepared.dealt.preprocessing))
    for trial_cfg in trial_cfgs:
        trial_cfg = resolve_for_data(trial_cfg)
        check_mechanism(trial_cfg)
        same_shards = (trial_cfg.mode, trial_cfg.fl.num_hospitals) == \
            (prepared.cfg.mode, prepared.cfg.fl.num_hospitals)
        if same_shards:  # privacy plans depend on the slot counts this preparation dealt
            plan = plan_privacy(trial_cfg, context)
            validate_model(trial_cfg, plan, num_classes=prepared.num_classes,
                           num_features=prepared.num_features, data_kind=train.kind)
    return prepared.num_classes


def _absolute_paths(cfg: Config) -> list[str]:
    """Overrides pinning every path to what it means here: Tune runs each trial in its own working directory."""
    pinned = path_fields(cfg)
    return [f"{key}=null" if value is None else f"{key}='{value}'" for key, value in pinned.items()]


def _tuner(cfg: Config, space: dict, paths: dict, overrides: list[str], out_dir: Path,
           gpus_present: bool, *, points: list[dict] | None = None, cluster_cpus: float | None = None,
           cluster_gpus: float | None = None, callbacks: list = ()) -> tune.Tuner:
    """The Tuner; ``points``: exactly these configurations (a private selection's K draws), in this order;
    ``callbacks``: the tracker's, beside the JSON and CSV results."""
    sweep, tune_cfg = cfg.sweep, cfg.tune
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, overrides=overrides, paths=paths, out_dir=str(out_dir)),
        lambda params: tune.PlacementGroupFactory(
            trial_bundles(trial_config(overrides, params, paths), gpus_present=gpus_present,
                          cluster_cpus=cluster_cpus, cluster_gpus=cluster_gpus),
            strategy=tune_cfg.placement_strategy,
        ),
    )
    storage = tune_cfg.storage_path or str(out_dir)
    if "://" not in storage:  # s3://, gs://: Tune's own filesystems; otherwise a local or shared path
        storage = str(Path(storage).expanduser().resolve())
    experiment = f"{storage.rstrip('/')}/{TUNE_NAME}"
    if tune_cfg.resume:
        return tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    ranked = tune_cfg.scheduler is not None or tune_cfg.search != "grid"
    return tune.Tuner(
        trainable,
        param_space=_param_space(tune_cfg.search, space),
        tune_config=tune.TuneConfig(
            num_samples=tune_cfg.num_samples if points is None else len(points),
            search_alg=_search_alg(tune_cfg.search, points),
            scheduler=_scheduler(tune_cfg.scheduler),
            metric=sweep.optimized_metric if ranked else None,
            mode=sweep.metric_mode if ranked else None,
            max_concurrent_trials=tune_cfg.max_concurrent_trials,
            reuse_actors=tune_cfg.reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=TUNE_NAME, storage_path=storage, failure_config=tune.FailureConfig(max_failures=0), verbose=1,
            # A resume reads a trial's latest checkpoint only; a DP trial writes one a round (fedray.sweep.trial),
            # which for 300 rounds of a Lite0 head kept every Lite0 state dict: 4.5 GB a trial, until the disk filled.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            progress_reporter=ChangeReporter(params=list(paths), columns=PROGRESS_COLUMNS),
            # JSON and CSV results, and the tracker's callbacks (tracking=; Tune's automatic ones are off).
            callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), *callbacks],
        ),
    )


def _param_space(search: str, space: dict) -> dict:
    if search == "grid":
        return {axis: tune.grid_search(list(values)) for axis, values in space.items()}
    return {axis: tune.choice(list(values)) for axis, values in space.items()}


def _search_alg(search: str, points: list[dict] | None = None):
    if points is not None:  # each point replaces one sample: exactly len(points) trials, nothing sampled
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(points_to_evaluate=[dict(p) for p in points])
    if search in ("grid", "random"):  # Tune's own variant generator: the grid, or num_samples draws of the choices
        return None
    if search == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError:
            raise FedrayError("tune.search=optuna needs Optuna: pip install optuna") from None
        return OptunaSearch(seed=0)
    raise FedrayError(f"unknown tune.search {search!r}: use grid, random or optuna")


def _scheduler(name: str | None):
    if name is None:
        return None
    return tune.schedulers.ASHAScheduler(time_attr="round", grace_period=1)


def _check_resume_dir(out_dir: Path, manifest: dict) -> None:
    found = out_dir / MANIFEST
    if not found.is_file():
        raise FedrayError(f"tune.resume={out_dir} holds no fedray sweep ({MANIFEST} missing): pass a sweep directory")
    previous = json.loads(found.read_text())
    if previous.get("sweep") != manifest["sweep"] or previous.get("space") != manifest["space"]:
        raise FedrayError(
            f"tune.resume={out_dir} holds sweep {previous.get('sweep')!r} with another space: "
            f"resume with the same +sweep and sweep.space it was started with"
        )
    if previous.get("selection") != manifest.get("selection"):
        raise FedrayError(
            f"tune.resume={out_dir} was started with private selection {previous.get('selection')}, not "
            f"{manifest.get('selection')}: resume with the tune.selection settings it was started with"
        )
    if previous.get("trial_record") != TRIAL_RECORD:
        raise FedrayError(f"tune.resume={out_dir} was started by an older fedray whose trials report their results "
                          "in another form: start the sweep afresh (without tune.resume)")


def trial_record(result, axes: list[str]) -> dict:
    """A Tune result as the frontier's trial record: its params, and its run read back (config, summary, rounds)."""
    metrics = result.metrics or {}
    params = {axis: (result.config or {}).get(axis) for axis in axes}
    trial_id = metrics.get("trial_id") or Path(result.path).name
    if result.error is not None:
        return {"trial_id": trial_id, "status": "failed", "error": _one_line(result.error), "params": params,
                "config": None, "summary": None, "rounds": None}
    try:
        run = finished_run(result)
    except (OSError, ValueError, TypeError, KeyError) as err:  # its record is damaged: that trial, not the frontier
        return {"trial_id": trial_id, "status": "failed", "error": f"its run record cannot be read: {_one_line(err)}",
                "params": params, "config": None, "summary": None, "rounds": None}
    if run is None:  # never started, or stopped mid-trial
        return {"trial_id": trial_id, "status": "unfinished", "error": None, "params": params,
                "config": None, "summary": None, "rounds": None}
    return {"trial_id": trial_id, "status": "completed", "error": None, "params": params,
            "config": run.config, "summary": run.summary, "rounds": run.rounds}


def _one_line(error) -> str:
    text = str(error or "trial ended without a summary").strip().splitlines()
    return text[-1] if text else "unknown error"


def _jsonable(space: dict) -> dict:
    return {k: [("inf" if isinstance(v, float) and math.isinf(v) else v) for v in vals] for k, vals in space.items()}
