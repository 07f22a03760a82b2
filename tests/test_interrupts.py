"""Signals, checkpoints and log hygiene through the real CLI, each case in its own process.

- A single run stopped by SIGINT or SIGTERM exits 130 / 143 and leaves only a summary marked interrupted.
- A sweep stopped by SIGINT prints fedray's resume command, exits non-zero and writes no frontier; the resumed
  sweep finishes with one row per trial, and the trial that had checkpointed continues after its last
  checkpointed round with the ledger of an uninterrupted run.
- A healthy run prints no error-level Ray line and exports its final and best-validation models; an unreachable
  cluster is one line within the bound.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY

pytestmark = pytest.mark.spawns_ray  # runs the CLI, which starts its own Ray

ROOT = Path(__file__).resolve().parents[1]
RAY_ERROR_LINE = re.compile(r" E .*\.cc:\d+")
QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none", "audit.reference_models=0"]


def start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "fedray", *args], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_for(predicate, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130),
                                          pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow)])  # same path
def test_a_signalled_run_stops_its_actors_and_is_marked_interrupted(tmp_path, signum, code):
    run_dir, log = tmp_path / "run", tmp_path / "log.txt"
    proc = start([*TINY, "fl.rounds=40", f"hydra.run.dir={run_dir}", *QUIET], log)
    wait_for(lambda: "round   2/40" in log.read_text())
    proc.send_signal(signum)
    assert proc.wait(timeout=120) == code
    output = log.read_text()
    assert "Traceback" not in output and f"interrupted by {signal.Signals(signum).name}" in output
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    assert not (run_dir / "rounds.parquet").exists() and not (run_dir / "final_model.pt").exists()


@pytest.mark.slow  # two CLI sweeps, about two minutes: -m slow (tests/sweep/test_trial.py covers resuming in process)
def test_an_interrupted_sweep_resumes_from_its_last_checkpoint_with_the_same_ledger(tmp_path):
    out_dir, log = tmp_path / "sweep", tmp_path / "log.txt"
    args = ["+sweep=privacy_tradeoff", *TINY, "fl.rounds=4", "sweep.space.lr=[0.05]", "sweep.space.epsilon=[inf,1.0]",
            "tune.checkpoint_every=1", "tune.max_concurrent_trials=1", *QUIET]
    proc = start([*args, f"tune.out_dir={out_dir}", f"hydra.run.dir={tmp_path}/h1"], log)
    # Stop while the second (DP) trial is mid-way: the first has finished, the second has checkpointed.
    wait_for(lambda: len(list(out_dir.glob("tune/*_00001_*/checkpoint_000001"))) > 0)
    finished = {p.parent.name: p.stat().st_mtime for p in out_dir.glob("trials/*/summary.json")}
    assert len(finished) == 1
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    output = log.read_text()
    assert "Traceback" not in output and "Tuner.restore" not in output
    resume = re.search(r"resume it with: (python -m fedray .*)", output).group(1)
    assert f"tune.resume={out_dir}" in resume and not (out_dir / "frontier.parquet").exists()

    words = shlex.split(resume)[1:]  # `python` → this interpreter
    done = subprocess.run([sys.executable, *words, f"hydra.run.dir={tmp_path}/h2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    frame = pd.read_parquet(out_dir / "frontier.parquet")
    assert len(frame) == 2 and frame["trial_id"].is_unique and set(frame["status"]) == {"completed"}
    for trial_id, mtime in finished.items():  # the finished trial is not rerun
        assert (out_dir / "trials" / trial_id / "summary.json").stat().st_mtime == mtime
    summaries = [json.loads(p.read_text()) for p in out_dir.glob("trials/*/summary.json")]
    private = next(s for s in summaries if s["privacy"]["mechanism"] == "dpsgd" and s["privacy"].get("hospitals"))
    assert private["resumed_after_round"] is not None and private["resumed_after_round"] >= 1
    for entry in private["privacy"]["hospitals"]:  # every planned step counted once, not twice, not from zero
        assert entry["steps"] == 4 * 2 * round(1 / entry["sample_rate"])


def test_a_healthy_run_prints_no_error_level_ray_line_and_exports_its_models(tmp_path):
    log, run_dir = tmp_path / "log.txt", tmp_path / "run"
    proc = start([*TINY, "privacy=dpsgd", "privacy.epsilon=3", f"hydra.run.dir={run_dir}", *QUIET], log)
    assert proc.wait(timeout=300) == 0
    output = log.read_text()
    assert "results:" in output
    assert not RAY_ERROR_LINE.search(output), [line for line in output.splitlines() if RAY_ERROR_LINE.search(line)]
    # Both models load with torch alone into the architecture the run trained (GroupNorm under DP-SGD).
    import torch

    from conftest import backbone
    from fedray.models import build_model
    from fedray.privacy.opacus_wiring import make_dp_compatible

    model = make_dp_compatible(build_model(backbone("small_cnn"), num_classes=3, image_size=16))
    for name in ("final_model.pt", "best_val_model.pt"):
        state = torch.load(run_dir / name, weights_only=True)
        model.load_state_dict(state)
        assert set(state) == set(model.state_dict())


def test_an_unreachable_cluster_is_one_line_naming_the_address_within_the_bound(tmp_path):
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "fedray", "cluster=remote", f"cluster.address=ray://127.0.0.1:{port}",
                           *TINY], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and time.monotonic() - started < 60
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fedray: error:") and f"127.0.0.1:{port}" in lines[0]
    assert "cluster=local" in lines[0] and "Traceback" not in done.stderr
