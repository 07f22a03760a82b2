"""fedray: measure what privacy costs in federated medical imaging.

The Python API (:mod:`fedray.api`)::

    import fedray
    result = fedray.run(["fl.rounds=1"])
    print(result.summary.final_test["balanced_accuracy"], result.ledger["epsilon"])

Its names load on first use, so ``import fedray`` (and the CLI's one-line
errors) do not wait for torch and Ray.
"""

__version__ = "0.1.0"

__all__ = ["ConfigError", "FedrayError", "Frontier", "RunResult", "compose", "run", "run_sweep"]


def __getattr__(name: str):
    if name in ("compose", "run", "run_sweep", "RunResult"):
        from fedray import api

        return getattr(api, name)
    if name == "Frontier":
        from fedray.sweep.saved import Frontier

        return Frontier
    if name in ("ConfigError", "FedrayError"):
        from fedray import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'fedray' has no attribute {name!r}")
