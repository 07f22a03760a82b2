"""``python -m fedray``: compose the Hydra config in ``conf/`` and run it.

A plain run is one federated experiment; ``+sweep=<name>`` runs a Ray Tune
sweep instead. Hydra is only the front door: the composed config becomes the
typed, validated :class:`~fedray.config.Config` (frozen dataclasses, absolute
paths, no interpolations) before anything else runs.

User-fixable problems end with one line on stderr and exit code 2, before
Ray starts wherever the problem can be seen there. Ctrl-C (SIGINT) and SIGTERM
stop the actors and exit 130 and 143; the run directory then holds only a
summary with ``"status": "interrupted"``, never files that look complete.
"""

from __future__ import annotations

import math
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fedray.config import CONF_DIR, Config, check_group_choices, compose_config, normalise_overrides, to_typed
from fedray.errors import FedrayError, Interrupted, SweepInterrupted
from fedray.audit.report import summary_lines
from fedray.metrics import learned_nothing

if TYPE_CHECKING:  # the results stack imports torch and matplotlib: a bad-input line should not wait for them
    from fedray.results import RunSummary

EXIT_USER_ERROR = 2
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _raise_interrupted(signum, _frame):
    raise Interrupted(signum)


def print_round(record: dict) -> None:
    fold = f"fold {record['fold'] + 1} " if "fold" in record else ""
    where = f"[{fold}round {record['round']:>3}/{record['total_rounds']}] "
    cache = f" | {record['feature_cache']}" if "feature_cache" in record else ""
    if "val" not in record:  # fl.eval_every skipped this round's evaluation
        print(f"{where}trained, not evaluated | {record['round_seconds']:.1f} s/round{cache}", flush=True)
        return
    val, test = record["val"], record["test"]
    print(
        f"{where}"
        f"val acc {val['accuracy']:.3f} bal {val['balanced_accuracy']:.3f} | "
        f"test acc {test['accuracy']:.3f} bal {test['balanced_accuracy']:.3f} f1 {test['f1']:.3f} "
        f"auc {test['auc']:.3f} loss {test['loss']:.3f} | {record['round_seconds']:.1f} s/round{cache}",
        flush=True,
    )


def check_cluster_fits(cfg: Config) -> None:
    """Refuse a run whose actors the connected cluster can never place; say when GPUs asked for are absent."""
    import ray

    from fedray.federation.feasibility import check_fits, gpu_request_line, run_bundles

    gpus_present = ray.cluster_resources().get("GPU", 0) > 0
    check_fits(run_bundles(cfg, gpus_present=gpus_present), [n["Resources"] for n in ray.nodes() if n["Alive"]])
    line = gpu_request_line(cfg, gpus_present=gpus_present)
    if line:
        print(line, flush=True)


def run_single(cfg: Config) -> RunSummary:
    import ray

    from fedray.federation.cluster import connect
    from fedray.federation.pool import warm_actors

    def prepare():
        from fedray.federation.experiment import prepare_experiment  # torch and the data stack, off the main thread

        return prepare_experiment(cfg)

    run_dir = Path(cfg.run_dir)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedray-prepare") as background:
        # Imports and decoding run while Ray starts and the actors import torch: on a laptop that overlaps
        # three serial waits. Bad input still fails in one line, after shutting down the Ray this call started.
        preparing = background.submit(prepare)
        started_ray = connect(cfg.cluster)
        try:
            check_cluster_fits(cfg)  # before any actor is requested: Ray would wait for an impossible one forever
            warm_actors(cfg)
            prepared = preparing.result()
        except BaseException:
            if started_ray:
                ray.shutdown()
            raise
    from fedray.federation.study import run_study
    from fedray.results import write_failure, write_interrupted, write_run
    from fedray.federation.memory_plan import check_memory_plan, gpu_memory_bytes

    try:
        if ray.cluster_resources().get("GPU", 0) > 0:
            nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
            check_memory_plan(prepared.cfg, num_classes=prepared.num_classes, gpu_bytes=gpu_memory_bytes(nodes))
        result = run_study(cfg, prepared=prepared, on_round=print_round, run_dir=run_dir)
    except Interrupted as stop:
        write_interrupted(run_dir, signal.Signals(stop.signum).name)
        raise
    except BaseException as err:
        write_failure(run_dir, f"{type(err).__name__}: {err}")
        raise
    finally:
        if started_ray:
            ray.shutdown()
    write_run(run_dir, resolved_cfg=cfg, rounds=result.rounds, summary=result.summary,
              models=(result.final_params, result.best_params))
    _print_summary(result.summary, run_dir)
    return result.summary


