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

import time

PROCESS_STARTED = time.perf_counter()  # before the imports: summary.wall_seconds is the whole command's time

import gc  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from fedray.config import CONF_DIR, Config, check_group_choices, compose_config, normalise_overrides, to_typed  # noqa: E402
from fedray.errors import FedrayError, Interrupted, SweepInterrupted  # noqa: E402
from fedray.api import PREPARE_THREAD  # noqa: E402
from fedray.audit.report import summary_lines  # noqa: E402
from fedray.metrics import learned_nothing  # noqa: E402

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


def run_single(cfg: Config, *, gpus_asked: bool = False) -> RunSummary:
    """One run through :func:`fedray.api.run`, its lines printed; the wall time counts from this process's start."""
    from fedray.api import run

    result = run(cfg, on_round=print_round, say=lambda line: print(line, flush=True), started=PROCESS_STARTED,
                 gpus_asked=gpus_asked)
    _print_summary(result.summary, result.run_dir)
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
        f"done: {summary.mode} {summary.model}, {summary.rounds} round{'s' if summary.rounds != 1 else ''}, {where}: "
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
                  "for the noise; docs/choosing-epsilon.md gives settings that learned at each epsilon")
    else:
        causes = "check train.lr, fl.rounds and the data (a learning rate too high or too low is the usual cause)"
    return f"warning: the model learned nothing: {sign}; {causes}"


def dispatch(cfg: Config) -> dict | RunSummary:
    if cfg.sweep is not None:
        from fedray.sweep.runner import run_sweep

        return run_sweep(cfg, overrides=_task_overrides())
    from fedray.federation.feasibility import asks_for_gpus

    return run_single(cfg, gpus_asked=asks_for_gpus(_task_overrides()))


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
        _exit(EXIT_SIGNAL[signal.SIGINT])
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
    _exit(EXIT_USER_ERROR)


def _exit_interrupted(stop: Interrupted) -> None:
    print(f"fedray: interrupted by {signal.Signals(stop.signum).name}; the run is marked interrupted",
          file=sys.stderr, flush=True)
    _exit(EXIT_SIGNAL[stop.signum])


def _exit(code: int) -> None:
    """Exit with ``code``. While the data are still being prepared in their daemon thread (it overlaps Ray's
    start), finalising the interpreter with that thread inside torch's C++ can abort the process ("terminate
    called without an active exception"): then end it at once. The run's files are written and the Ray this run
    started is shut down by then, so nothing is left for finalisation but flushing."""
    if not any(thread.name == PREPARE_THREAD and thread.is_alive() for thread in threading.enumerate()):
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


HELP = """usage: python -m fedray [group=option ...] [key=value ...] [+sweep=NAME]

One federated experiment with the composed config, or a Ray Tune sweep with +sweep=NAME.

config groups (group=option; the first is the default where one is set):
{groups}

examples:
  python -m fedray                                         # 5 hospitals, small CNN, synthetic images
  python -m fedray cluster=inprocess                       # the same without Ray: quickest on a laptop
  python -m fedray privacy=dpsgd privacy.epsilon=1         # record-level DP-SGD at every hospital
  python -m fedray data=isic data.root=PATH model=efficientnet_lite0
  python -m fedray +sweep=privacy_tradeoff                 # the privacy-utility frontier (Parquet + plots)

  python -m fedray --cfg job [overrides]   prints the composed config (every key and its value)
  python -m fedray --hydra-help            Hydra's own options
docs: README.md, docs/ (privacy.md, choosing-epsilon.md, federation.md, results.md)"""


def help_text() -> str:
    import yaml

    from fedray.config.compose import CONFIG_GROUPS, group_options

    listed = yaml.safe_load((CONF_DIR / "config.yaml").read_text())["defaults"]  # the root config's choices
    defaults = {k: v for entry in listed if isinstance(entry, dict) for k, v in entry.items()}

    def options(group: str) -> str:
        names = group_options(group)
        first = defaults.get(group)
        return ", ".join([first, *(n for n in names if n != first)] if first in names else names)

    return HELP.format(groups="\n".join(f"  {group + ':':<12}{options(group)}" for group in CONFIG_GROUPS))


def main() -> None:
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):  # Hydra's own help lists its internal schema groups
        print(help_text())
        return
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
    # The run is written and Ray shut down. Freezing what the collector tracks spares the interpreter's exit a last
    # walk over torch's whole object graph (about 1 s on a laptop) to free memory the OS takes back anyway.
    gc.freeze()


if __name__ == "__main__":
    main()
