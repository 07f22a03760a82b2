"""What produced a run: fedray's version and commit, the libraries that did the maths, Python, and the device.

A reader comparing two runs, or an auditor checking one, needs the code and
the numerical libraries as much as the config: Opacus and dp-accounting
compute the guarantee, torch the model. The commit is the checkout's
``git rev-parse HEAD`` with ``+dirty`` when it has uncommitted changes
(None unless fedray runs from its own git checkout, e.g. from an installed
wheel). Nothing here is
computed from a record: the ledger declares it with the run's operational
fields (``summary.provenance*``).
"""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
LIBRARIES = ("torch", "torchvision", "opacus", "dp-accounting", "ray", "numpy", "scikit-learn", "diffprivlib")


def provenance(*, device: str) -> dict:
    """This process's software and ``device`` (what the parties ran on, in words)."""
    software = _software()
    return {**software, "libraries": dict(software["libraries"]), "device": device}  # the cached dict stays whole


@functools.lru_cache(maxsize=1)
def _software() -> dict:
    """Read once per process: the code and libraries it loaded do not change under it (every fold, every trial)."""
    return {"fedray": _version("fedray"), "commit": checkout_commit(), "python": platform.python_version(),
            "platform": platform.platform(), "libraries": {name: _version(name) for name in LIBRARIES}}


def checkout_commit() -> str | None:
    """HEAD of the checkout fedray runs from, ``+dirty`` with uncommitted changes; None when there is none."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(CHECKOUT), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    if not (CHECKOUT / ".git").exists():  # an installed fedray: git would find whatever repository lies above it
        return None
    head = git("rev-parse", "HEAD")
    if not head:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{head}+dirty" if dirty else head


def _version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None
