"""Every wait ends: a run on a cluster too busy to place its actors ends in one line at its deadline, and
SIGINT stops it at once while Ray is still waiting for them (each case through the real CLI, in its own process).

The busy cluster is a Ray head with one CPU that another job's actor holds: the run's actors fit the cluster
(so the up-front feasibility check passes) but can never be placed while that job runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import TINY
from test_cli import assert_one_line_error

pytestmark = pytest.mark.spawns_ray

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none"]
BUSY_HEAD = """
import time
import ray

ray.init(num_cpus=1, include_dashboard=False)


@ray.remote(num_cpus=1)
class OtherJob:
    def ping(self):
        return True


job = OtherJob.remote()
ray.get(job.ping.remote())
print("address", ray.get_runtime_context().gcs_address, flush=True)
time.sleep(3600)
"""


@pytest.fixture(scope="module")
def busy_cluster():
    """(the address, the environment to reach it) of a one-CPU Ray cluster whose CPU another job holds."""
    with tempfile.TemporaryDirectory(prefix="r", dir="/tmp") as tmp:  # Ray's socket paths must stay short
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": tmp,
                                                                              "RAY_AUTH_MODE": "disabled"}
        head = subprocess.Popen([sys.executable, "-c", BUSY_HEAD], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        try:
            line = ""
            while not line.startswith("address"):
                line = head.stdout.readline()
                assert line or head.poll() is None, "the busy Ray head did not start"
            yield line.split()[1], env
        finally:
            head.send_signal(signal.SIGINT)
            try:
                head.wait(timeout=30)
            except subprocess.TimeoutExpired:
                head.kill()


def busy_run_args(address: str, tmp_path: Path) -> list[str]:
    # The driver and one actor holding both hospitals (a 1-CPU cluster) ask for 0.5 CPU: the cluster's 1 CPU
    # holds them, once the other job ends (60 images per class deal evenly to two hospitals: no remainder warning).
    return [*TINY, "data.samples_per_class=60", "fl.num_hospitals=2", "cluster=remote", f"cluster.address={address}",
            f"hydra.run.dir={tmp_path}/run", *QUIET]


def test_actors_a_busy_cluster_cannot_place_end_the_run_in_one_line_at_the_placement_deadline(busy_cluster, tmp_path):
    address, env = busy_cluster
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "fedray", *busy_run_args(address, tmp_path),
                           "cluster.placement_timeout_s=4"], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=240)
    assert_one_line_error(proc, "not all placed within 4 s (cluster.placement_timeout_s)",
                          "the driver CPU=0.25, 1 hospital actor CPU=0.25 each", "0 of 1 CPUs",
                          "raise cluster.placement_timeout_s")
    assert time.monotonic() - started < 120
    assert '"status": "failed"' in (tmp_path / "run" / "summary.json").read_text()


def test_sigint_while_ray_waits_to_place_the_actors_exits_130_within_10_seconds(busy_cluster, tmp_path):
    address, env = busy_cluster
    log = tmp_path / "log.txt"
    proc = subprocess.Popen([sys.executable, "-m", "fedray", *busy_run_args(address, tmp_path)],
                            cwd=tmp_path, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while "cluster: joined" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    time.sleep(3)  # the actors are requested right after joining; the other job holds the only CPU
    assert proc.poll() is None, log.read_text()
    signalled = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert time.monotonic() - signalled < 10
    output = log.read_text()
    assert "Traceback" not in output and re.search(r"interrupted by SIGINT", output)
    assert '"status": "interrupted"' in (tmp_path / "run" / "summary.json").read_text()