def _print_summary(summary: RunSummary, run_dir: Path) -> None:
    test, std, ledger = summary.final_test, summary.final_test_std or {}, summary.privacy
    eps = summary.epsilon
    eps_text = "inf (non-private)" if math.isinf(eps) else f"{eps:.3f}"
    folds = summary.folds

    def metric(key: str) -> str:
        return f"{test[key]:.3f}" + (f"±{std[key]:.3f}" if key in std else "")

    where = f"mean±std over {folds} folds" if folds > 1 else "held-out test"
    print(
        f"done: {summary.mode} {summary.model}, {summary.rounds} rounds, {where}: "
        f"acc {metric('accuracy')} bal {metric('balanced_accuracy')} precision {metric('precision')} "
        f"recall {metric('recall')} f1 {metric('f1')} auc {metric('auc')}, epsilon {eps_text}",
        flush=True,
    )
    if summary.data.without_consent:
        print(f"consent: {summary.data.without_consent} records without informed consent were left out",
              flush=True)
    for note in (ledger.get("note") or ledger.get("delta_note"), ledger.get("cv_note"), ledger.get("noise")):
        if note:
            print(f"privacy: {note}", flush=True)
    if ledger.get("guarantee"):
        print(f"privacy: epsilon is per {ledger['unit']} ({ledger['neighbouring']} neighbouring); trusted: "
              f"{ledger['trust']}; outside the guarantee, labelled in summary.json: "
              f"{', '.join(ledger['outside_guarantee'])}", flush=True)
    for line in summary_lines(summary.audit):
        print(line, flush=True)
    warning = _learned_nothing_line(summary)
    if warning:
        print(warning, flush=True)
    print(f"results: {run_dir}", flush=True)


def _learned_nothing_line(summary: RunSummary) -> str | None:
    """A last line when the model shows no learning on the test set: the sign, and the likely causes."""
    sign = learned_nothing(summary.final_test_confusion_matrix or [])
    if sign is None:
        return None
    eps = summary.epsilon
    if math.isfinite(eps):
        causes = (f"under DP at epsilon={eps:.3g} the noise may drown the signal: raise privacy.epsilon, train "
                  "more rounds (fl.rounds) or epochs, use a larger batch (train.batch_size) and retune train.lr "
                  "for the noise; docs/privacy.md and the committed references in sweeps/ give settings that learn")
    else:
        causes = "check train.lr, fl.rounds and the data (a learning rate too high or too low is the usual cause)"
    return f"warning: the model learned nothing: {sign}; {causes}"


def dispatch(cfg: Config) -> dict | RunSummary:
    if cfg.sweep is not None:
        from fedray.sweep.runner import run_sweep

        return run_sweep(cfg, overrides=_task_overrides())
    return run_single(cfg)


def _task_overrides() -> list[str]:
    return normalise_overrides(list(HydraConfig.get().overrides.task))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    try:
        dispatch(to_typed(cfg, run_dir=HydraConfig.get().runtime.output_dir))
    except FedrayError as err:
        _exit_with(err)
    except Interrupted as stop:
        _exit_interrupted(stop)
    except SweepInterrupted as err:  # Tune caught the signal; the resume line is printed
        print(f"fedray: {err}", file=sys.stderr, flush=True)
        sys.exit(EXIT_SIGNAL[signal.SIGINT])
    except Exception as err:
        cause = _user_error_inside(err)
        if cause is None:
            raise
        _exit_with(cause)


def _user_error_inside(err: BaseException) -> FedrayError | None:
    """A FedrayError raised inside a Ray actor or trial arrives wrapped; find it."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, FedrayError):
            return err
        seen.add(id(err))
        err = getattr(err, "cause", None) or err.__cause__
    return None


def _exit_with(err: FedrayError) -> None:
    message = err.args[0] if err.args else str(err)
    print(f"fedray: error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def _exit_interrupted(stop: Interrupted) -> None:
    print(f"fedray: interrupted by {signal.Signals(stop.signum).name}; the run is marked interrupted",
          file=sys.stderr, flush=True)
    sys.exit(EXIT_SIGNAL[stop.signum])


def main() -> None:
    argv = normalise_overrides(sys.argv[1:])
    try:
        check_group_choices(argv)
        if not any(a.startswith("-") for a in argv):
            compose_config([a for a in argv if not a.startswith(("hydra.", "hydra/"))])  # every bad key or value in one line, before Hydra's longer messages
    except FedrayError as err:
        _exit_with(err)
    sys.argv[1:] = argv
    for signum in EXIT_SIGNAL:
        signal.signal(signum, _raise_interrupted)
    hydra_main()


if __name__ == "__main__":
    main()
