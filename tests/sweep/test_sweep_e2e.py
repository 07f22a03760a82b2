"""The sweep end to end: CLI → Tune trials in placement groups → frontier.parquet (and MLflow, read back through
its server's REST API and its UI in headless Chromium); resume; multi-node."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import TINY

from fedray.__main__ import main
from fedray.sweep.frontier import FRONTIER_SCHEMA, SCHEMA_VERSION

# Two hospital actors a trial, as a 2-core laptop's default (the session's Ray declares 8 CPUs so that several
# experiments fit at once, which would give each trial five).
# The audit's loss-threshold attack alone (no reference models to train): the frontier's attack columns are what
# these tests read; LiRA is tested in tests/audit.
SWEEP = ["+sweep=privacy_tradeoff", *TINY, "fl.actors=2", "audit.enabled=true", "audit.reference_models=0",
         "fl.rounds=1", "sweep.space.lr=[0.05]", "sweep.space.epsilon=[1.0,inf]", "hydra/job_logging=none",
         "hydra/hydra_logging=none"]
ROOT = Path(__file__).resolve().parents[2]


def trial_summaries(out_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in out_dir.glob("trials/*/summary.json")}


@pytest.fixture(scope="module")
def tracked_sweep(ray_session, tmp_path_factory) -> tuple[Path, Path]:
    """The two-trial sweep, run once from the CLI with tracking=mlflow: (its folder, its outputs folder)."""
    tmp_path = tmp_path_factory.mktemp("tracked")
    out_dir, outputs = tmp_path / "sweep", tmp_path / "outputs"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["fedray", *SWEEP, f"tune.out_dir={out_dir}", f"hydra.run.dir={tmp_path}/h",
                                    "tracking=mlflow", f"paths.output_dir={outputs}"])
        main()
    return out_dir, outputs


def test_two_trial_sweep_writes_a_valid_frontier(tracked_sweep):
    out_dir, _ = tracked_sweep
    frontier = pd.read_parquet(out_dir / "frontier.parquet")
    assert len(frontier) == 2 and set(frontier["status"]) == {"completed"}
    assert set(FRONTIER_SCHEMA.names) <= set(frontier.columns)
    assert {"param_backbone", "param_lr", "param_epsilon"} <= set(frontier.columns)
    assert frontier["schema_version"].eq(SCHEMA_VERSION).all()
    assert pq.read_metadata(out_dir / "frontier.parquet").metadata[b"fedray.schema_version"] == \
        str(SCHEMA_VERSION).encode()
    private = frontier[frontier["param_epsilon"] == 1.0].iloc[0]
    assert 0 < private["epsilon_spent"] <= 1.0 and private["noise_multiplier"] > 0
    assert frontier["attack_auc"].between(0, 1).all()
    for name in ("trial_rounds.parquet", "frontier.png", "report.md"):
        assert (out_dir / name).stat().st_size > 0
    # Each trial's driver and hospitals ran inside that trial's own placement group.
    groups = []
    for summary in trial_summaries(out_dir).values():
        placement = summary["placement"]
        group = placement["driver"]["placement_group"]
        assert group and all(h["placement_group"] == group for h in placement["hospitals"])
        groups.append(group)
    assert len(set(groups)) == 2


@pytest.fixture(scope="module")
def mlflow_server(tracked_sweep):
    """``mlflow server`` on loopback over the store the tracked sweep wrote; yields its base URL."""
    _, outputs = tracked_sweep
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1", "--backend-store-uri", f"sqlite:///{outputs / 'mlflow.db'}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"mlflow server did not start: {server.stderr.read()[-2000:]}") from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def rest(url: str, endpoint: str, body: dict | None = None, **query) -> dict:
    """One call to MLflow's REST API (``/api/2.0/mlflow/<endpoint>``): POST ``body``, or GET with ``query``."""
    address = f"{url}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(address, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def tracked_runs(url: str) -> tuple[str, dict[str, dict]]:
    """The sweep's experiment id and its runs by ``fedray.kind`` tag and run name."""
    experiment = rest(url, "experiments/get-by-name", experiment_name="privacy_tradeoff")["experiment"]
    runs = rest(url, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    return experiment["experiment_id"], {run["info"]["run_name"]: run for run in runs}


def test_the_mlflow_server_serves_both_trials_their_metrics_and_artifacts(tracked_sweep, mlflow_server):
    out_dir, _ = tracked_sweep
    _, runs = tracked_runs(mlflow_server)
    trials = [run for run in runs.values() if _tag(run, "fedray.kind") == "trial"]
    assert len(trials) == 2 and all(run["info"]["status"] == "FINISHED" for run in trials)
    by_epsilon = {_param(run, "epsilon"): run for run in trials}
    assert set(by_epsilon) == {"1.0", "inf"}
    frontier = pd.read_parquet(out_dir / "frontier.parquet").set_index("param_epsilon")
    for epsilon, run in by_epsilon.items():
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert metrics["test_balanced_accuracy"] == pytest.approx(
            frontier.loc[float(epsilon), "test_balanced_accuracy"])
        history = rest(mlflow_server, "metrics/get-history", run_id=run["info"]["run_id"], metric_key="val_accuracy")
        assert [m["step"] for m in history["metrics"]] == [1]  # one round, one report
        files = {f["path"] for f in rest(mlflow_server, "artifacts/list", run_id=run["info"]["run_id"])["files"]}
        assert {"final_model.pt", "summary.json", "config.yaml", "learning_curve.png"} <= files
        assert not any("checkpoint" in name for name in files)  # checkpoints hold secrets: never tracked
    private = {m["key"]: m["value"] for m in by_epsilon["1.0"]["data"]["metrics"]}
    assert 0 < private["epsilon"] <= 1.0 and private["delta"] > 0 and "audit_attack_epsilon_lower_bound" in private
    frontier_run = runs["frontier"]["info"]["run_id"]
    files = {f["path"] for f in rest(mlflow_server, "artifacts/list", run_id=frontier_run)["files"]}
    assert {"frontier.png", "report.md", "frontier.parquet"} <= files


@pytest.mark.slow  # needs Debian's chromium (apt-get install chromium); the REST test above reads the same store
def test_the_mlflow_ui_renders_a_trials_metrics_in_headless_chromium(tracked_sweep, mlflow_server, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed: apt-get install chromium"
    experiment_id, runs = tracked_runs(mlflow_server)
    trial = next(run for run in runs.values()
                 if _tag(run, "fedray.kind") == "trial" and _param(run, "epsilon") == "1.0")
    page = f"{mlflow_server}/#/experiments/{experiment_id}/runs/{trial['info']['run_id']}"
    # The machine's closed network: no background connections, or Chromium stalls on them.
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--virtual-time-budget=30000", "--window-size=1400,1000"]
    dom = subprocess.run([chromium, *flags, f"--user-data-dir={tmp_path / 'dom'}", "--dump-dom", page],
                         capture_output=True, text=True, timeout=120).stdout
    for name in ("val_balanced_accuracy", "test_auc", "epsilon_spent"):  # the private trial's: it has an epsilon
        assert name in dom, f"{name} is not on the run page"
    shot = tmp_path / "mlflow_run_page.png"  # kept with the test's temporary files, for a look
    subprocess.run([chromium, *flags, f"--user-data-dir={tmp_path / 'shot'}", f"--screenshot={shot}", page],
                   capture_output=True, timeout=120)
    assert shot.read_bytes()[:4] == b"\x89PNG"


def _tag(run: dict, key: str) -> str | None:
    return next((t["value"] for t in run["data"].get("tags", []) if t["key"] == key), None)


def _param(run: dict, key: str) -> str | None:
    return next((p["value"] for p in run["data"].get("params", []) if p["key"] == key), None)


def test_seed_isic_runs_every_backbone_by_mode_and_writes_the_utility_table(ray_session, tmp_path):
    from test_cli import image_folder

    import fedray

    root = image_folder(tmp_path / "isic", {"melanoma": 50, "nevus": 50})  # 5 per class in validation
    out_dir = tmp_path / "seed"
    # from Python this time: fedray.sweep(name, overrides) returns the sweep's Frontier. One hospital actor a trial
    # gives every mode the same placement bundles, so that, one trial at a time, the next trial reuses the last one's
    # trial, driver and hospital actors (tune.reuse_actors) instead of starting its own.
    swept = fedray.sweep("seed_isic", [f"data.root={root}", "data.image_size=16", "fl.rounds=1", "fl.actors=1",
                                       "tune.max_concurrent_trials=1", "sweep.space.backbone=[small_cnn]",
                                       f"tune.out_dir={out_dir}"])
    assert swept.path == out_dir and swept.best()["status"] == "completed"
    frontier = swept.frame
    assert sorted(frontier["mode"]) == ["centralized", "federated", "local"]
    assert set(frontier["status"]) == {"completed"} and frontier["test_balanced_accuracy"].notna().all()
    sizes = {s["mode"]: s["data"]["hospital_train_sizes"] for s in trial_summaries(out_dir).values()}
    assert len(sizes["federated"]) == len(sizes["local"]) == 5 and len(sizes["centralized"]) == 1
    tables = (out_dir / "tables.md").read_text()
    assert "Utility by configuration" in tables and "balanced accuracy" in tables
    assert (out_dir / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_refuses_a_directory_of_another_sweep(tmp_path):
    (tmp_path / "sweep.json").write_text(json.dumps({"sweep": "other", "space": {}}))
    proc = subprocess.run([sys.executable, "-m", "fedray", *SWEEP, f"tune.resume={tmp_path}",
                           f"hydra.run.dir={tmp_path}/h"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("fedray: error:")
    assert "holds sweep 'other'" in proc.stderr and "Traceback" not in proc.stderr


MULTI_NODE = """
import json, sys, ray
from ray.cluster_utils import Cluster
sys.path.insert(0, "tests")
from conftest import compose_typed, TINY
from fedray.sweep.runner import run_sweep

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
for _ in range(2):  # two "GPU" nodes: each fits one trial (2 x 0.4 + 0.1 GPU) but not two
    cluster.add_node(num_cpus=2, num_gpus=1)
ray.init(address=cluster.address, log_to_driver=False)
overrides = ["+sweep=privacy_tradeoff", *TINY, "fl.num_hospitals=2", "fl.rounds=1", "audit.enabled=false",
             "sweep.space.lr=[0.05]", "sweep.space.epsilon=[1.0,inf]",
             "resources.hospital.num_gpus=0.4", "resources.driver.num_gpus=0.1"]
cfg = compose_typed([*overrides, f"tune.out_dir={sys.argv[1]}"], sys.argv[1])
records = run_sweep(cfg, overrides=[o.lstrip("+") if o.startswith("+sweep=") else o for o in overrides])["records"]
print(json.dumps([r["summary"].placement for r in records]))
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.slow
@pytest.mark.spawns_ray  # a multi-node Ray cluster in a subprocess
def test_trials_spread_over_nodes_and_keep_their_actors_in_their_group(tmp_path):
    proc = subprocess.run([sys.executable, "-c", MULTI_NODE, str(tmp_path / "sweep")], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, env={**os.environ, "RAY_DEDUP_LOGS": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    placements = json.loads(proc.stdout.strip().splitlines()[-1])
    nodes = set()
    for placement in placements:
        group = placement["driver"]["placement_group"]
        assert all(h["placement_group"] == group for h in placement["hospitals"])
        trial_nodes = {placement["driver"]["node"], *(h["node"] for h in placement["hospitals"])}
        assert len(trial_nodes) == 1  # one trial packs onto one GPU node
        nodes |= trial_nodes
    assert len(nodes) == 2  # the two trials ran on different nodes
