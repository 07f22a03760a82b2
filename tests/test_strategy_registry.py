"""One registry of strategies: the schema's choices, build_strategy, the sweep axis, client settings, capabilities."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from conftest import TINY, compose_typed
from fedray.config import compose_config
from fedray.config.schema import Federation
from fedray.errors import FedrayError
from fedray.federation.experiment import prepare_experiment
from fedray.privacy.randomness import DRIVER, NoiseSource, hospital
from fedray.strategies import (REGISTRY, STRATEGY_NAMES, ClientResult, FedAdam, FedAvg, FedProx, Params, Strategy,
                               build_strategy, check_strategy, client_settings, register, strategy_class)
from fedray.strategies.dp_fedavg import DPFedAvg
from fedray.sweep.space import axis_paths
from fedray.training import build_trainer

SHIPPED = ["fedavg", "fedprox", "fedavgm", "fedadagrad", "fedadam", "fedyogi"]
RECORDS = ["data=breast_cancer", "model=logreg", "fl.partition.scheme=iid", "fl.rounds=1", "fl.local_epochs=1",
           "audit.reference_models=0"]


class CoordinateMedian(Strategy):
    """A toy robust strategy: the coordinate-wise median of the hospitals' models, which no sum can give."""

    name = "toy_median"
    settings = ("weighting", "proximal_mu")  # borrows proximal_mu to send it to the hospitals, under its own name

    def __init__(self, *, weighting: str, proximal_mu: float):
        self.weighting, self.mu = weighting, proximal_mu

    def client_settings(self) -> dict:
        return {"proximal_mu": 2 * self.mu}

    def aggregate(self, server_round: int, global_params: Params, results: Sequence[ClientResult]) -> Params:
        return {name: np.median([r.params[name] for r in results], axis=0).astype(value.dtype)
                for name, value in global_params.items()}


@pytest.fixture
def toy_median():
    """:class:`CoordinateMedian`, registered for one test only."""
    register(CoordinateMedian)
    yield CoordinateMedian
    del REGISTRY[CoordinateMedian.name]


def test_the_registry_is_the_schemas_list_of_strategies_in_the_same_order():
    assert list(REGISTRY) == SHIPPED
    spec = next(f for f in dataclasses.fields(Federation) if f.name == "strategy").metadata["spec"]
    assert spec.choices is STRATEGY_NAMES and list(spec.choices) == SHIPPED
    with pytest.raises(FedrayError, match="fl.strategy='fedsgd' is not valid: use one of " + ", ".join(SHIPPED)):
        compose_config(["fl.strategy=fedsgd"])


@pytest.mark.parametrize("name", SHIPPED)
def test_each_strategy_declares_the_fl_fields_its_constructor_takes_and_has_its_yaml(name):
    cls = strategy_class(name)
    parameters = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    assert sorted(parameters) == sorted(cls.settings)
    assert set(cls.settings) <= {f.name for f in dataclasses.fields(Federation)}
    cfg = compose_config([f"fl={name}"])
    strategy = build_strategy(cfg.fl)
    assert type(strategy) is cls and cfg.fl.strategy == name and cls.aggregates_by_sum
    assert {s: getattr(strategy, s) for s in cls.settings} == {s: getattr(cfg.fl, s) for s in cls.settings}


def test_a_strategy_registered_from_outside_is_a_choice_and_is_built(toy_median):
    assert list(STRATEGY_NAMES) == [*SHIPPED, "toy_median"]
    with pytest.raises(FedrayError, match="use one of .*, fedyogi, toy_median"):
        compose_config(["fl.strategy=fedsgd"])
    cfg = compose_config(["fl.strategy=toy_median", "fl.proximal_mu=0.25", "fl.weighting=uniform"])
    strategy = build_strategy(cfg.fl)
    assert isinstance(strategy, CoordinateMedian) and (strategy.weighting, strategy.mu) == ("uniform", 0.25)
    results = [ClientResult(hospital=k, params={"w": np.array([v])}, num_samples=1) for k, v in enumerate([0, 1, 9])]
    assert strategy.aggregate(1, {"w": np.array([0.0])}, results)["w"].tolist() == [1.0]


def test_registration_needs_a_name_of_its_own_and_a_free_one():
    class Unnamed(FedAvg):
        pass

    class Impostor(FedAvg):
        name = "fedprox"

    with pytest.raises(ValueError, match="sets no name of its own"):
        register(Unnamed)
    with pytest.raises(ValueError, match="taken by FedProx"):
        register(Impostor)
    assert REGISTRY["fedprox"] is FedProx
    with pytest.raises(FedrayError, match="unknown strategy 'fedsgd': set fl.strategy to one of fedavg"):
        strategy_class("fedsgd")


