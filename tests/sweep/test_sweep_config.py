"""Sweep axes, placement bundles and cluster.yaml, without running Tune."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from conftest import TINY, compose_typed, required_values

from fedray.errors import FedrayError
from fedray.sweep.resources import check_trial_fits, trial_bundles
from fedray.config import replace
from fedray.sweep.space import axis_paths, grid, trial_config, trial_overrides

ROOT = Path(__file__).resolve().parents[2]


SWEEP = ["+sweep=privacy_tradeoff", *TINY]


@pytest.fixture
def sweep_cfg(tmp_path):
    return compose_typed(SWEEP, tmp_path)


def test_default_sweep_is_backbones_by_three_lrs_by_four_epsilons(sweep_cfg):
    space = sweep_cfg.sweep.space
    assert len(space["lr"]) == 3
    assert space["epsilon"][:3] == [0.1, 1.0, 10.0] and math.isinf(space["epsilon"][3])
    assert len(grid(space)) == len(space["backbone"]) * 3 * 4
    assert sweep_cfg.privacy.name == "dpsgd" and sweep_cfg.sweep.optimized_metric.startswith("val_")


def test_axis_values_land_at_their_config_paths_through_hydra(sweep_cfg):
    paths = axis_paths(sweep_cfg.sweep, sweep_cfg)
    cfg = trial_config(SWEEP, {"backbone": "resnet18", "lr": 0.3, "epsilon": 8.0}, paths)
    assert cfg.model.name == "resnet18" and cfg.train.lr == 0.3 and cfg.privacy.epsilon == 8.0
    assert sweep_cfg.train.lr != 0.3  # the base config is not modified
    assert trial_overrides(["train.lr=0.9", "fl.rounds=2"], {"lr": 0.3}, {"lr": "train.lr"}) == \
        ["fl.rounds=2", "train.lr=0.3"]  # the axis decides, the rest of the command line stays


def test_any_config_path_can_be_an_axis(sweep_cfg):
    sweep = replace(sweep_cfg.sweep, space={"fl.partition.alpha": [0.1, 1.0]})
    paths = axis_paths(sweep, sweep_cfg)
    assert trial_config(SWEEP, {"fl.partition.alpha": 0.1}, paths).fl.partition.alpha == 0.1


@pytest.mark.parametrize("space, message", [
    ({}, "sweep.space is empty"),
    ({"epsilon": []}, "has no values"),
    ({"learning_rate": [0.1]}, "unknown sweep axis 'learning_rate'"),
])
def test_empty_or_unknown_axes_are_refused(sweep_cfg, space, message):
    with pytest.raises(FedrayError, match=message):
        axis_paths(replace(sweep_cfg.sweep, space=space), sweep_cfg)


def test_bundles_are_sized_from_the_config(sweep_cfg):
    cfg = replace(sweep_cfg, **{"fl.num_hospitals": 3, "resources.hospital.num_cpus": 0.5, "resources.hospital.num_gpus": 0.2,
                                "resources.driver.num_cpus": 1.0, "resources.driver.num_gpus": 0.1})
    bundles = trial_bundles(cfg, gpus_present=True)
    assert bundles[1] == {"CPU": 1.0, "GPU": 0.1}
    assert bundles[2:] == [{"CPU": 0.5, "GPU": 0.2}] * 3
    assert all("GPU" not in b for b in trial_bundles(cfg, gpus_present=False))
    assert len(trial_bundles(replace(cfg, mode="centralized"), gpus_present=False)) == 3


def test_a_trial_that_fits_no_node_names_the_short_resource():
    bundles = [{"CPU": 0.1}, {"CPU": 1.0}] + [{"CPU": 1.0, "GPU": 0.4}] * 5
    check_trial_fits(bundles, [{"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1}])
    with pytest.raises(FedrayError, match="GPU=2 in all but the cluster has GPU=1"):
        check_trial_fits(bundles, [{"CPU": 16, "GPU": 1}])
    with pytest.raises(FedrayError, match="bundle with GPU=0.4 but the largest node has GPU=0"):
        check_trial_fits(bundles, [{"CPU": 16}])


def test_cluster_yaml_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    import ray

    assert config["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}")
    gpu_nodes = [n for n in config["available_node_types"].values() if n["resources"].get("GPU")]
    assert gpu_nodes and all(n["max_workers"] >= n["min_workers"] for n in gpu_nodes)


def test_seed_isic_is_the_papers_study_backbone_by_mode(tmp_path):
    base = ["+sweep=seed_isic", "data.root=/data/isic"]
    cfg = compose_typed(base, tmp_path)
    assert cfg.data.whitening == "pca" and cfg.data.image_size == 128
    assert (cfg.data.split.train, cfg.data.split.val, cfg.data.split.test) == (0.7, 0.1, 0.2)
    assert cfg.fl.num_hospitals == 5 and cfg.fl.partition.scheme == "equal_per_class"
    assert cfg.privacy.name == "none"
    trials = grid(cfg.sweep.space)
    assert {(t["backbone"], t["mode"]) for t in trials} == {
        (b, m) for b in ("vgg19", "resnet50", "inception_v3") for m in ("federated", "centralized", "local")}
    paths = axis_paths(cfg.sweep, cfg)
    trial = trial_config(base, {"backbone": "resnet50", "mode": "centralized"}, paths)
    assert trial.model.name == "resnet50" and trial.mode == "centralized"


def test_method_axis_sets_model_and_mechanism_together(tmp_path):
    cfg = compose_typed(["+sweep=ehr_tradeoff"], tmp_path)
    paths = axis_paths(cfg.sweep, cfg)
    assert paths["method"] == "model+privacy"
    trial = trial_config(["+sweep=ehr_tradeoff"], {"epsilon": 0.5, "method": "random_forest/dp_tree"}, paths)
    assert trial.model.name == "random_forest" and trial.privacy.name == "dp_tree" and trial.privacy.epsilon == 0.5
    with pytest.raises(FedrayError, match="one option per group of model\\+privacy"):
        trial_config(["+sweep=ehr_tradeoff"], {"method": "mlp"}, paths)


@pytest.mark.parametrize("name", [p.stem for p in sorted((ROOT / "conf" / "sweep").glob("*.yaml"))])
def test_every_sweep_composes_into_trials_whose_pairs_exist(tmp_path, name):
    from fedray.models import model_family
    from fedray.privacy.mechanisms import check_pair

    base = [f"+sweep={name}", *required_values([f"+sweep={name}"])]  # data.root for the ISIC sweeps
    cfg = compose_typed(base, tmp_path)
    paths = axis_paths(cfg.sweep, cfg)
    for params in grid(cfg.sweep.space):
        trial = trial_config(base, params, paths)
        check_pair(trial.model.name, model_family(trial.model.name), trial.privacy.name)
