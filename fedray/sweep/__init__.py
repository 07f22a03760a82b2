"""Ray Tune sweeps over federated experiments, and the privacy-utility frontier they produce.

The package is also the API's sweep call: ``fedray.sweep("privacy_tradeoff", ["fl.rounds=3"])`` runs
``conf/sweep/privacy_tradeoff.yaml`` and returns its :class:`~fedray.sweep.saved.Frontier`
(:func:`fedray.api.run_sweep`). A package cannot also be a function, and ``fedray.sweep`` names this package
once any of its modules is imported, so the package's module object is made callable.
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, name: str, overrides=()):
        from fedray.api import run_sweep

        return run_sweep(name, overrides)


sys.modules[__name__].__class__ = _CallablePackage
