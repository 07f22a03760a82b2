"""One Ray Tune trial = one complete federated experiment inside the trial's placement group.

Every ``tune.checkpoint_every`` rounds the trial reports a Tune ``Checkpoint``
holding its :class:`~fedray.federation.study.StudyState` (models, the
hospitals' accountant steps, the server optimizer's state, the fitted input
map). A resumed sweep restarts an unfinished trial from its last checkpoint,
not from round 1, with the same ledger.
"""

from __future__ import annotations

import json
import math
import pickle
import tempfile
from pathlib import Path

from ray import tune
from ray.util import get_current_placement_group

from fedray.config import as_dict
from fedray.federation.study import StudyState, run_study
from fedray.metrics import SCALAR_METRICS
from fedray.results import write_run
from fedray.sweep.resources import DRIVER_BUNDLE
from fedray.sweep.space import trial_config

CHECKPOINT_FILE = "study.pkl"


def round_metrics(record: dict) -> dict:
    """The flat per-round metrics reported to Tune (shown live, kept in each trial's history)."""
    flat = {"round": record["round"], "round_seconds": record["round_seconds"], "fold": record.get("fold", 0)}
    for split in ("val", "test"):
        flat.update({f"{split}_{k}": float(v) for k, v in record.get(split, {}).items() if k in SCALAR_METRICS})
    return flat


def run_trial(params: dict, *, overrides: list[str], paths: dict, out_dir: str) -> None:
    """Tune's function trainable: compose the trial's config, run it, report every round and the summary."""
    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(overrides, params, paths, run_dir=Path(out_dir) / "trials" / trial_id)
    folds = cfg.cv.folds

    def on_round(record: dict) -> None:
        if record["round"] < record["total_rounds"] or record.get("fold", folds - 1) < folds - 1:
            tune.report(round_metrics(record))

    def on_checkpoint(record: dict, state: StudyState) -> None:
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / CHECKPOINT_FILE).write_bytes(pickle.dumps(state))
            tune.report(round_metrics(record), checkpoint=tune.Checkpoint.from_directory(folder))

    result = run_study(cfg, on_round=on_round, run_dir=Path(cfg.run_dir), resume=_last_checkpoint(),
                       on_checkpoint=on_checkpoint, placement_group=get_current_placement_group(),
                       bundle_offset=DRIVER_BUNDLE)
    write_run(Path(cfg.run_dir), resolved_cfg=cfg, rounds=result.rounds, summary=result.summary,
              models=(result.final_params, result.best_params))
    # The last round's report also carries the whole summary and history, so the frontier can be
    # rebuilt from Tune's results alone (also after a resume, without rerunning finished trials).
    # Its test metrics are the summary's: under k-fold CV the mean over folds, not the last fold's.
    final = {f"{split}_{k}": float(v) for split in ("val", "test")
             for k, v in result.summary[f"final_{split}"].items() if k in SCALAR_METRICS}
    tune.report({
        **round_metrics(result.rounds[-1]),
        **final,
        "epsilon_spent": _finite_or_none(result.summary["privacy"]["epsilon"]),
        "summary_json": json.dumps(result.summary, default=_json_default),
        "rounds_json": json.dumps(result.rounds, default=_json_default),
        "config_json": json.dumps(as_dict(cfg), default=_json_default),
    })


def _last_checkpoint() -> StudyState | None:
    """The state this trial last checkpointed, when Tune restarts it (a resumed sweep), else None."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return pickle.loads((Path(folder) / CHECKPOINT_FILE).read_bytes())


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(float(value)) else None


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
