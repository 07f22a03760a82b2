"""``python -m fedray <overrides>`` with a clock on its phases (used by ``flower_comparison.py``).

Runs exactly the CLI's ``fedray.__main__.main()`` with the same arguments; the
only difference is that the module-level functions the CLI calls are wrapped to
record when they start and end (behaviour unchanged). At exit it prints one
line, ``FEDRAY_PHASES {json}``: seconds since this process started at each
phase boundary. A function that has moved in fedray is simply not timed.

    python benchmarks/_fedray_cli_timed.py data=isic data.root=PATH model=mobilenet_v3_small ...
"""

from __future__ import annotations

import atexit
import functools
import importlib
import json
import sys
import time

T0 = time.perf_counter()
PHASES: dict[str, list[float]] = {}


def _wrap(module, name: str, key: str) -> None:
    fn = getattr(module, name, None)
    if fn is None:
        return

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        start = time.perf_counter() - T0
        try:
            return fn(*args, **kwargs)
        finally:
            PHASES.setdefault(key, []).append([start, time.perf_counter() - T0])

    setattr(module, name, timed)


def _report() -> None:
    PHASES["atexit"] = [[time.perf_counter() - T0, time.perf_counter() - T0]]
    print("FEDRAY_PHASES " + json.dumps(PHASES), flush=True)


def main() -> None:
    import fedray.__main__ as cli

    PHASES["import fedray.__main__"] = [[0.0, time.perf_counter() - T0]]
    modules = {}
    for name in ("fedray.federation.cluster", "fedray.federation.experiment", "fedray.federation.study",
                 "fedray.results", "ray"):
        try:
            modules[name] = importlib.import_module(name)
        except ImportError:  # moved in fedray: its phases are simply not timed
            modules[name] = None

    PHASES["imports of run_single"] = [[PHASES["import fedray.__main__"][0][1], time.perf_counter() - T0]]
    cluster, experiment, study, results, ray = modules.values()
    _wrap(cli, "compose_config", "compose_config (pre-check)")
    _wrap(cli, "run_single", "run_single")
    _wrap(experiment, "prepare_experiment", "prepare_experiment")
    # fedray.api.run imports run_experiment from its module when it runs, and hands it to run_study as the runner;
    # older CLIs had run_study call its own imported name. Wrap both: only the one that runs records.
    _wrap(experiment, "run_experiment", "run_experiment")
    _wrap(study, "run_experiment", "run_experiment")
    _wrap(cluster, "connect", "ray.init (connect)")
    _wrap(study, "run_study", "run_study")
    _wrap(results, "write_run", "write_run")
    _wrap(ray, "shutdown", "ray.shutdown")
    atexit.register(_report)
    sys.argv = ["fedray", *sys.argv[1:]]
    cli.main()


if __name__ == "__main__":
    main()
