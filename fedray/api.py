"""fedray from Python: the runs of the command line, for notebooks and scripts.

    import fedray

    cfg = fedray.compose(["privacy=dpsgd", "privacy.epsilon=1"])  # typed and validated; bad input: ConfigError
    result = fedray.run(cfg)                                       # or fedray.run(["fl.rounds=1"])
    result.summary.test.balanced_accuracy, result.ledger.epsilon  # or by key: ["balanced_accuracy"]
    result.rounds                                                  # per-round metrics (rounds.parquet's frame)
    result.model                                                   # the final global model, a torch module
    frontier = fedray.sweep("privacy_tradeoff", ["fl.rounds=3"])   # a Tune sweep: its Frontier
    fedray.Frontier.load("sweeps/privacy_tradeoff/<time>").best(epsilon=1.0)

:func:`run` is what ``python -m fedray`` runs: the CLI is a thin shell that
prints what this module reports through ``say`` and ``on_round``. A Ray the
caller already started (a Jupyter kernel's, a test session's) is reused and
left running; otherwise the run starts a local Ray and stops it, or none at
all with ``cluster=inprocess``. The run writes the same run directory as the
CLI (by default ``<paths.output_dir>/runs/<date>/<time>``). A problem a user
can fix raises :class:`~fedray.errors.FedrayError` (:class:`~fedray.errors.ConfigError`
for the config) whose message is the CLI's one line; nothing is printed
unless ``say`` or ``on_round`` print it, but for the progress bars of long
phases (decoding, feature extraction, the audit's reference models). An
interrupt (Ctrl-C, or SIGINT and SIGTERM under the CLI's handlers) leaves only
a summary marked ``interrupted``, as a failure leaves one marked ``failed``.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from fedray.config import Config, compose_config, normalise_overrides, replace
from fedray.errors import ConfigError, FedrayError, Interrupted

PREPARE_THREAD = "fedray-prepare"  # the daemon thread that decodes the data while Ray starts

if TYPE_CHECKING:  # torch, pandas and the results stack load on the first run, not on `import fedray`
    import pandas as pd
    from torch import nn

    from fedray.results import RunSummary
    from fedray.results.summary import Fields
    from fedray.sweep.saved import Frontier


def compose(overrides: Sequence[str] = (), *, run_dir: str | Path | None = None) -> Config:
    """The validated, typed config of ``conf/`` with Hydra-style ``overrides`` (``["model=resnet18",
    "fl.rounds=3"]``); a bad key or value raises :class:`~fedray.errors.ConfigError` with the CLI's line."""
    try:
        return compose_config(list(overrides), run_dir=run_dir)
    except ConfigError:
        raise
    except FedrayError as err:
        raise ConfigError(*err.args) from None


@dataclass(frozen=True)
class RunResult:
    """One finished run: its config, typed summary, per-round metrics, final model and run directory."""

    config: Config
    summary: RunSummary
    rounds: pd.DataFrame  # one row per (round, scope, hospital, split): fedray.results.rounds_frame
    run_dir: Path
    model: nn.Module | list[nn.Module] | None  # the final global model (one per hospital under mode=local;
    # None for a tree ensemble, whose parameters are arrays: summary and final_model.pt hold them)

    @property
    def ledger(self) -> Fields:
        """The privacy ledger (``summary.json``'s ``privacy`` block; ``docs/privacy.md`` documents each field), by
        key or attribute: ``result.ledger.epsilon``."""
        from fedray.results.summary import Fields

        return Fields(self.summary.privacy)

    @property
    def audit(self) -> Fields | None:
        """The privacy audit's report (None with ``audit.enabled=false``), by key or attribute."""
        from fedray.results.summary import Fields

        return None if self.summary.audit is None else Fields(self.summary.audit)


