"""From Hydra to the typed config every component receives.

There is one way to build a config: Hydra composes ``conf/`` with overrides,
and :func:`to_typed` resolves every interpolation, makes every field a
schema declares a path (:func:`fedray.config.checks.path`) absolute,
turns the result into the frozen dataclasses of :mod:`fedray.config.schema`
and validates it. The CLI composes through ``@hydra.main``; sweep trials and
tests through :func:`compose_config` with the trial's overrides, so a trial's
config is exactly what ``python -m fedray <the same overrides>`` would run.

``+sweep=<name>`` (the documented entry point) and ``sweep=<name>`` are the
same thing: the root defaults list holds ``sweep: null``, as
lightning-hydra-template's does, and :func:`normalise_overrides` drops the
``+`` that Hydra would otherwise reject for a group already in that list.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from fedray.config.checks import is_path, validate
from fedray.config.schema import Config, register
from fedray.errors import FedrayError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
NULL_DEFAULT_GROUPS = ("sweep", "experiment")
CONFIG_GROUPS = ("data", "model", "strategy", "audit", "fl", "privacy", "cluster", "paths", "tune", "sweep", "experiment")

register()


def normalise_overrides(overrides: list[str]) -> list[str]:
    """``+sweep=x`` → ``sweep=x`` (and for ``experiment``): both groups are ``null`` in the root defaults."""
    out = []
    for item in overrides:
        key = item[1:].partition("=")[0] if item.startswith("+") else None
        item = item[1:] if key in NULL_DEFAULT_GROUPS else item
        # YAML spells infinity .inf; Hydra's override grammar spells it inf
        out.append(re.sub(r"(?<=[=,\[])(-?)\.inf(?=$|[],])", r"\1inf", item))
    return out


def check_group_choices(overrides: list[str]) -> None:
    """Name an unknown config choice (``model=resnet5``) in one line, before Hydra's longer message."""
    for arg in overrides:
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep and key in CONFIG_GROUPS and value and value != "null" and value not in group_options(key):
            raise FedrayError(f"unknown {key} {value!r}: choose one of {', '.join(group_options(key))}")


def group_options(group: str) -> list[str]:
    """A group's choices: its ``conf/<group>/*.yaml`` files, and any option a caller stored in Hydra's ConfigStore
    under that group (as a test does for the strategy it defines), which Hydra composes alike."""
    files = {p.stem for p in (CONF_DIR / group).glob("*.yaml")}
    try:
        stored = {name.removesuffix(".yaml") for name in ConfigStore.instance().list(group)}
    except OSError:  # nothing stored under the group
        stored = set()
    return sorted(files | stored)


def compose_config(overrides: list[str], *, run_dir: str | Path | None = None) -> Config:
    """Compose ``conf/config.yaml`` with ``overrides`` and return the validated typed config."""
    overrides = normalise_overrides(list(overrides))
    check_group_choices(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            composed = compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException, AttributeError) as err:  # some bad merges surface as a bare AttributeError
        raise FedrayError(composition_error(err)) from None
    finally:
        GlobalHydra.instance().clear()
    return to_typed(composed, run_dir=run_dir)


def composition_error(err: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line errors as one line that names the override."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    cause = err.__cause__
    detail = ""
    if cause is not None:
        detail = next((line.strip() for line in str(cause).splitlines() if line.strip()), "")
    head = lines[0] if lines else type(err).__name__
    if detail and detail not in head:
        head = f"{head}: {detail}"
    return f"{head} (check the key and the value's type; `python -m fedray --cfg job` prints the config)"


def to_typed(cfg: DictConfig, *, run_dir: str | Path | None = None) -> Config:
    """Resolve, make paths absolute, set ``run_dir``, convert to frozen dataclasses and validate."""
    cfg = cfg.copy()
    with open_dict(cfg):
        if "hydra" in cfg:
            del cfg["hydra"]
        try:
            OmegaConf.resolve(cfg)
        except OmegaConfBaseException as err:
            raise FedrayError(composition_error(err)) from None
        if run_dir is not None:
            cfg.run_dir = str(Path(run_dir).resolve())
        _absolute_paths(cfg)  # actors in other working directories read them
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        key = missing[0]
        raise FedrayError(f"{key} must be set: add {key}=<value> to the command line")
    _refuse_unknown_keys(cfg)
    typed = OmegaConf.to_object(cfg)
    validate(typed)
    return typed


def _absolute_paths(node: DictConfig) -> None:
    """Every set path field of the composed tree, resolved in place (a ``???`` one is left to the missing check)."""
    schema = OmegaConf.get_type(node)
    fields = {f.name: f for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}
    for key in node.keys():
        if OmegaConf.is_missing(node, key):
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none():
            _absolute_paths(child)
        elif key in fields and is_path(fields[key]) and isinstance(node[key], str) and node[key]:
            node[key] = str(Path(node[key]).expanduser().resolve())


def path_fields(node, prefix: str = "") -> dict[str, str | None]:
    """``{dotted key: value}`` of every path field of a typed config (sub)tree (a sweep pins them for its trials)."""
    found: dict[str, str | None] = {}
    if not dataclasses.is_dataclass(node):
        return found
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if is_path(f):
            found[f"{prefix}{f.name}"] = value
        else:
            found |= path_fields(value, prefix=f"{prefix}{f.name}.")
    return found


def _refuse_unknown_keys(node: DictConfig, prefix: str = "") -> None:
    """A key a schema does not declare (``+model.hidden=8`` on logreg) is an error, not silently dropped."""
    schema = OmegaConf.get_type(node)
    declared = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    for key in node.keys():
        if declared is not None and key not in declared:
            raise FedrayError(f"unknown key {prefix}{key}: {prefix[:-1] or 'the config'} takes "
                              f"{', '.join(sorted(declared))}")
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            _refuse_unknown_keys(child, prefix=f"{prefix}{key}.")


def as_dict(cfg) -> dict:
    """The typed config (or a section) as plain JSON/YAML-ready containers."""
    return dataclasses.asdict(cfg)


def replace(cfg, **changes):
    """A copy of a frozen config node with dotted-path ``changes`` (``{"fl.rounds": 1}``) applied."""
    nested: dict[str, dict] = {}
    direct = {}
    for path, value in changes.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, sub in nested.items():
        direct[head] = replace(getattr(cfg, head), **sub)
    return dataclasses.replace(cfg, **direct)
