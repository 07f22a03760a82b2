"""A strategy added from a test: its class, its settings dataclass and its option only, composed and run.

The toy is a coordinate-wise trimmed mean (Yin et al. 2018): per coordinate,
drop the ``trim`` largest and ``trim`` smallest of the K hospitals' values and
average the rest, so ``trim=0`` is FedAvg with uniform weights. Its option,
which a project keeps in ``conf/strategy/<name>.yaml``, is stored in Hydra's
ConfigStore here (a test may not write into ``conf/``); nothing else of
fedray is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest
from hydra.core.config_store import ConfigStore

from conftest import compose_typed
from fedray.config.checks import nonnegative_count
from fedray.config.schema import GROUP_SCHEMAS
from fedray.errors import FedrayError
from fedray.federation.experiment import run_in_process
from fedray.strategies import REGISTRY, ClientResult, Params, Strategy, StrategySettings, register

RECORDS = ["data=breast_cancer", "model=logreg", "fl.partition.scheme=iid", "fl.rounds=2", "fl.local_epochs=1",
           "audit.enabled=false", "fl.num_hospitals=3"]


@dataclass
class TrimmedMeanSettings(StrategySettings):
    trim: int = nonnegative_count()  # values dropped at each end of every coordinate


class TrimmedMean(Strategy):
    """Coordinate-wise trimmed mean; it needs every model, so it is refused under secure aggregation."""

    name = "toy_trimmed_mean"
    Settings = TrimmedMeanSettings

    def __init__(self, *, weighting: str, trim: int):
        self.weighting, self.trim = weighting, trim  # the weights do not enter a trimmed mean

    def aggregate(self, server_round: int, global_params: Params, results: Sequence[ClientResult]) -> Params:
        kept = slice(self.trim, len(results) - self.trim)
        return {name: np.sort(np.stack([r.params[name] for r in results]), axis=0)[kept].mean(axis=0)
                .astype(value.dtype) for name, value in global_params.items()}


@pytest.fixture
def trimmed_mean():
    """Registered, with its option ``strategy=toy_trimmed_mean`` (its YAML's content), for one test."""
    register(TrimmedMean)
    store = ConfigStore.instance()
    store.store(group="strategy", name=TrimmedMean.name,
                node=TrimmedMeanSettings(name=TrimmedMean.name, weighting="uniform", trim=1))
    yield
    del REGISTRY[TrimmedMean.name], GROUP_SCHEMAS["strategy"][TrimmedMean.name]
    del store.repo["strategy"][f"{TrimmedMean.name}.yaml"], store.repo["schema"]["strategy"][f"{TrimmedMean.name}.yaml"]


def test_a_strategy_defined_in_a_test_is_composed_and_run(trimmed_mean, tmp_path):
    trimmed = run_in_process(compose_typed([*RECORDS, "strategy=toy_trimmed_mean"], tmp_path / "trimmed"))
    untrimmed = run_in_process(compose_typed([*RECORDS, "strategy=toy_trimmed_mean", "strategy.trim=0"],
                                             tmp_path / "untrimmed"))
    fedavg = run_in_process(compose_typed([*RECORDS, "strategy=fedavg", "strategy.weighting=uniform"],
                                          tmp_path / "fedavg"))
    for name, value in fedavg.final_params[0].items():  # trim=0 is the uniform mean: FedAvg's numbers
        np.testing.assert_allclose(untrimmed.final_params[0][name], value, rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(trimmed.final_params[0][n], v) for n, v in fedavg.final_params[0].items())
    with pytest.raises(FedrayError, match="strategy.trim"):
        compose_typed([*RECORDS, "strategy=toy_trimmed_mean", "strategy.trim=-1"], tmp_path / "bad")
    with pytest.raises(FedrayError, match="^strategy=toy_trimmed_mean with fl.secure_aggregation=true"):
        run_in_process(compose_typed([*RECORDS, "strategy=toy_trimmed_mean", "fl.secure_aggregation=true"],
                                     tmp_path / "secure"))