def run(config: Config | Sequence[str] = (), *, on_round: Callable[[dict], None] | None = None,
        say: Callable[[str], None] | None = None, started: float | None = None,
        gpus_asked: bool = False) -> RunResult:
    """Run one experiment (one per fold under ``cv.folds``) and write its run directory.

    ``config`` is a :func:`compose`'d config or the overrides to compose one.
    ``on_round`` receives each round's record as it ends, ``say`` each line
    the CLI prints about the run (its header, the cluster, a GPU request left
    unused); ``started`` is the ``time.perf_counter()`` the run's wall time
    counts from (the CLI passes its process's start); ``gpus_asked``: the
    user asked for GPUs, so their absence is said.
    """
    started = time.perf_counter() if started is None else started
    say = say or (lambda line: None)
    cfg = config if isinstance(config, Config) else compose(config)
    if cfg.run_dir is None:
        cfg = replace(cfg, run_dir=str(Path(cfg.paths.output_dir) / "runs" / datetime.now().strftime("%Y-%m-%d/%H-%M-%S")))
    from fedray.tracking import tracker

    tracking = tracker(cfg.tracking)
    tracking.check()
    say(header_line(cfg))
    # Ray starts once the preparation has ended or begun a long phase (decoding, feature extraction): bad input
    # that needs no long phase to be seen fails before Ray starts, and Ray's start still overlaps the long phase.
    long_phase = threading.Event()
    preparing = _in_background(lambda: _prepare(cfg), long_phase_begins=long_phase.set)
    if cfg.cluster.name == "inprocess":
        from fedray.federation.experiment import run_in_process

        say("cluster: no Ray: the driver and every hospital run in this process, one after another")
        # torch's optimizers import torch._dynamo at their first step (about 1 s): here it overlaps the preparation
        import torch._dynamo  # noqa: F401

        return _run_and_write(cfg, preparing.result(), runner=run_in_process, stop=lambda: None, started=started,
                              on_round=on_round, tracking=tracking)
    while not (preparing.done() or long_phase.wait(0.1)):
        pass  # short waits: a signal's handler runs between them
    if preparing.done() and preparing.exception() is not None:
        raise preparing.exception()
    import ray  # only now: input refused above never imports Ray either

    from fedray.federation.cluster import connect
    from fedray.federation.experiment import run_experiment
    from fedray.federation.pool import warm_actors

    started_ray = connect(cfg.cluster)
    stop = ray.shutdown if started_ray else (lambda: None)
    try:
        _check_cluster_fits(cfg, say=say if gpus_asked else (lambda line: None))
        warm_actors(cfg)
        prepared = preparing.result()
        if ray.cluster_resources().get("GPU", 0) > 0:
            from fedray.federation.memory_plan import check_memory_plan, gpu_memory_bytes
            from fedray.federation.runtime import alive_nodes

            check_memory_plan(prepared.cfg, num_classes=prepared.num_classes,
                              gpu_bytes=gpu_memory_bytes(alive_nodes()))
    except BaseException:
        stop()
        raise
    return _run_and_write(cfg, prepared, runner=run_experiment, stop=stop, started=started, on_round=on_round,
                          tracking=tracking)


def run_sweep(name: str, overrides: Sequence[str] = ()) -> Frontier:
    """Run the sweep ``conf/sweep/<name>.yaml`` with ``overrides`` (the CLI's ``+sweep=<name> ...``) and return
    its :class:`~fedray.sweep.saved.Frontier`; ``fedray.sweep(name, overrides)`` calls it. Tune's trials print one
    line per start and end; an interrupted sweep raises :class:`~fedray.errors.SweepInterrupted` after saving its
    state (``tune.resume`` resumes it)."""
    from fedray.sweep import runner
    from fedray.sweep.saved import Frontier

    task = [f"sweep={name}", *(o for o in overrides if not o.lstrip("+").startswith("sweep="))]
    cfg = compose(task)
    return Frontier.load(runner.run_sweep(cfg, overrides=normalise_overrides(task))["out_dir"])


def header_line(cfg: Config) -> str:
    """One line saying what this run is: data, model, mode and strategy, mechanism with ε and δ, aggregation,
    where it runs and where its results go."""
    privacy, fl = cfg.privacy, cfg.fl
    epsilon = getattr(privacy, "epsilon", math.inf)
    if privacy.name == "none" or math.isinf(epsilon):
        mechanism = "no DP" + (f" ({privacy.name} at epsilon=inf)" if privacy.name != "none" else "")
    else:
        delta = getattr(privacy, "delta", None)
        delta_text = "" if not hasattr(privacy, "delta") else \
            f" delta={delta:g}" if delta is not None else " delta<1/N (set from the data)"
        mechanism = f"{privacy.name} epsilon={epsilon:g}{delta_text}"
    if cfg.mode == "centralized":
        how = f"centralized (the {fl.num_hospitals} hospitals' data pooled)"
    elif cfg.mode == "local":
        how = f"local ({fl.num_hospitals} hospitals, each alone)"
    else:
        sampled = f", {fl.clients_per_round} per round" if fl.clients_per_round else ""
        aggregation = "secure aggregation" if fl.secure_aggregation else "plain aggregation"
        how = f"federated {cfg.strategy.name}, {fl.num_hospitals} hospitals{sampled}, {aggregation}"
    where = {"inprocess": "in this process", "local": "Ray on this machine",
             "remote": "the Ray cluster"}.get(cfg.cluster.name, cfg.cluster.name)
    folds = f", {cfg.cv.folds}-fold CV" if cfg.cv.folds > 1 else ""
    return (f"fedray: {cfg.data.name} data, {cfg.model.name}, {how}, {mechanism}, {cfg.fl.rounds} "
            f"round{'s' if cfg.fl.rounds != 1 else ''}{folds}; {where}; results in {cfg.run_dir}")


