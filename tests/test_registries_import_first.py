"""A plugin's first fedray import may be the registry it registers with (docs/extending.md's table): each imports
on its own in a fresh interpreter, without meeting another fedray module half-initialised."""

from __future__ import annotations

import subprocess
import sys

import pytest

REGISTRIES = {
    "fedray.strategies": "register",
    "fedray.data.registry": "register_dataset",
    "fedray.models": "register_backbone",
    "fedray.privacy.mechanisms": "register",
    "fedray.audit.attacks": "register_attack",
}


@pytest.mark.parametrize("module", sorted(REGISTRIES))
def test_a_registry_imports_first_in_a_fresh_interpreter(module):
    done = subprocess.run([sys.executable, "-c", f"from {module} import {REGISTRIES[module]}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