def _trainer(cfg):
    prep = prepare_experiment(cfg)
    shard = prep.dealt.train_shards[0]
    return build_trainer(cfg=prep.cfg, plan=prep.privacy, num_classes=prep.num_classes,
                         num_features=prep.num_features, inputs=shard.inputs, labels=shard.labels,
                         input_map=prep.dealt.input_map, device=torch.device("cpu"), hospital=0,
                         noise=NoiseSource.reproducible(0, hospital(0)))


def test_fedprox_sends_mu_to_the_hospitals_and_fedavg_sends_nothing(tmp_path):
    assert FedProx(weighting="samples", proximal_mu=0.3).client_settings() == {"proximal_mu": 0.3}
    assert client_settings(compose_config(["fl=fedprox", "fl.proximal_mu=0.3"]).fl) == {"proximal_mu": 0.3}
    for name in ("fedavg", "fedavgm", "fedadam"):  # fl.proximal_mu is set (0.01) but not theirs to send
        assert client_settings(compose_config([f"fl={name}"]).fl) == {}
    assert _trainer(compose_typed([*RECORDS, "fl=fedprox", "fl.proximal_mu=0.3"], tmp_path)).proximal_mu == 0.3
    assert _trainer(compose_typed([*RECORDS, "fl=fedavg", "fl.proximal_mu=0.3"], tmp_path)).proximal_mu == 0.0


def test_the_trainer_takes_mu_from_the_strategy_not_from_its_name(tmp_path, toy_median):
    trainer = _trainer(compose_typed([*RECORDS, "fl.strategy=toy_median", "fl.proximal_mu=0.2"], tmp_path))
    assert trainer.proximal_mu == 0.4  # CoordinateMedian sends twice fl.proximal_mu


def test_a_strategy_that_is_not_a_mean_is_refused_under_secure_aggregation(toy_median):
    refused = compose_config(["fl.strategy=toy_median", "fl.secure_aggregation=true"])
    with pytest.raises(FedrayError, match=r"^fl.strategy=toy_median with fl.secure_aggregation=true: .* set "
                                          r"fl.secure_aggregation=false, or use a strategy that aggregates by a "
                                          r"mean \(fedavg, fedprox, fedavgm, fedadagrad, fedadam, fedyogi\)$"):
        check_strategy(refused)
    check_strategy(compose_config(["fl.strategy=toy_median"]))  # plain aggregation sees every model
    for name in SHIPPED:
        check_strategy(compose_config([f"fl={name}", "fl.secure_aggregation=true"]))


def test_dp_fedavg_has_its_servers_capability_and_hands_it_the_mean_update():
    noise = NoiseSource.reproducible(0, DRIVER)
    wrap = dict(clip_norm=1.0, noise_multiplier=0.0, noise=noise, expected_clients=2)
    global_params = {"w": np.array([1.0, -2.0]), "steps": np.array(3)}
    delta = {"w": np.array([0.5, 0.25])}
    direct = FedAdam(weighting="uniform", server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    wrapped = DPFedAvg(**wrap, server=FedAdam(weighting="uniform", server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3))
    assert wrapped.aggregates_by_sum
    for _ in range(2):  # the server optimizer's state moves identically
        expected, got = direct.apply_update(global_params, delta), wrapped.apply_update(global_params, delta)
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name])
    assert DPFedAvg(**wrap, server=FedProx(weighting="uniform", proximal_mu=0.5)).client_settings() == {
        "proximal_mu": 0.5}
    with pytest.raises(ValueError, match="does not aggregate by a mean"):
        DPFedAvg(**wrap, server=CoordinateMedian(weighting="uniform", proximal_mu=0.0))


def test_the_sweep_axis_strategy_takes_registered_strategies_with_their_yaml(tmp_path, toy_median):
    def paths(*space):
        cfg = compose_typed(["+sweep=privacy_tradeoff", *TINY, *space], tmp_path)
        return axis_paths(cfg.sweep, cfg)

    assert paths("+sweep.space.strategy=[fedavg,fedyogi]")["strategy"] == "fl"
    with pytest.raises(FedrayError, match="sweep axis 'strategy' value 'fedsgd': 'fedsgd' is not a strategy; use "
                                          "one of fedavg, .*, toy_median"):
        paths("+sweep.space.strategy=[fedavg,fedsgd]")
    with pytest.raises(FedrayError, match="strategy 'toy_median' has no conf/fl/toy_median.yaml .* "
                                          "sweep.axes.strategy=fl.strategy"):
        paths("+sweep.space.strategy=[fedavg,toy_median]")
    assert paths("+sweep.space.strategy=[fedavg,toy_median]", "+sweep.axes.strategy=fl.strategy")["strategy"] == \
        "fl.strategy"
    with pytest.raises(FedrayError, match="'fedsgd' is not a strategy"):
        paths("+sweep.space.strategy=[fedsgd]", "+sweep.axes.strategy=fl.strategy")
