"""The Python API: compose and run from a script or notebook, with typed results and typed errors."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

import pandas as pd
import pytest
import torch

from conftest import TINY

import fedray
from fedray.results import read_run
from fedray.sweep.tables import selection_column


def test_import_fedray_stays_light_and_names_its_api():
    # The CLI's one-line errors import fedray first: torch and Ray load on the first run, not on import.
    probe = "import sys, fedray; fedray.ConfigError; print('torch' in sys.modules, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr
    assert set(fedray.__all__) >= {"compose", "run", "RunResult", "ConfigError", "FedrayError"}


def test_a_bad_config_raises_a_typed_error_with_the_cli_line(tmp_path):
    with pytest.raises(fedray.ConfigError, match=r"unknown model 'resnet5': choose one of .*resnet50"):
        fedray.compose(["model=resnet5"])
    with pytest.raises(fedray.FedrayError, match="epsilon"):
        fedray.compose(["privacy=dpsgd", "privacy.epsilon=0"])
    cfg = fedray.compose([*TINY, "fl.rounds=1"], run_dir=tmp_path)
    assert cfg.fl.rounds == 1 and cfg.run_dir == str(tmp_path.resolve())


def test_a_run_returns_its_summary_rounds_ledger_and_a_loaded_model(tmp_path, capsys):
    seen = []
    result = fedray.run(fedray.compose([*TINY, "cluster=inprocess", "audit.enabled=true",
                                        "audit.reference_models=0"], run_dir=tmp_path / "run"),
                        on_round=seen.append)
    assert capsys.readouterr().out == ""  # nothing printed unless asked for
    assert [r["round"] for r in seen] == [1, 2]
    assert isinstance(result, fedray.RunResult) and result.run_dir == tmp_path / "run"
    assert result.summary.rounds == 2 and 0.0 <= result.summary.final_test["balanced_accuracy"] <= 1.0
    assert isinstance(result.rounds, pd.DataFrame) and set(result.rounds["round"]) == {1, 2}
    assert result.ledger["epsilon"] == float("inf") and result.audit is not None
    # what the run wrote is what it returned
    record = read_run(result.run_dir)
    assert record.summary.to_json() == result.summary.to_json()
    assert json.loads((result.run_dir / "summary.json").read_text())["status"] == "completed"
    # the model is the saved final model, as a module of the run's architecture
    assert isinstance(result.model, torch.nn.Module)
    saved = torch.load(result.run_dir / "final_model.pt", weights_only=True)
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    images = torch.zeros((2, 3, 16, 16))
    assert result.model(images).shape == (2, 3)


@pytest.mark.usefixtures("ray_session")
def test_a_run_reuses_the_callers_ray_and_leaves_it_running(tmp_path):
    import ray

    result = fedray.run([*TINY, f"paths.output_dir={tmp_path}"])
    assert ray.is_initialized()
    assert str(result.run_dir).startswith(str(tmp_path / "runs"))
    assert result.summary.placement["driver"]["node"] == ray.get_runtime_context().get_node_id()


REFERENCES = sorted(p.parent for p in (Path(__file__).resolve().parents[1] / "sweeps").rglob("frontier.parquet"))


@pytest.mark.parametrize("reference", REFERENCES, ids=lambda p: "/".join(p.parts[-2:]))
def test_every_committed_reference_sweep_reads_back(reference):
    frontier = fedray.Frontier.load(reference)
    assert len(frontier.frame) > 0 and frontier.rounds is not None
    completed = frontier.completed()
    on = selection_column(frontier.frame, frontier.utility)  # validation, or an old frontier's test column
    assert frontier.best()[on] == completed[on].max()
    for target in sorted(set(completed["target_epsilon"].astype(float)))[:2]:
        chosen = frontier.best(epsilon=target)
        at_target = completed[completed["target_epsilon"].astype(float) == target]
        assert float(chosen["target_epsilon"]) == target and chosen[on] == at_target[on].max()
    assert set(frontier.pareto()["trial_id"]) <= set(completed["trial_id"])
    assert frontier.plot().axes and frontier.tables().startswith("#")


def test_a_missing_sweep_or_epsilon_is_a_one_line_error(tmp_path):
    with pytest.raises(fedray.FedrayError, match="does not exist"):
        fedray.Frontier.load(tmp_path)
    frontier = fedray.Frontier.load(REFERENCES[0])
    with pytest.raises(fedray.FedrayError, match="no completed trial at target epsilon 123"):
        frontier.best(epsilon=123.0)


def test_best_chooses_within_one_federation_size_when_asked():
    sizes = fedray.Frontier.load(Path(__file__).resolve().parents[1] / "sweeps/federation_size/reference-cpu-2026-12-07")
    for hospitals in (5, 50, 500):
        chosen = sizes.best(1.0, where={"hospitals": hospitals})
        assert chosen["hospitals"] == hospitals and float(chosen["target_epsilon"]) == 1.0
    with pytest.raises(fedray.FedrayError, match="where {'hospitals': 7}"):
        sizes.best(1.0, where={"hospitals": 7})
    with pytest.raises(fedray.FedrayError, match="no column 'sites'"):
        sizes.best(where={"sites": 3})
