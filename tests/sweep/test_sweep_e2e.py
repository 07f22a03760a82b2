"""The sweep end to end: CLI → Tune trials in placement groups → frontier.parquet; resume; multi-node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import TINY

from fedray.__main__ import main
from fedray.sweep.frontier import FRONTIER_SCHEMA, SCHEMA_VERSION

SWEEP = ["+sweep=privacy_tradeoff", *TINY, "audit.enabled=true", "fl.rounds=1", "sweep.space.lr=[0.05]", "sweep.space.epsilon=[1.0,inf]",
         "hydra/job_logging=none", "hydra/hydra_logging=none"]
ROOT = Path(__file__).resolve().parents[2]


def trial_summaries(out_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in out_dir.glob("trials/*/summary.json")}


def test_two_trial_sweep_writes_a_valid_frontier(ray_session, tmp_path, monkeypatch):
    out_dir = tmp_path / "sweep"
    monkeypatch.setattr(sys, "argv", ["fedray", *SWEEP, f"tune.out_dir={out_dir}", f"hydra.run.dir={tmp_path}/h"])
    main()
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


def test_seed_isic_runs_every_backbone_by_mode_and_writes_the_utility_table(ray_session, tmp_path):
    from test_cli import image_folder

    import fedray

    root = image_folder(tmp_path / "isic", {"melanoma": 50, "nevus": 50})  # 5 per class in validation
    out_dir = tmp_path / "seed"
    # from Python this time: fedray.sweep(name, overrides) returns the sweep's Frontier
    swept = fedray.sweep("seed_isic", [f"data.root={root}", "data.image_size=16", "fl.rounds=1",
                                       "sweep.space.backbone=[small_cnn]", f"tune.out_dir={out_dir}"])
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
for _ in range(2):  # two "GPU" nodes: each fits one trial (5 x 0.15 + 0.1 GPU) but not two
    cluster.add_node(num_cpus=2, num_gpus=1)
ray.init(address=cluster.address, log_to_driver=False)
overrides = ["+sweep=privacy_tradeoff", *TINY, "fl.rounds=1", "audit.enabled=false",
             "sweep.space.lr=[0.05]", "sweep.space.epsilon=[1.0,inf]",
             "resources.hospital.num_gpus=0.15", "resources.driver.num_gpus=0.1"]
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
