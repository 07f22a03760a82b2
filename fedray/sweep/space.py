"""The sweep's search space: named axes over config fields (pure, no Ray).

``sweep.space`` maps an axis name to the list of values to sweep, e.g.
``{"backbone": ["small_cnn"], "lr": [0.01, 0.05], "epsilon": [1.0, inf]}``.
``sweep.axes`` maps each axis name to the config path it sets (``lr`` →
``train.lr``). The axis ``backbone`` maps to the whole ``model`` group: a
value is the name of a file in ``conf/model/``, so a pretrained backbone keeps
its own pretrained/fine-tuning settings. An axis whose name is not in
``sweep.axes`` but is itself a dotted config path (``fl.partition.alpha``) is
accepted too, so any field can become an axis.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import yaml

from fedray.errors import FedrayError

MODEL_GROUP = "model"


def axis_paths(sweep_cfg: dict, base_cfg: dict) -> dict[str, str]:
    """Each axis → the config path it sets; unknown or empty axes are a one-line error."""
    space = sweep_cfg.get("space") or {}
    if not space:
        raise FedrayError("sweep.space is empty: give at least one axis, e.g. sweep.space.epsilon=[1,10]")
    aliases = sweep_cfg.get("axes") or {}
    paths = {}
    for axis, values in space.items():
        if not isinstance(values, (list, tuple)) or len(values) == 0:
            raise FedrayError(f"sweep axis {axis!r} has no values: give a list, e.g. sweep.space.{axis}=[1,10]")
        path = aliases.get(axis, axis)
        if path != MODEL_GROUP and not _has_path(base_cfg, path):
            known = ", ".join(sorted(aliases))
            raise FedrayError(
                f"unknown sweep axis {axis!r}: use one of {known} or a config path such as fl.partition.alpha"
            )
        paths[axis] = path
    return paths


def grid(sweep_cfg: dict) -> list[dict]:
    """Every combination of the axes' values, in a stable order (the trials of a grid sweep)."""
    space = sweep_cfg["space"]
    names = list(space)
    return [dict(zip(names, combo)) for combo in itertools.product(*(space[n] for n in names))]


def apply_params(base_cfg: dict, params: dict, paths: dict[str, str], conf_dir: Path) -> dict:
    """The trial's config: the base config with each axis value written at its path."""
    cfg = copy.deepcopy(base_cfg)
    for axis, value in params.items():
        path = paths[axis]
        if path == MODEL_GROUP:
            cfg[MODEL_GROUP] = load_group_option(conf_dir, MODEL_GROUP, str(value))
            continue
        *parents, leaf = path.split(".")
        node = cfg
        for key in parents:
            node = node[key]
        node[leaf] = value
    return cfg


def load_group_option(conf_dir: Path, group: str, option: str) -> dict:
    path = conf_dir / group / f"{option}.yaml"
    if not path.is_file():
        choices = ", ".join(sorted(p.stem for p in (conf_dir / group).glob("*.yaml")))
        raise FedrayError(f"unknown {group} {option!r} in the sweep: choose from {choices}")
    return yaml.safe_load(path.read_text())


def _has_path(cfg: dict, path: str) -> bool:
    node = cfg
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True
