"""Connect to Ray: a local instance on this machine, or an existing cluster.

``cluster=local`` starts Ray here (CPU-only works; GPUs are used when present).
``cluster=remote`` connects to ``cluster.address`` and ships this checkout to
the workers in a ``runtime_env`` (``working_dir``), so the cluster runs the
same code as the caller. An already-initialised Ray (a test session, a Tune
worker) is reused as is.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ray

from fedray.errors import FedrayError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_EXCLUDES = [".git", ".venv", "outputs", "multirun", "sweeps/**/*.parquet", ".devbundle", "data"]


def connect(cluster_cfg: dict) -> bool:
    """Make sure Ray is initialised; return True when this call started it (so it should shut it down)."""
    if ray.is_initialized():
        return False
    kind = cluster_cfg.get("name", "local")
    # Actors inherit the driver's environment; keep Ray's own console chatter down.
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if kind == "local":
        # Token auth stays on; only its start-up notice is silenced (the CLI's stderr is for errors).
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(
            num_cpus=cluster_cfg.get("num_cpus"),
            num_gpus=cluster_cfg.get("num_gpus"),
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
        return True
    if kind == "remote":
        address = cluster_cfg.get("address")
        if not address:
            raise FedrayError("cluster=remote needs cluster.address (e.g. ray://head:10001 or auto)")
        runtime_env = dict(cluster_cfg.get("runtime_env") or {})
        runtime_env.setdefault("working_dir", str(PROJECT_ROOT))
        runtime_env.setdefault("excludes", SHIPPED_EXCLUDES)
        try:
            ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING)
        except ConnectionError as err:
            raise FedrayError(f"cannot reach the Ray cluster at {address}: {err}; is `ray up cluster.yaml` running?") from None
        return True
    raise FedrayError(f"unknown cluster {kind!r}: use cluster=local or cluster=remote")
