"""A run's header line says what runs, and its timing adds up to its wall time (pure: no Ray)."""

from __future__ import annotations

import time

import pytest

from fedray.api import header_line
from fedray.config import compose_config
from fedray.results.timing import PHASES, Stopwatch, with_process_time


@pytest.mark.parametrize("overrides, fragments", [
    ([], ["synthetic data", "small_cnn", "federated fedavg, 5 hospitals", "plain aggregation", "no DP", "5 rounds",
          "Ray on this machine"]),
    (["privacy=dpsgd", "privacy.epsilon=1", "cluster=inprocess"],
     ["dpsgd epsilon=1 delta<1/N (set from the data)", "in this process"]),
    (["privacy=dpfedavg", "fl.secure_aggregation=true", "fl.rounds=1"],
     ["dpfedavg epsilon=10 delta=0.001", "secure aggregation", "1 round;"]),
    (["privacy=dpsgd", "privacy.epsilon=.inf"], ["no DP (dpsgd at epsilon=inf)"]),
    (["mode=centralized", "cv.folds=3"], ["centralized (the 5 hospitals' data pooled)", "3-fold CV"]),
])
def test_the_header_names_data_model_strategy_mechanism_aggregation_and_where(tmp_path, overrides, fragments):
    line = header_line(compose_config(overrides, run_dir=tmp_path))
    assert line.startswith("fedray: ") and line.endswith(f"results in {tmp_path}") and "\n" not in line
    for fragment in fragments:
        assert fragment in line


def test_the_phases_add_up_to_the_wall_time():
    clock = Stopwatch(before_resume=2.0)
    for phase in ("setup", "rounds", "audit", "wrap_up"):
        time.sleep(0.01)
        clock.lap(phase)
    assert clock.seconds["before_resume"] == 2.0
    assert sum(clock.seconds.values()) == pytest.approx(clock.total())
    process = with_process_time(clock.seconds, experiments_seconds=clock.total(), process_seconds=clock.total() + 5.0,
                                after_seconds=1.5)
    assert list(process) == [p for p in PHASES if p in process]
    assert process["startup"] == pytest.approx(3.5, abs=1e-3)
    assert process["wrap_up"] == pytest.approx(clock.seconds["wrap_up"] + 1.5, abs=1e-3)
    assert sum(process.values()) == pytest.approx(clock.total() + 5.0, abs=1e-2)


def test_an_in_process_run_says_so_and_its_timing_adds_up_to_its_wall_time(tmp_path):
    import json
    import subprocess
    import sys

    from conftest import TINY

    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "fedray", *TINY, "cluster=inprocess", f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0].startswith("fedray: synthetic data") and "in this process" in proc.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["placement"]["hospitals"].startswith("in process")
    assert summary["provenance"]["device"].startswith("in process")
    assert set(summary["timing"]) == {"startup", "setup", "rounds", "audit", "wrap_up"}
    assert sum(summary["timing"].values()) == pytest.approx(summary["wall_seconds"], abs=0.05)
    assert summary["timing"]["startup"] > 0 and summary["timing"]["rounds"] > 0


def test_help_lists_the_config_groups_a_user_picks_and_not_the_internal_schemas(capsys, monkeypatch):
    from fedray.__main__ import main

    monkeypatch.setattr("sys.argv", ["fedray", "--help"])
    main()
    text = capsys.readouterr().out
    assert "schema" not in text
    assert "  privacy:    none, " in text and "  cluster:    local, inprocess, remote" in text
    assert "python -m fedray --cfg job" in text
