"""Experiment tracking without Ray (cluster=inprocess): what a single run leaves in MLflow's embedded store and in
TensorBoard's event files, the scalars a tracker receives, and a missing MLflow as one line before anything runs."""

from __future__ import annotations

import importlib.util
import json
import math
import struct
from pathlib import Path

import pytest

from conftest import TINY, run_summary

import fedray
from fedray.tracking import RUN_FILES, final_scalars, privacy_scalars, round_scalars, round_step

TRACKED_RUN = [*TINY, "cluster=inprocess", "audit.enabled=true", "audit.reference_models=0", "privacy=dpsgd",
               "privacy.epsilon=8"]


def test_round_scalars_are_the_global_metrics_and_steps_follow_earlier_folds():
    record = {"round": 2, "total_rounds": 3, "fold": 1, "val": {"balanced_accuracy": 0.5, "confusion_matrix": [[1]]},
              "test": {"auc": 0.75, "loss": 1.0}}
    assert round_scalars(record) == {"val_balanced_accuracy": 0.5, "test_auc": 0.75, "test_loss": 1.0}
    assert round_step(record) == 5 and round_step({"round": 2, "total_rounds": 3}) == 2


def test_privacy_scalars_hold_the_ledger_and_the_audits_bounds_and_drop_what_is_not_finite():
    audit = {"strongest": {"epsilon_lower_bound": 0.4, "auc": 0.61},
             "canaries": {"input": {"epsilon_lower_bound": 0.0},
                          "gradient": {"epsilon_lower_bound": 2.5, "epsilon_lower_bound_fdp": 4.1}}}
    private = run_summary(privacy={"mechanism": "dpsgd", "epsilon": 1.0, "delta": 1e-5}, audit=audit)
    assert privacy_scalars(private) == {"epsilon": 1.0, "delta": 1e-5, "audit_attack_epsilon_lower_bound": 0.4,
                                        "audit_attack_auc": 0.61, "audit_canary_input_epsilon_lower_bound": 0.0,
                                        "audit_canary_white_box_epsilon_lower_bound": 2.5,
                                        "audit_canary_white_box_epsilon_lower_bound_fdp": 4.1}
    plain = run_summary(final_test={"accuracy": 0.5, "auc": math.nan})
    assert privacy_scalars(plain) == {}  # epsilon inf: no DP claim, nothing to plot
    assert final_scalars(plain) == {"final_test_accuracy": 0.5, "final_val_accuracy": 0.5,
                                    "final_val_balanced_accuracy": 0.5}


def test_an_mlflow_run_holds_the_config_every_round_the_ledger_the_audit_and_the_run_files(tmp_path):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "outputs"
    result = fedray.run([*TRACKED_RUN, "tracking=mlflow", f"paths.output_dir={out}"])
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")  # the embedded store: no server
    experiment = client.get_experiment_by_name("fedray")
    assert experiment.artifact_location == (out / "mlartifacts" / "fedray").as_uri()  # never ./mlruns
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    params, metrics = run.data.params, run.data.metrics
    assert params["privacy.name"] == "dpsgd" and params["fl.rounds"] == "2" and params["model.name"] == "small_cnn"
    history = client.get_metric_history(run.info.run_id, "val_balanced_accuracy")
    assert [m.step for m in history] == [1, 2]
    assert metrics["epsilon"] == pytest.approx(result.ledger.epsilon) and metrics["epsilon"] <= 8.0
    assert metrics["delta"] == pytest.approx(result.ledger.delta)
    assert metrics["final_test_balanced_accuracy"] == pytest.approx(result.summary.test.balanced_accuracy)
    assert metrics["audit_canary_white_box_epsilon_lower_bound"] == pytest.approx(
        result.audit.canaries.gradient.epsilon_lower_bound)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == set(RUN_FILES)


def test_a_failed_run_is_marked_failed_in_mlflow(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    import fedray.federation.study as study

    def broken(*args, **kwargs):
        raise RuntimeError("a hospital's disk died")

    monkeypatch.setattr(study, "run_study", broken)
    out = tmp_path / "outputs"
    with pytest.raises(RuntimeError, match="disk died"):
        fedray.run([*TRACKED_RUN, "tracking=mlflow", f"paths.output_dir={out}"])
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("fedray").experiment_id])
    assert run.info.status == "FAILED"


def test_a_tensorboard_run_writes_each_rounds_metrics_and_the_final_privacy_scalars(tmp_path):
    out = tmp_path / "outputs"
    result = fedray.run([*TRACKED_RUN, "tracking=tensorboard", f"paths.output_dir={out}"])
    [events] = (out / "tensorboard" / "fedray").rglob("events.out.tfevents.*")
    scalars = _scalars(events)
    assert [step for step, _ in scalars["val/balanced_accuracy"]] == [1, 2]
    assert scalars["final/epsilon"] == [(2, pytest.approx(result.ledger.epsilon))]
    assert "final/audit_canary_white_box_epsilon_lower_bound" in scalars


def test_tracking_mlflow_without_mlflow_is_one_line_before_anything_runs(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(fedray.FedrayError, match=r"tracking=mlflow needs MLflow.*pip install 'fedray\[tracking\]'"):
        fedray.run([*TRACKED_RUN, "tracking=mlflow", f"paths.output_dir={tmp_path}"])
    assert not (tmp_path / "runs").exists()


def _scalars(events: Path) -> dict[str, list[tuple[int, float]]]:
    """An event file's scalars, tag -> [(step, value)], read with tensorboardX's own protobuf (TFRecord framing:
    length, its CRC, the event, its CRC)."""
    from tensorboardX.proto import event_pb2

    data, at, found = events.read_bytes(), 0, {}
    while at < len(data):
        length = struct.unpack("<Q", data[at:at + 8])[0]
        event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
        at += 12 + length + 4
        for value in event.summary.value:
            found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found
