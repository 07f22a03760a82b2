"""The CLI end to end: a full run writes every output; bad input gets one line and exit code 2, before Ray starts
wherever the input shows the problem (only tests marked ``spawns_ray`` start one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from conftest import TINY

from fedray.__main__ import main

def run_cli(monkeypatch, args: list[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["fedray", *args])
    main()


def test_two_round_five_hospital_run_writes_every_output(ray_session, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    # Hydra would reconfigure logging around pytest's captured streams; the CLI's own output is print().
    run_cli(monkeypatch, [*TINY, f"hydra.run.dir={run_dir}", "hydra/job_logging=none", "hydra/hydra_logging=none"])
    out = capsys.readouterr().out
    assert "[round   1/2]" in out and "[round   2/2]" in out and "held-out test: acc" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 2
    assert len(summary["data"]["hospital_train_sizes"]) == 5
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    # per round: global val + test, 5 hospital-val and 5 hospital-train rows
    assert len(rounds) == 2 * (2 + 5 + 5)
    assert set(rounds["round"]) == {1, 2}
    assert (run_dir / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "fl:" in (run_dir / "config.yaml").read_text()
    for name in ("final_model.pt", "best_val_model.pt"):  # the exported models
        assert (run_dir / name).stat().st_size > 0


def fedray_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedray", *args, f"hydra.run.dir={cwd}/run"],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def fedray_cli_before_ray(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI with Ray's temporary folder (``RAY_TMPDIR``) under ``cwd``: Ray creates it as it starts, so its absence
    afterwards shows that the run ended before starting Ray."""
    ray_dir = cwd / "ray-tmp"
    proc = subprocess.run([sys.executable, "-m", "fedray", *args, f"hydra.run.dir={cwd}/run"], capture_output=True,
                          text=True, cwd=cwd, timeout=300, env={**os.environ, "RAY_TMPDIR": str(ray_dir)})
    assert not ray_dir.exists(), f"the run started Ray before it found the problem:\n{proc.stderr[-2000:]}"
    return proc


def image_folder(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        (root / "Train" / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (20, 20), (i * 7 % 255, 40, 90)).save(root / "Train" / name / f"{i}.jpg")
    return root


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fedray: error:") and "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


# Each way the CLI can refuse input, through the real command: a compose error, one found while the data are
# prepared, one found once the privacy plan meets the data, a sweep's own check, a sweep refusing a cluster.
@pytest.mark.parametrize(
    "args, fragments",
    [
        (["data=isic", "data.root=/does/not/exist"], ["data.root"]),
        (["model=resnet5"], ["unknown model", "resnet50"]),
        (["privacy=dpsgd", "privacy.delta=0.5"], ["delta", "1/N"]),
        (["+sweep=privacy_tradeoff", "tune.resume=/nonexistent"], ["holds no fedray sweep"]),
        (["+sweep=privacy_tradeoff", "cluster=inprocess"], ["cluster=inprocess runs one experiment", "cluster=local"]),
    ],
)
def test_bad_input_one_line_no_traceback_before_ray_starts(tmp_path, args, fragments):
    proc = fedray_cli_before_ray(*args, cwd=tmp_path)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "run" / "rounds.parquet").exists()


def raises_before_ray(args: list[str], tmp_path: Path) -> str:
    """The one-line message ``args`` are refused with through the API (what the CLI prints after ``fedray: error:``),
    checked to come before Ray starts. Cheaper than a process per case: the CLI prints ``str(error)`` of any
    :class:`~fedray.errors.FedrayError`, which the cases above check through the real command."""
    import ray

    import fedray

    sweep = next((a.split("=", 1)[1] for a in args if a.startswith("+sweep=")), None)
    rest = [a for a in args if not a.startswith("+sweep=")]
    with pytest.raises(fedray.FedrayError) as refused:
        if sweep:
            fedray.sweep(sweep, [*rest, f"tune.out_dir={tmp_path / 'sweep'}"])
        else:
            fedray.run([*rest, f"paths.output_dir={tmp_path}"])
    assert not ray.is_initialized()
    message = str(refused.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["data=isic"], ["data.root"]),
        (["data=imagenet"], ["unknown data", "synthetic"]),
        (["model=inception_v3", "data.image_size=32"], ["inception_v3", "75"]),
        (["fl.num_hospitals=500"], ["hospital"]),
        (["privacy=dpsgd", "privacy.epsilon=0"], ["epsilon"]),
        (["privacy=dpsgd", "privacy.delta=0"], ["delta"]),
        (["privacy=dpsgd", "privacy.max_grad_norm=-1"], ["max_grad_norm"]),
        (["privacy=dpfedavg", "privacy.delta=0.5"], ["delta", "1/N"]),
        (["+sweep=privacy_tradeoff", "sweep.space.epsilon=[]"], ["sweep axis 'epsilon' has no values"]),
        (["+sweep=privacy_tradeoff", "+sweep.space.momentum=[0.5]"], ["unknown sweep axis 'momentum'"]),
        (["cluster=inprocess", "cluster.placement_timeout_s=5"], ["placement_timeout_s", "not in 'InProcessCluster'"]),
    ],
)
def test_bad_input_is_one_line_before_ray_starts(tmp_path, args, fragments):
    message = raises_before_ray(args, tmp_path)
    for fragment in fragments:
        assert fragment in message
    assert not list(tmp_path.rglob("rounds.parquet"))