def _prepare(cfg: Config):
    from fedray.federation.experiment import prepare_experiment  # torch and the data stack, off the main thread

    return prepare_experiment(cfg)


def _in_background(work, *, long_phase_begins: Callable[[], None]) -> Future:
    """Run ``work()`` in a daemon thread (a signal's exit never waits for it; an executor's thread is joined),
    calling ``long_phase_begins()`` when its first long phase (:class:`~fedray.progress.Progress`) begins."""
    from fedray.progress import LONG_PHASE_BEGINS

    future: Future = Future()

    def target():
        LONG_PHASE_BEGINS.set(long_phase_begins)
        try:
            future.set_result(work())
        except BaseException as err:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(err)

    threading.Thread(target=target, name=PREPARE_THREAD, daemon=True).start()
    return future


def _check_cluster_fits(cfg: Config, *, say: Callable[[str], None]) -> None:
    """Refuse a run whose actors the connected cluster can never place (before any is requested: Ray would wait
    forever); ``say`` the GPUs asked for that the cluster does not have."""
    import ray

    from fedray.federation.feasibility import check_fits, gpu_request_line, run_bundles
    from fedray.federation.runtime import alive_nodes

    cluster = ray.cluster_resources()
    gpus_present = cluster.get("GPU", 0) > 0
    check_fits(run_bundles(cfg, gpus_present=gpus_present, cluster_cpus=cluster.get("CPU"),
                           cluster_gpus=cluster.get("GPU")), alive_nodes())
    line = gpu_request_line(cfg, gpus_present=gpus_present)
    if line:
        say(line)


def _run_and_write(cfg: Config, prepared, *, runner, stop, started: float, on_round, tracking) -> RunResult:
    """Run the study on ``runner``, ``stop()`` the cluster, write the run directory; log it to ``tracking``."""
    from fedray.federation.study import run_study
    from fedray.results import rounds_frame, write_failure, write_interrupted, write_run
    from fedray.results.timing import with_process_time

    run_dir = Path(cfg.run_dir)
    log = tracking.open_run(cfg, experiment="fedray", run_name=f"{run_dir.parent.name}/{run_dir.name}")

    def each_round(record: dict) -> None:
        log.round(record)
        if on_round is not None:
            on_round(record)

    try:
        result = run_study(cfg, prepared=prepared, on_round=each_round, run_dir=run_dir, runner=runner)
    except (Interrupted, KeyboardInterrupt) as interrupt:
        signum = interrupt.signum if isinstance(interrupt, Interrupted) else signal.SIGINT
        write_interrupted(run_dir, signal.Signals(signum).name)
        log.fail("interrupted")
        raise
    except BaseException as err:
        write_failure(run_dir, f"{type(err).__name__}: {err}")
        log.fail("failed")
        raise
    finally:
        experiments_ended = time.perf_counter()
        stop()
    now = time.perf_counter()
    summary = dataclasses.replace(
        result.summary, wall_seconds=now - started,
        timing=with_process_time(result.summary.timing or {}, experiments_seconds=result.summary.wall_seconds,
                                 process_seconds=now - started, after_seconds=now - experiments_ended))
    write_run(run_dir, resolved_cfg=cfg, rounds=result.rounds, summary=summary,
              models=(result.final_params, result.best_params))
    log.finish(summary, run_dir)
    return RunResult(config=cfg, summary=summary, rounds=rounds_frame(result.rounds), run_dir=run_dir,
                     model=_torch_models(prepared, result.final_params))


def _torch_models(prepared, params: list[dict]):
    """The final parameters as torch modules of the run's architecture (None for a tree ensemble)."""
    import numpy as np
    import torch

    from fedray.models import model_family
    from fedray.training import build_training_model

    if model_family(prepared.cfg.model.name) == "tree":
        return None
    models = []
    for state in params:
        model = build_training_model(prepared.cfg, prepared.privacy, num_classes=prepared.num_classes,
                                     num_features=prepared.num_features)
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
        models.append(model.eval())
    return models[0] if len(models) == 1 else models
