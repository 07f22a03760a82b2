"""The sweep's search space: named axes over config fields (pure, no Ray).

Each trial's config is composed by Hydra from the sweep's command line plus
one override per axis (:func:`trial_config`), never by editing a config by
hand, so interpolations and defaults lists hold in trials too.

``sweep.space`` maps an axis name to the list of values to sweep, e.g.
``{"backbone": ["small_cnn"], "lr": [0.01, 0.05], "epsilon": [1.0, inf]}``.
``sweep.axes`` maps each axis name to the config path it sets (``lr`` →
``train.lr``). An axis may also map to a whole config group (``model``,
``privacy``): a value is then the name of a file in that group's folder, so a
pretrained backbone keeps its own pretrained/fine-tuning settings. Groups
joined by ``+`` take values joined by ``/``: the axis ``method`` maps to
``model+privacy``, so ``mlp/dpsgd`` and ``random_forest/dp_tree`` sweep model
and mechanism together (a grid of the two would hold pairs that do not
exist). Config fields couple the same way: the axis ``federation`` maps to
``fl.num_hospitals+fl.clients_per_round``, so ``5/5`` and ``500/50`` sweep
the number of hospitals K with the expected participants per round m (each
hospital takes part with probability q = m/K, :mod:`fedray.strategies.sampling`),
where a grid would pair every m with every K, ``m > K`` included (each trial's
config is checked before Ray starts, so such a value is one line). Group axes
are applied before field axes, so ``epsilon`` lands in the chosen mechanism.
The ``strategy`` group's options are the registered strategies (:data:`fedray.strategies.REGISTRY`), each with its
``conf/strategy/<name>.yaml`` of tuned values: the axis ``strategy`` maps to
it, and a value that is not a registered strategy with an option file is
refused before any trial; ``server_lr`` and ``proximal_mu`` set the chosen
strategy's knob (``strategy.server_lr``). An axis whose name is not in ``sweep.axes`` but is itself a
dotted config path (``fl.partition.alpha``) is accepted too, so any field can
become an axis.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import yaml

from fedray.config import Config, compose_config
from fedray.config.compose import group_options
from fedray.config.schema import Sweep
from fedray.errors import FedrayError
from fedray.strategies import REGISTRY

GROUPS = ("model", "privacy", "strategy")
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
    "num_hospitals": "fl.num_hospitals",
    "federation": "fl.num_hospitals+fl.clients_per_round",
    "batch_size": "train.batch_size",
    "folds": "cv.folds",
    "strategy": "strategy",
    "server_lr": "strategy.server_lr",
    "proximal_mu": "strategy.proximal_mu",
    "clients_per_round": "fl.clients_per_round",
    "secure_aggregation": "fl.secure_aggregation",
}


def axis_paths(sweep: Sweep, base_cfg: Config) -> dict[str, str]:
    """Each axis → the config path it sets; unknown or empty axes are a one-line error."""
    space = sweep.space or {}
    if not space:
        raise FedrayError("sweep.space is empty: give at least one axis, e.g. sweep.space.epsilon=[1,10]")
    aliases = {**AXES, **(sweep.axes or {})}
    # a field of a group another axis sweeps (strategy.server_lr beside strategy) is the chosen option's: each
    # trial's composition checks it, the base config's option may lack it
    swept_groups = {part for axis in space for part in aliases.get(axis, axis).split("+") if part in GROUPS}
    paths = {}
    for axis, values in space.items():
        if not isinstance(values, (list, tuple)) or len(values) == 0:
            raise FedrayError(f"sweep axis {axis!r} has no values: give a list, e.g. sweep.space.{axis}=[1,10]")
        path = aliases.get(axis, axis)
        for part in path.split("+"):
            if part not in GROUPS and not _has_path(base_cfg, part) and part.split(".")[0] not in swept_groups:
                what = f"sweep axis {axis!r}: no config path {part!r}" if part != path else \
                    f"unknown sweep axis {axis!r}"
                raise FedrayError(f"{what}: use one of {', '.join(sorted(aliases))} or a config path such as "
                                  "fl.partition.alpha")
        if "strategy" in path.split("+"):
            _check_strategies(axis, values, path)
        paths[axis] = path
    return paths


def _check_strategies(axis: str, values, path: str) -> None:
    """Each value (its ``strategy`` option) is a registered strategy with its ``conf/strategy/<name>.yaml``."""
    position = path.split("+").index("strategy")
    for value in values:
        options = str(value).split("/")
        name = options[position] if len(options) > position else str(value)
        if name not in REGISTRY:
            raise FedrayError(f"sweep axis {axis!r} value {value!r}: {name!r} is not a strategy; use one of "
                              f"{', '.join(REGISTRY)}")
        if name not in group_options("strategy"):
            raise FedrayError(f"sweep axis {axis!r} value {value!r}: strategy {name!r} has no "
                              f"conf/strategy/{name}.yaml (its settings); add one")


def normalise_space(space: dict) -> dict:
    """Axis values as YAML would read them: a command-line ``.inf`` or ``1e-3`` arrives as a string."""
    def value(v):
        if isinstance(v, str):
            parsed = yaml.safe_load(v)
            return parsed if isinstance(parsed, float) else v
        return v
    return {axis: [value(v) for v in values] if isinstance(values, (list, tuple)) else values
            for axis, values in space.items()}


def grid(space: dict) -> list[dict]:
    """Every combination of the axes' values, in a stable order (the trials of a grid sweep)."""
    names = list(space)
    return [dict(zip(names, combo)) for combo in itertools.product(*(space[n] for n in names))]


def trial_overrides(base_overrides: list[str], params: dict, paths: dict[str, str]) -> list[str]:
    """The Hydra overrides of one trial: the sweep's command line, then one override per axis value.

    A group axis (``model``, ``model+privacy``) selects config files, so a
    pretrained backbone keeps its own settings; a field axis sets the field;
    a coupled axis (``+``-joined, ``federation``) sets each of its parts to
    its own part of the ``/``-joined value, verbatim as on the command line.
    Base overrides of a key an axis sets are dropped: the axis decides.
    """
    axis_overrides = []
    for axis, value in params.items():
        path = paths[axis]
        if _is_group_path(path) or "+" in path:
            parts, options = path.split("+"), str(value).split("/")
            if len(options) != len(parts):
                one, example = ("option per group", "name") if _is_group_path(path) else ("value per part", "value")
                raise FedrayError(f"sweep axis {axis!r} value {value!r}: give one {one} of {path}, joined by '/', "
                                  f"e.g. {'/'.join([example] * len(parts))}")
            axis_overrides += [f"{part}={option}" for part, option in zip(parts, options)]
        else:
            axis_overrides.append(f"{path}={_override_value(value)}")
    taken = {o.partition("=")[0] for o in axis_overrides}
    kept = [o for o in base_overrides if o.lstrip("+~").partition("=")[0] not in taken]
    return kept + axis_overrides


def trial_config(base_overrides: list[str], params: dict, paths: dict[str, str], *, run_dir=None) -> Config:
    """One trial's typed config, composed by Hydra exactly as ``python -m fedray <overrides>`` would."""
    return compose_config(trial_overrides(base_overrides, params, paths), run_dir=run_dir)


def _override_value(value) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _is_group_path(path: str) -> bool:
    return all(part in GROUPS for part in path.split("+"))


def _has_path(cfg, path: str) -> bool:
    node = cfg
    for key in path.split("."):
        if not dataclasses.is_dataclass(node) or not hasattr(node, key):
            return False
        node = getattr(node, key)
    return True
