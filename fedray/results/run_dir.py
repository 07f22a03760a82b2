"""Write one run's directory atomically, and read it back.

A finished run directory holds ``config.yaml`` (the resolved config),
``rounds.parquet`` (per-round metrics, long format), ``learning_curve.png``,
the final and best-validation models (``final_model.pt``,
``best_val_model.pt``: torch state dicts, loadable without fedray) and
``summary.json``. Each file is written to a temporary name and renamed
into place, and ``summary.json`` is written last: a directory whose summary
says ``"status": "completed"`` is complete. A failed run gets only a summary
with ``"status": "failed"`` and the error, an interrupted one
``"status": "interrupted"``.

The writer is a privacy boundary: under a DP claim every field of
``summary.json``, of the round records behind ``rounds.parquet`` and every
model file must be covered by a release the run's ledger declares
(``summary["privacy"]["releases"]``, :mod:`fedray.privacy.ledger`), or
nothing is written (:func:`check_outputs`).

:func:`read_run` reads a completed run's config, summary (the typed
:class:`~fedray.results.summary.RunSummary`) and rounds back: a sweep trial
reports its run directory, and the frontier is built from what it reads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import numpy as np
import torch
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedray.metrics import SCALAR_METRICS
from fedray.privacy.ledger import Release, Releases, field_names
from fedray.results.summary import RunSummary, jsonable, revive

MODEL_FILES = ("final_model.pt", "best_val_model.pt")
CONFIG_FILE, ROUNDS_FILE, SUMMARY_FILE = "config.yaml", "rounds.parquet", "summary.json"
RECORD_FILES = (CONFIG_FILE, ROUNDS_FILE, SUMMARY_FILE)  # what the frontier reads of a run (read_run)


def rounds_frame(rounds: list[dict]) -> pd.DataFrame:
    """One row per (round, scope, hospital, split).

    scope "global" rows carry the global model's val/test metrics (under
    mode=local: the mean over hospitals' models); scope "hospital" rows carry a
    hospital's own-validation metrics (split "val") and local training metrics
    (split "train"). Under k-fold cross-validation ``fold`` says which fold's
    run a row belongs to (0 otherwise). A round that ``fl.eval_every`` did not
    evaluate has only its "train" rows, and one without those either (no
    client released) a single scope "round" row with its time.
    """
    rows = []
    for r in rounds:
        base = {"fold": int(r.get("fold", 0)), "round": r["round"], "round_seconds": r.get("round_seconds")}
        before = len(rows)
        for split in ("val", "test") if "val" in r else ():  # fl.eval_every skips some rounds' evaluation
            rows.append({**base, "scope": "global", "hospital": -1, "split": split, **_scalars(r[split])})
        for metrics in r.get("hospital_val", []):  # the round's hospitals, each under its id
            rows.append({**base, "scope": "hospital", "hospital": metrics["hospital"], "split": "val",
                         **_scalars(metrics)})
        for client in r.get("clients", ()):  # none released (DP-FedAvg with sampling), or none recorded
            rows.append({**base, "scope": "hospital", "hospital": client["hospital"], "split": "train",
                         **{k: float(v) for k, v in client.items() if k != "hospital"}})
        if len(rows) == before:  # not evaluated and no client released: the round keeps its time
            rows.append({**base, "scope": "round", "hospital": -1, "split": None})
    frame = pd.DataFrame(rows, columns=None if rows else ["fold", "round", "round_seconds", "scope", "hospital", "split"])
    frame["hospital"] = frame["hospital"].astype("int64")
    return frame


def _scalars(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if k in SCALAR_METRICS}


def write_run(run_dir: Path, *, resolved_cfg, rounds: list[dict], summary: RunSummary,
              models: tuple[list[dict], list[dict]] | None = None) -> None:
    """Write the run; ``models`` = (final, best-validation) parameters, one dict per model (per hospital under
    ``mode=local``), saved as torch state dicts that load without fedray."""
    check_outputs(summary.to_dict(), rounds, models=models is not None)
    run_dir.mkdir(parents=True, exist_ok=True)
    plain = dataclasses.asdict(resolved_cfg) if dataclasses.is_dataclass(resolved_cfg) else resolved_cfg
    _atomic(run_dir / CONFIG_FILE, lambda p: p.write_text(yaml.safe_dump(jsonable(plain), sort_keys=False)))
    if models is not None:
        for name, params in zip(MODEL_FILES, models):
            _atomic(run_dir / name, lambda p, params=params: save_state_dicts(params, p))
    frame = rounds_frame(rounds)
    _atomic(run_dir / ROUNDS_FILE, lambda p: frame.to_parquet(p, index=False, engine="pyarrow"))
    _atomic(run_dir / "learning_curve.png", lambda p: plot_learning_curve(frame, p, title=_title(summary)))
    _atomic(run_dir / SUMMARY_FILE, lambda p: p.write_text(summary.to_json()))


@dataclass(frozen=True)
class RunRecord:
    """A finished run read back from its directory: what a sweep's frontier is made of."""

    config: dict  # the resolved config, as config.yaml holds it (∞ as a float again)
    summary: RunSummary
    rounds: pd.DataFrame  # rounds.parquet: :func:`rounds_frame`'s long format


def read_run(run_dir: Path) -> RunRecord:
    """Read the files of :data:`RECORD_FILES` back from a completed run's directory (or a copy of them)."""
    run_dir = Path(run_dir)
    config = revive(yaml.safe_load((run_dir / CONFIG_FILE).read_text(encoding="utf-8")))
    return RunRecord(config, RunSummary.read(run_dir / SUMMARY_FILE), pd.read_parquet(run_dir / ROUNDS_FILE))


