"""The house's rules that code review alone would let slip: the audit lives in one package behind generic seams."""

from __future__ import annotations

import ast
from pathlib import Path

import fedray

PACKAGE = Path(fedray.__file__).parent
# The training path: what a run is made of. It offers seams (gradient hooks, round observers, client insertions)
# and never knows who uses them.
TRAINING_PATH = ("config", "data", "models", "privacy", "strategies", "training", "federation")
ORCHESTRATORS = {"federation/experiment.py", "federation/wrap_up.py"}  # compose the parties and the audit of a run


def _modules(*folders: str):
    for folder in folders:
        yield from sorted((PACKAGE / folder).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_module_outside_the_audit_package_mentions_canaries():
    outside = [p for p in PACKAGE.rglob("*.py") if PACKAGE / "audit" not in p.parents]
    assert len(outside) > 50  # the walk found the package
    mentions = [str(p.relative_to(PACKAGE)) for p in outside if "canar" in p.read_text(encoding="utf-8").lower()]
    assert mentions == []


def test_the_training_path_never_imports_the_audit():
    importers = [str(p.relative_to(PACKAGE)) for p in _modules(*TRAINING_PATH)
                 if str(p.relative_to(PACKAGE)) not in ORCHESTRATORS
                 and any(name == "fedray.audit" or name.startswith("fedray.audit.") for name in _imports(p))]
    assert importers == []


def test_the_audit_package_imports_no_orchestrator_or_results():
    upward = ("fedray.federation", "fedray.results", "fedray.sweep", "fedray.__main__")
    importers = {str(p.relative_to(PACKAGE)): sorted(n for n in _imports(p) if n.startswith(upward))
                 for p in _modules("audit")}
    assert {module: names for module, names in importers.items() if names} == {}


def test_the_data_layer_imports_only_the_config_and_itself():
    allowed = ("fedray.data", "fedray.config", "fedray.errors", "fedray.progress")  # the last two import no fedray
    importers = {str(p.relative_to(PACKAGE)): sorted(n for n in _imports(p)
                                                      if n.startswith("fedray") and not n.startswith(allowed))
                 for p in _modules("data")}
    assert {module: names for module, names in importers.items() if names} == {}
