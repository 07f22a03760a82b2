"""fedray: measure what privacy costs in federated medical imaging.

The Python API (:mod:`fedray.api`)::

    import fedray
    result = fedray.run(["fl.rounds=1"])
    print(result.summary.test.balanced_accuracy, result.ledger.epsilon)
    frontier = fedray.sweep("privacy_tradeoff", ["fl.rounds=3"])  # the Tune sweep's Frontier

Its names load on first use, so ``import fedray`` (and the CLI's one-line
errors) do not wait for torch and Ray.
"""

__version__ = "0.1.0"

__all__ = ["ConfigError", "FedrayError", "Frontier", "RunResult", "compose", "run", "run_sweep", "sweep"]


def __getattr__(name: str):
    if name in ("compose", "run", "run_sweep", "RunResult"):
        from fedray import api

        return getattr(api, name)
    if name == "sweep":  # the sweep package, callable: fedray.sweep(name, overrides) -> Frontier
        import fedray.sweep

        return fedray.sweep
    if name == "Frontier":
        from fedray.sweep.saved import Frontier

        return Frontier
    if name in ("ConfigError", "FedrayError"):
        from fedray import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'fedray' has no attribute {name!r}")
