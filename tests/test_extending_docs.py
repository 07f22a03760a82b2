"""docs/extending.md's examples run as written: each YAML block into a copy of conf/, the Python blocks as one module.

Every registry they add to is restored afterwards, so the other tests find fedray as shipped.
"""

from __future__ import annotations

import re
import shutil
import sys
import types
from pathlib import Path

import pytest
from hydra.core.config_store import ConfigStore

import fedray.config.compose as compose
from fedray.audit.attacks import ATTACKS
from fedray.config.schema import GROUP_SCHEMAS
from fedray.data.registry import DATASETS
from fedray.models import registry as models
from fedray.privacy.mechanisms import REGISTRY as MECHANISMS
from fedray.strategies import REGISTRY as STRATEGIES

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
BLOCK = re.compile(r"```(python|yaml)\n(.*?)```", re.S)


def _blocks(kind: str) -> list[str]:
    return [body for language, body in BLOCK.findall(DOC.read_text(encoding="utf-8")) if language == kind]


@pytest.fixture
def restored_registries():
    registries = [STRATEGIES, DATASETS, MECHANISMS, ATTACKS, models._BACKBONES, *GROUP_SCHEMAS.values()]
    before = [dict(r) for r in registries]
    repo = ConfigStore.instance().repo
    stored = {group: set(repo.get(group, {})) for group in ("strategy", "data", "model", "privacy")}
    schemas = {group: set(repo["schema"].get(group, {})) for group in ("strategy", "data", "model", "privacy")}
    yield
    for registry, kept in zip(registries, before):
        registry.clear()
        registry.update(kept)
    for group, names in stored.items():
        for name in set(repo.get(group, {})) - names:
            del repo[group][name]
    for group, names in schemas.items():
        for name in set(repo["schema"].get(group, {})) - names:
            del repo["schema"][group][name]


def test_every_example_of_docs_extending_runs(restored_registries, tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    shutil.copytree(compose.CONF_DIR, conf)
    yamls = _blocks("yaml")
    assert len(yamls) == 4  # a strategy, a dataset, a model, a mechanism; an attack has no settings
    for body in yamls:
        target = body.splitlines()[0].removeprefix("# ").strip()
        assert target.startswith("conf/") and not (conf.parent / target).exists()  # each is a new option
        (conf.parent / target).write_text(body, encoding="utf-8")
    monkeypatch.setattr(compose, "CONF_DIR", conf)
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType("extending_examples")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # the dataset's loader is named by its module
    pythons = _blocks("python")
    assert len(pythons) == 6
    for body in pythons:  # the last block composes and runs the other five, asserting what they did
        exec(compile(body, f"{DOC.name} (python block)", "exec"), module.__dict__)
