"""The results contract: a RunSummary survives its file, a run directory reads back whole, a trial's final
checkpoint carries its run. No Ray."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from conftest import TINY, compose_typed, run_summary

from fedray.results import DataSummary, RunSummary, read_run, rounds_frame, write_run
from fedray.results.run_dir import RECORD_FILES


def _rounds() -> list[dict]:
    metrics = {"accuracy": 0.5, "balanced_accuracy": 0.5, "loss": 1.0}
    return [{"round": r, "round_seconds": 0.5, "restarts": 0, "val": metrics, "test": metrics,
             "clients": [{"hospital": k, "train_loss": 1.0 / r} for k in range(2)]} for r in (1, 2)]


def _summary() -> RunSummary:
    return run_summary(data=DataSummary(train=10, val=2, test=3, classes=["a", "b"], fold=None),
                       privacy={"mechanism": "none", "epsilon": math.inf, "target_epsilon": math.inf},
                       audit={"strongest": None, "flags": []}, feature_cache={"driver": {"seconds": 0.1}})


def test_a_summary_survives_its_json_file_with_infinities():
    summary = _summary()
    published = json.loads(summary.to_json())
    assert published["status"] == "completed" and published["privacy"]["epsilon"] == "inf"  # standard JSON
    assert list(published)[:4] == ["status", "mode", "model", "data"]
    back = RunSummary.from_dict(published)
    assert back == summary and back.epsilon == math.inf and back.folds == 1


def test_a_failed_run_has_no_summary():
    with pytest.raises(ValueError, match="a failed run has no summary: boom"):
        RunSummary.from_dict({"status": "failed", "error": "boom"})


def test_a_run_directory_reads_back_what_was_written(tmp_path):
    cfg = compose_typed([*TINY, "privacy=dpsgd", "privacy.epsilon=inf"], tmp_path)
    summary, rounds = _summary(), _rounds()
    write_run(tmp_path / "run", resolved_cfg=cfg, rounds=rounds, summary=summary)
    run = read_run(tmp_path / "run")
    assert run.summary == summary
    assert run.config["fl"]["rounds"] == cfg.fl.rounds and run.config["privacy"]["epsilon"] == math.inf
    pd.testing.assert_frame_equal(run.rounds, rounds_frame(rounds))


def test_the_final_checkpoint_carries_the_trial_run_for_the_frontier(tmp_path):
    from fedray.sweep import trial

    cfg = compose_typed(TINY, tmp_path)
    write_run(tmp_path / "run", resolved_cfg=cfg, rounds=_rounds(), summary=_summary())
    with trial._checkpoint(SimpleNamespace(fold=1), run_dir=tmp_path / "run") as checkpoint:
        assert sorted(p.name for p in (Path(checkpoint.path) / trial.RUN_RECORD).iterdir()) == sorted(RECORD_FILES)
        (tmp_path / "run" / "summary.json").unlink()  # the run directory may live on another node
        run = trial.finished_run(SimpleNamespace(error=None, metrics={trial.RUN_DIR: str(tmp_path / "run")},
                                                 checkpoint=checkpoint))
    assert run.summary == _summary() and len(run.rounds) == len(rounds_frame(_rounds()))
    for unfinished in (SimpleNamespace(error=None, metrics={"round": 1}, checkpoint=None),
                       SimpleNamespace(error=RuntimeError("boom"), metrics={}, checkpoint=None)):
        assert trial.finished_run(unfinished) is None


def test_provenance_names_the_commit_the_libraries_and_the_device():
    import subprocess
    from importlib.metadata import version

    from fedray.results.provenance import CHECKOUT, provenance

    found = provenance(device="in process: CPU")
    head = subprocess.run(["git", "-C", str(CHECKOUT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout (CI's clone is one)
        assert found["commit"].removesuffix("+dirty") == head.stdout.strip()
    assert found["libraries"]["opacus"] == version("opacus") and found["libraries"]["torch"] == version("torch")
    assert found["fedray"] == version("fedray") and found["device"] == "in process: CPU"


def test_a_round_neither_evaluated_nor_released_keeps_its_row_and_time():
    from fedray.sweep.frontier import sweep_rounds_frame

    metrics = {"accuracy": 0.5, "balanced_accuracy": 0.5}
    rounds = [{"round": 1, "round_seconds": 1.5, "clients": []},  # fl.eval_every skipped it; DP-FedAvg sampled
              {"round": 2, "round_seconds": 2.0, "val": metrics, "test": metrics, "clients": []}]
    frame = rounds_frame(rounds)
    assert frame[frame["round"] == 1]["scope"].tolist() == ["round"]
    trial = sweep_rounds_frame([{"trial_id": "t", "params": {}, "rounds": frame}])
    assert trial["round"].tolist() == [1, 2] and trial["round_seconds"].tolist() == [1.5, 2.0]
    assert math.isnan(trial["test_accuracy"][0]) and trial["test_accuracy"][1] == 0.5


def test_a_trial_whose_record_cannot_be_read_fails_alone_and_an_older_sweep_is_not_resumed(tmp_path):
    from ray import tune

    from fedray.errors import FedrayError
    from fedray.sweep import runner, trial

    (tmp_path / "empty" / trial.RUN_RECORD).mkdir(parents=True)
    damaged = SimpleNamespace(error=None, metrics={trial.RUN_DIR: "elsewhere", "trial_id": "t1"}, config={},
                              path=str(tmp_path), checkpoint=tune.Checkpoint.from_directory(tmp_path / "empty"))
    record = runner.trial_record(damaged, [])
    assert record["status"] == "failed" and record["error"].startswith("its run record cannot be read")
    (tmp_path / "sweep.json").write_text(json.dumps({"sweep": "s", "space": {}}))  # written before run records
    with pytest.raises(FedrayError, match="started by an older fedray"):
        runner._check_resume_dir(tmp_path, {"sweep": "s", "space": {}})
