"""The sweep's search space: named axes over config fields (pure, no Ray).

``sweep.space`` maps an axis name to the list of values to sweep, e.g.
``{"backbone": ["small_cnn"], "lr": [0.01, 0.05], "epsilon": [1.0, inf]}``.
``sweep.axes`` maps each axis name to the config path it sets (``lr`` →
``train.lr``). An axis may also map to a whole config group (``model``,
``privacy``): a value is then the name of a file in that group's folder, so a
pretrained backbone keeps its own pretrained/fine-tuning settings. Groups
joined by ``+`` take values joined by ``/``: the axis ``method`` maps to
``model+privacy``, so ``mlp/dpsgd`` and ``random_forest/dp_tree`` sweep model
and mechanism together (a grid of the two would hold pairs that do not
exist). Group axes are applied before field axes, so ``epsilon`` lands in the
chosen mechanism. An axis whose name is not in ``sweep.axes`` but is itself a
dotted config path (``fl.partition.alpha``) is accepted too, so any field can
become an axis.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import yaml

from fedray.errors import FedrayError

GROUPS = ("model", "privacy")
# Axis name -> config path, for every sweep; a sweep's own ``sweep.axes`` adds to or overrides these.
AXES = {
    "backbone": "model",
    "model": "model",
    "method": "model+privacy",
    "mechanism": "privacy",
    "mode": "mode",
    "lr": "train.lr",
    "epsilon": "privacy.epsilon",
    "clip": "privacy.max_grad_norm",
    "delta": "privacy.delta",
    "alpha": "fl.partition.alpha",
    "partition": "fl.partition.scheme",
    "local_epochs": "fl.local_epochs",
    "rounds": "fl.rounds",
    "hospitals": "fl.num_hospitals",
    "batch_size": "train.batch_size",
    "folds": "cv.folds",
}


def axis_paths(sweep_cfg: dict, base_cfg: dict) -> dict[str, str]:
    """Each axis → the config path it sets; unknown or empty axes are a one-line error."""
    space = sweep_cfg.get("space") or {}
    if not space:
        raise FedrayError("sweep.space is empty: give at least one axis, e.g. sweep.space.epsilon=[1,10]")
    aliases = {**AXES, **(sweep_cfg.get("axes") or {})}
    paths = {}
    for axis, values in space.items():
        if not isinstance(values, (list, tuple)) or len(values) == 0:
            raise FedrayError(f"sweep axis {axis!r} has no values: give a list, e.g. sweep.space.{axis}=[1,10]")
        path = aliases.get(axis, axis)
        if not _is_group_path(path) and not _has_path(base_cfg, path):
            known = ", ".join(sorted(aliases))
            raise FedrayError(
                f"unknown sweep axis {axis!r}: use one of {known} or a config path such as fl.partition.alpha"
            )
        paths[axis] = path
    return paths


def normalise_space(space: dict) -> dict:
    """Axis values as YAML would read them: a command-line ``.inf`` or ``1e-3`` arrives as a string."""
    def value(v):
        if isinstance(v, str):
            parsed = yaml.safe_load(v)
            return parsed if isinstance(parsed, float) else v
        return v
    return {axis: [value(v) for v in values] if isinstance(values, (list, tuple)) else values
            for axis, values in space.items()}


def grid(sweep_cfg: dict) -> list[dict]:
    """Every combination of the axes' values, in a stable order (the trials of a grid sweep)."""
    space = sweep_cfg["space"]
    names = list(space)
    return [dict(zip(names, combo)) for combo in itertools.product(*(space[n] for n in names))]


def apply_params(base_cfg: dict, params: dict, paths: dict[str, str], conf_dir: Path) -> dict:
    """The trial's config: the base config with each axis value written at its path."""
    cfg = copy.deepcopy(base_cfg)
    ordered = sorted(params, key=lambda axis: not _is_group_path(paths[axis]))  # groups first
    for axis in ordered:
        path, value = paths[axis], params[axis]
        if _is_group_path(path):
            groups, options = path.split("+"), str(value).split("/")
            if len(options) != len(groups):
                raise FedrayError(f"sweep axis {axis!r} value {value!r}: give one option per group of {path}, "
                                  f"joined by '/', e.g. {'/'.join(['name'] * len(groups))}")
            for group, option in zip(groups, options):
                cfg[group] = load_group_option(conf_dir, group, option)
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


def _is_group_path(path: str) -> bool:
    return all(part in GROUPS for part in path.split("+"))


def _has_path(cfg: dict, path: str) -> bool:
    node = cfg
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True
