"""Connect to Ray: a local instance on this machine, or an existing cluster.

``cluster=local`` starts a fresh Ray here (CPU-only works; GPUs are used when
present), never joining a Ray another job started on this machine.
``cluster=remote`` connects to ``cluster.address`` (required: ``auto`` is
refused, since it attaches to whatever Ray runs on this machine), says which
cluster it joined and what it has, and ships this checkout to the workers in
a ``runtime_env`` (``working_dir``), so the cluster runs the same code as the
caller. An already-initialised Ray (a test session, a Tune
worker) is reused as is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from pathlib import Path

import ray

from fedray.config.schema import LocalCluster, RemoteCluster
from fedray.errors import FedrayError
from fedray.federation.runtime import alive_nodes

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Ray leaves out .git and .venv itself (and warns when they are listed again).
SHIPPED_EXCLUDES = ["outputs", "multirun", "sweeps/**/*.parquet", ".devbundle", "data"]


def connect(cluster_cfg: LocalCluster | RemoteCluster) -> bool:
    """Make sure Ray is initialised; return True when this call started it (so it should shut it down)."""
    if ray.is_initialized():
        return False
    kind = cluster_cfg.name
    # Actors inherit the driver's environment; keep Ray's own console chatter down.
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if kind == "local":
        if os.environ.get("RAY_ADDRESS", "").strip():
            raise FedrayError(f"cluster=local starts Ray on this machine, but RAY_ADDRESS={os.environ['RAY_ADDRESS']} "
                              "names a cluster: unset RAY_ADDRESS, or run there with cluster=remote "
                              "cluster.address=$RAY_ADDRESS")
        # Token auth stays on; only its start-up notice is silenced (the CLI's stderr is for errors).
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        with _callers_signal_handlers():
            ray.init(
                # Without an address Ray joins the last cluster `ray start` recorded on this machine, another
                # job's or a dead one (then it waits for minutes): "local" always starts a fresh instance.
                address="local",
                num_cpus=cluster_cfg.num_cpus,
                num_gpus=cluster_cfg.num_gpus,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=True,
            )
        return True
    if kind == "remote":
        address = cluster_cfg.address
        if not address.strip():
            raise FedrayError("cluster=remote needs the cluster's address: set cluster.address=ray://<head>:10001 "
                              "(RAY_ADDRESS inside a `ray job submit` job sets it), or run here with cluster=local")
        if address.strip().lower() in ("auto", "local"):
            raise FedrayError(f"cluster.address={address!r} would attach to whatever Ray runs on this machine, "
                              "another job's included: give the cluster's address, e.g. "
                              "cluster.address=ray://<head>:10001, or run here with cluster=local")
        check_reachable(address, timeout_s=cluster_cfg.connect_timeout_s)
        for name in ("ray._private.worker", "ray.util.client.worker"):  # the loggers Ray's upload logs to
            logging.getLogger(name).addFilter(_default_exclude_notice)
        runtime_env = dict(cluster_cfg.runtime_env or {})
        runtime_env.setdefault("working_dir", str(PROJECT_ROOT))
        runtime_env.setdefault("excludes", SHIPPED_EXCLUDES)
        try:
            with _callers_signal_handlers():
                ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as err:
            raise FedrayError(f"cannot reach the Ray cluster at {address} ({_first_line(err)}): start it with "
                              "`ray up cluster.yaml`, or run here with cluster=local") from None
        print(f"cluster: joined {address}: {cluster_line()}", flush=True)
        return True
    raise FedrayError(f"unknown cluster {kind!r}: use cluster=local or cluster=remote")


def cluster_line() -> str:
    """What the connected cluster has: alive nodes and their CPUs, GPUs and memory in all."""
    nodes = alive_nodes()
    total = {key: sum(n.get(key, 0.0) for n in nodes) for key in ("CPU", "GPU", "memory")}
    return (f"{len(nodes)} node(s), {total['CPU']:g} CPUs, {total['GPU']:g} GPUs, "
            f"{total['memory'] / 2**30:.0f} GiB memory")


def check_reachable(address: str, *, timeout_s: float) -> None:
    """Fail within ``timeout_s`` when nothing accepts a TCP connection at a ``ray://host:port`` or ``host:port``.

    Ray's own client retries an unreachable address for minutes; a refused or
    silent port is better reported at once.
    """
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise FedrayError(f"cannot reach the Ray cluster at {address} within {timeout_s:g} s ({_first_line(err)}): "
                          "start it with `ray up cluster.yaml`, or run here with cluster=local") from None


def _default_exclude_notice(record: logging.LogRecord) -> bool:
    """False for Ray's notice that it leaves .git and .venv out of the shipped checkout: what fedray wants."""
    return not str(record.msg).startswith("Directory %r is now ignored by default")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextlib.contextmanager
def _callers_signal_handlers():
    """Keep the caller's SIGINT/SIGTERM handlers: ``ray.init`` installs its own, which exit with a stack dump."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
