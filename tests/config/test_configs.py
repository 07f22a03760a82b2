"""Every config option composes into the typed config; every invalid value is one line before Ray starts.

After lightning-hydra-template's ``tests/test_configs.py``: each option of each group (and each sweep and
pinned experiment) is composed through Hydra into :class:`fedray.config.Config`; then the CLI is run on
one bad value per group and must exit 2 with a single ``fedray: error:`` line naming the key.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import required_values

from fedray.config import CONF_DIR, Config, compose_config, replace
from fedray.config.schema import GROUP_SCHEMAS
from fedray.errors import FedrayError

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = [(group, path.stem) for group in ("data", "model", "fl", "privacy", "cluster", "paths", "tune", "sweep",
                                            "experiment")
           for path in sorted((CONF_DIR / group).glob("*.yaml"))]


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_of_every_group_composes_into_the_typed_config(group, option):
    prefix = "+" if group in ("sweep", "experiment") else ""
    choice = f"{prefix}{group}={option}"
    cfg = compose_config([choice, *required_values([choice])])  # dummy data.root etc. where the YAML has ???
    assert isinstance(cfg, Config)
    section = getattr(cfg, group, None)
    if group in GROUP_SCHEMAS and section is not None:
        assert dataclasses.is_dataclass(section)
        with pytest.raises(dataclasses.FrozenInstanceError):  # read-only once built
            setattr(section, dataclasses.fields(section)[0].name, None)


def test_yaml_is_the_only_home_of_defaults():
    for schema in (Config, *(s for options in GROUP_SCHEMAS.values() for s in options.values())):
        for f in dataclasses.fields(schema):
            assert f.default is dataclasses.MISSING or repr(f.default) == "'???'", (schema.__name__, f.name)
            assert f.default_factory is dataclasses.MISSING, (schema.__name__, f.name)


INVALID = [
    (["fl.rounds=0"], "fl.rounds"),
    (["fl.local_epochs=-1"], "fl.local_epochs"),
    (["fl.partition.alpha=0"], "fl.partition.alpha"),
    (["fl.clients_per_round=0"], "fl.clients_per_round"),
    (["train.lr=-0.1"], "train.lr"),
    (["train.batch_size=0"], "train.batch_size"),
    (["train.momentum=1.5"], "train.momentum"),
    (["privacy=dpsgd", "privacy.epsilon=nan"], "privacy.epsilon"),
    (["privacy=dpsgd", "privacy.max_grad_norm=inf"], "privacy.max_grad_norm"),
    (["privacy=dpsgd", "privacy.grad_sample_mode=vmap"], "privacy.grad_sample_mode"),
    (["data.split.train=0.5"], "data.split"),
    (["data.augment=rotate"], "data.augment"),
    (["model.finetune=some"], "model.finetune"),
    (["audit.max_records=0"], "audit.max_records"),
    (["cv.folds=0"], "cv.folds"),
    (["tune.num_samples=0"], "tune.num_samples"),
    (["cluster.num_cpus=0"], "cluster.num_cpus"),
    (["+sweep=privacy_tradeoff", "sweep.metric_mode=up"], "sweep.metric_mode"),
    (["+model.hidden=[8]"], "model.hidden"),
    (["paths.output_dir="], "paths.output_dir"),
    (["+experiment=nope"], "experiment"),
]


@pytest.mark.parametrize("overrides, key", INVALID, ids=[" ".join(o) for o, _ in INVALID])
def test_an_invalid_value_is_one_line_naming_the_key_before_ray_starts(tmp_path, overrides, key):
    proc = subprocess.run([sys.executable, "-m", "fedray", *overrides, f"hydra.run.dir={tmp_path}/run"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-1000:]
    assert len(lines) == 1 and lines[0].startswith("fedray: error:") and key in lines[0], lines
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing written: it failed before the run began


def test_a_grad_sample_mode_opacus_is_not_asked_for_is_refused_with_the_allowed_values():
    # Refused by the config, before Ray, not by the hospital actor's Opacus wrapper.
    with pytest.raises(FedrayError) as err:
        compose_config(["privacy=dpsgd", "privacy.grad_sample_mode=vmap"])
    assert str(err.value) == ("privacy.grad_sample_mode='vmap' is not valid: use one of hooks, functorch, ew, ghost, "
                              "bookkeeping (or null), e.g. privacy.grad_sample_mode=hooks")


def test_dpfedavg_has_no_accountant_to_choose():
    with pytest.raises(FedrayError, match="accountant"):
        compose_config(["privacy=dpfedavg", "privacy.accountant=rdp"])


def test_sweep_with_or_without_plus_composes_the_same_config():
    plus, plain = compose_config(["+sweep=privacy_tradeoff"]), compose_config(["sweep=privacy_tradeoff"])
    same_time = {"tune.out_dir": "sweeps/x"}  # the default out_dir holds the composition's timestamp
    assert replace(plus, **same_time) == replace(plain, **same_time) and plus.sweep.name == "privacy_tradeoff"
    assert plus.sweep.optimized_metric.startswith("val_")  # trials are selected on validation, never on test
    assert compose_config([]).sweep is None


@pytest.mark.parametrize("override", ["model.foo=1", "+model.foo=1", "+data.foo=1", "+fl.foo=1", "+privacy.foo=1",
                                      "+cluster.foo=1", "+paths.foo=1", "+tune.foo=1", "+train.foo=1", "+foo=1"])
def test_a_key_no_schema_declares_is_refused_at_composition(override):
    with pytest.raises(FedrayError, match="foo"):
        compose_config([override])