def declared_outputs(summary: dict) -> Releases:
    """The output allowlist the run's ledger declares (open when the run makes no DP claim)."""
    privacy = summary.get("privacy") or {}
    declared = privacy.get("output_releases")
    if not declared:
        return Releases("run output", (), claim=False)
    return Releases("run output", tuple(Release(r["name"], tuple(r["fields"]), r["kind"], r["reason"],
                                                party=r.get("party", "run"), event=r.get("event"))
                                        for r in declared))


def output_fields(summary: dict, rounds: list[dict], *, models: bool) -> list[str]:
    """The dotted names of everything a run directory would publish (empty containers and None carry nothing)."""
    names = ["config", *(f"summary.{n}" for n in field_names(_non_empty(summary)))]
    for record in rounds:
        for key, value in _non_empty(record).items():
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                names += [f"rounds.{key}.{n}" for item in value for n in field_names(_non_empty(item))]
            elif isinstance(value, dict):
                names += [f"rounds.{key}.{n}" for n in field_names(value)]
            else:
                names.append(f"rounds.{key}")
    return names + (["models.final", "models.best_val"] if models else [])


def check_outputs(summary: dict, rounds: list[dict], *, models: bool) -> None:
    """Refuse to write a field no declared release covers (:class:`~fedray.privacy.ledger.UndeclaredRelease`)."""
    mechanism = (summary.get("privacy") or {}).get("mechanism", "none")
    declared_outputs(summary).check(dict.fromkeys(output_fields(summary, rounds, models=models)), mechanism=mechanism)


def _non_empty(value: dict) -> dict:
    return {k: v for k, v in value.items() if v is not None and not (isinstance(v, (list, dict)) and not v)}


def save_state_dicts(params: list[dict], path: Path) -> None:
    """One model: its state dict; several (``mode=local``): a list of them. Load with ``torch.load(path)``."""
    states = [{k: torch.from_numpy(np.array(v)) for k, v in p.items() if np.asarray(v).dtype.kind in "biuf"} for p in params]
    with open(path, "wb") as handle:
        torch.save(states[0] if len(states) == 1 else states, handle)


def write_failure(run_dir: Path, error: str) -> None:
    _write_status(run_dir, {"status": "failed", "error": error})


def write_interrupted(run_dir: Path, signal_name: str) -> None:
    """Only a summary saying so: an interrupted run leaves nothing that looks complete."""
    _write_status(run_dir, {"status": "interrupted", "signal": signal_name})


def _write_status(run_dir: Path, status: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic(run_dir / "summary.json", lambda p: p.write_text(json.dumps(status)))


def plot_learning_curve(frame: pd.DataFrame, path: Path, *, title: str) -> None:
    """Write :func:`learning_curve_figure` into ``path`` (PNG)."""
    learning_curve_figure(frame, title=title).savefig(path, dpi=120, format="png")


def learning_curve_figure(frame: pd.DataFrame, *, title: str) -> Figure:
    """Global accuracy and loss per round on validation and test (the seed paper's Fig. 6) of a :func:`rounds_frame`.

    Under k-fold cross-validation each line is the mean over the folds with a band of ± 1 std, and the title says
    so; a single split draws its one line.
    """
    glob = frame[frame["scope"] == "global"]
    folds = fold_count(frame)
    fig = Figure(figsize=(10, 4), layout="tight")
    accuracy, loss = fig.subplots(1, 2)
    for split, style in (("val", "--"), ("test", "-")):
        part = glob[glob["split"] == split]
        fold_curve(accuracy, part, "accuracy", label=f"{split} accuracy", linestyle=style, marker="o")
        fold_curve(accuracy, part, "balanced_accuracy", label=f"{split} balanced acc.", linestyle=style, marker=".")
        fold_curve(loss, part, "loss", label=f"{split} loss", linestyle=style, marker="o")
    if "train_loss" in frame:  # hospitals send no training loss under DP
        fold_curve(loss, frame[frame["split"] == "train"], "train_loss", label="train loss (mean over hospitals)",
                   linestyle=":", marker="x")
    accuracy.set(xlabel="round", ylabel="accuracy", ylim=(0, 1))
    loss.set(xlabel="round", ylabel="cross-entropy")
    for ax in (accuracy, loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title + (f" · mean ± std over {folds} folds" if folds > 1 else ""))
    return fig


def fold_count(rows: pd.DataFrame) -> int:
    """How many cross-validation folds ``rows`` come from: 1 without a ``fold`` column or with only null folds."""
    return max(int(rows["fold"].nunique()), 1) if "fold" in rows else 1


def fold_curve(ax, rows: pd.DataFrame, column: str, *, label: str, **style) -> None:
    """``column`` of ``rows`` per round; rows from several folds: the mean over the folds and a band of ± 1 std.

    Rows of one (fold, round), e.g. the hospitals' training rows, are averaged first, so the band is the spread
    between folds only (sample std, as the frontier's ``*_std`` columns).
    """
    folded = fold_count(rows) > 1
    by_round = rows.groupby(["fold", "round"] if folded else ["round"])[column].mean().groupby(level="round")
    mean = by_round.mean()
    (line,) = ax.plot(mean.index, mean.to_numpy(float), label=label, **style)
    if folded:
        low, high = mean - by_round.std(), mean + by_round.std()
        ax.fill_between(mean.index, low.to_numpy(float), high.to_numpy(float), color=line.get_color(), alpha=0.2,
                        linewidth=0)


def _title(summary: RunSummary) -> str:
    eps = summary.epsilon
    return f"{summary.mode} · {summary.model} · ε={'∞' if math.isinf(eps) else f'{eps:.2f}'}"


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