@pytest.mark.spawns_ray  # whether a trial fits is a question for the cluster, which must be up to answer it
def test_a_sweep_whose_trials_fit_no_node_ends_in_one_line(tmp_path):
    assert_one_line_error(fedray_cli("+sweep=privacy_tradeoff", "resources.hospital.num_cpus=64", cwd=tmp_path),
                          "CPU")


def test_an_empty_class_folder_is_one_line_before_ray_starts(tmp_path):
    root = image_folder(tmp_path / "data", {"a": 12, "b": 12})
    (root / "Train" / "empty").mkdir()
    assert "empty" in raises_before_ray(["data=isic", f"data.root={root}"], tmp_path)


@pytest.mark.spawns_ray  # a corrupt file shows only while the images decode, and Ray starts alongside that
def test_a_corrupt_image_is_one_line(tmp_path):
    root = image_folder(tmp_path / "data", {"a": 12, "b": 12})
    (root / "Train" / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    assert_one_line_error(fedray_cli("data=isic", f"data.root={root}", "data.on_corrupt=fail", cwd=tmp_path),
                          "broken.jpg")


LOCAL_CONNECT = """
import ray
from fedray.config.schema import LocalCluster
from fedray.federation.cluster import connect
assert connect(LocalCluster(name="local", num_cpus=1, num_gpus=0))
print(ray.get_runtime_context().gcs_address)
ray.shutdown()
"""


@pytest.mark.spawns_ray
def test_local_starts_its_own_ray_and_never_joins_another(monkeypatch):
    # A cluster `ray start` recorded on this machine and left dead: Ray's default joins it and waits for minutes.
    with tempfile.TemporaryDirectory(prefix="r", dir="/tmp") as tmp:  # Ray's socket paths must stay short
        (Path(tmp) / "ray").mkdir()
        (Path(tmp) / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": tmp}
        proc = subprocess.run([sys.executable, "-c", LOCAL_CONNECT], capture_output=True, text=True, env=env,
                              timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] != "127.0.0.1:9"


@pytest.mark.spawns_ray
def test_an_impossible_cpu_request_ends_in_one_line_instead_of_waiting(tmp_path):
    proc = fedray_cli(*TINY, "resources.hospital.num_cpus=64", cwd=tmp_path)  # no node here has 64 CPUs
    assert_one_line_error(proc, "this run needs a bundle with CPU=64", "resources.hospital.num_cpus")


@pytest.mark.spawns_ray
def test_gpus_a_cpu_cluster_only_pretends_to_have_end_in_one_line_instead_of_waiting(tmp_path):
    # cluster.num_gpus=1 declares one GPU; the five hospitals would take turns on as many whole-GPU actors as fit
    # beside the driver's 0.1, and not even one does.
    proc = fedray_cli(*TINY, "cluster.num_gpus=1", "resources.hospital.num_gpus=1", cwd=tmp_path)
    assert_one_line_error(proc, "needs GPU=1.1 in all but the cluster has GPU=1", "resources.hospital")


def test_local_refuses_a_ray_address_in_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    message = raises_before_ray(TINY, tmp_path)
    assert "RAY_ADDRESS=10.0.0.1:6379" in message and "cluster=remote" in message


@pytest.mark.parametrize("args, fragments", [
    (["cluster=remote"], ["needs the cluster's address", "cluster.address=ray://"]),
    (["cluster=remote", "cluster.address=auto"], ["would attach to whatever Ray runs on this machine"]),
])
def test_remote_needs_an_explicit_address_and_never_attaches_to_a_local_ray(tmp_path, monkeypatch, args, fragments):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a job's address would be the explicit one
    message = raises_before_ray(args, tmp_path)
    assert all(fragment in message for fragment in fragments)
