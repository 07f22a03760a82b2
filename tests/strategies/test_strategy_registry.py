"""One registry of strategies (name -> class and typed settings): the schemas, build_strategy, the sweep axis,
client settings, capabilities."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from conftest import TINY, compose_typed
from hydra.core.config_store import ConfigStore

from fedray.config import CONF_DIR, compose_config
from fedray.config.checks import nonnegative
from fedray.config.schema import GROUP_SCHEMAS
from fedray.errors import FedrayError
from fedray.federation.experiment import prepare_experiment
from fedray.privacy.randomness import DRIVER, NoiseSource, hospital
from fedray.strategies import (REGISTRY, ClientResult, FedAdam, FedAvg, FedProx, Params, Strategy, StrategySettings,
                               build_strategy, check_strategy, client_settings, register, strategy_class)
from fedray.strategies.dp_fedavg import DPFedAvg
from fedray.sweep.space import axis_paths
from fedray.training import build_trainer
from fedray.training.proximal import ProximalTerm

SHIPPED = ["fedavg", "fedprox", "fedavgm", "fedadagrad", "fedadam", "fedyogi"]
RECORDS = ["data=breast_cancer", "model=logreg", "fl.partition.scheme=iid", "fl.rounds=1", "fl.local_epochs=1",
           "audit.reference_models=0"]


@dataclass
class MedianSettings(StrategySettings):
    mu: float = nonnegative()  # sent to the hospitals, doubled, as their proximal_mu


class CoordinateMedian(Strategy):
    """A toy robust strategy: the coordinate-wise median of the hospitals' models, which no sum can give."""

    name = "toy_median"
    Settings = MedianSettings

    def __init__(self, *, weighting: str, mu: float):
        self.weighting, self.mu = weighting, mu

    def client_settings(self) -> dict:
        return {"proximal_mu": 2 * self.mu}

    def aggregate(self, server_round: int, global_params: Params, results: Sequence[ClientResult]) -> Params:
        return {name: np.median([r.params[name] for r in results], axis=0).astype(value.dtype)
                for name, value in global_params.items()}


@pytest.fixture
def toy_median():
    """:class:`CoordinateMedian` registered, with its option ``strategy=toy_median`` stored, for one test only."""
    register(CoordinateMedian)
    ConfigStore.instance().store(group="strategy", name="toy_median",
                                 node=MedianSettings(name="toy_median", weighting="samples", mu=0.0))
    yield CoordinateMedian
    del REGISTRY["toy_median"], GROUP_SCHEMAS["strategy"]["toy_median"]
    del ConfigStore.instance().repo["strategy"]["toy_median.yaml"]
    del ConfigStore.instance().repo["schema"]["strategy"]["toy_median.yaml"]


def test_the_registry_names_each_strategy_its_schema_and_the_option_files_are_the_choices():
    assert list(REGISTRY) == SHIPPED
    assert sorted(p.stem for p in (CONF_DIR / "strategy").glob("*.yaml")) == sorted(SHIPPED)
    for name, cls in REGISTRY.items():
        assert GROUP_SCHEMAS["strategy"][name] is cls.Settings
    with pytest.raises(FedrayError, match="unknown strategy 'fedsgd': choose one of " + ", ".join(sorted(SHIPPED))):
        compose_config(["strategy=fedsgd"])
    with pytest.raises(FedrayError, match="strategy.proximal_mu"):  # a knob of another strategy is no typo to drop
        compose_config(["strategy=fedavg", "+strategy.proximal_mu=0.1"])


@pytest.mark.parametrize("name", SHIPPED)
def test_each_strategy_takes_its_settings_fields_and_has_its_yaml(name):
    cls = strategy_class(name)
    parameters = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    fields = [f.name for f in dataclasses.fields(cls.Settings) if f.name != "name"]
    assert sorted(parameters) == sorted(fields)
    cfg = compose_config([f"strategy={name}"])
    strategy = build_strategy(cfg.strategy)
    assert type(strategy) is cls and type(cfg.strategy) is cls.Settings and cfg.strategy.name == name
    assert cls.aggregates_by_sum
    assert {s: getattr(strategy, s) for s in fields} == {s: getattr(cfg.strategy, s) for s in fields}


def test_a_strategy_registered_from_outside_is_a_choice_and_is_built(toy_median):
    assert list(REGISTRY) == [*SHIPPED, "toy_median"]
    with pytest.raises(FedrayError, match="choose one of .*, fedyogi, toy_median"):
        compose_config(["strategy=fedsgd"])
    cfg = compose_config(["strategy=toy_median", "strategy.mu=0.25", "strategy.weighting=uniform"])
    strategy = build_strategy(cfg.strategy)
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
    with pytest.raises(FedrayError, match="unknown strategy 'fedsgd': set strategy= to one of fedavg"):
        strategy_class("fedsgd")


def test_a_name_field_that_does_not_fit_the_chosen_file_is_refused_before_ray():
    check_strategy(compose_config(["strategy=fedadam", "strategy.name=fedyogi"]))  # the same settings: fine
    with pytest.raises(FedrayError, match="strategy.name=fedprox does not fit .*: select it with strategy=fedprox"):
        check_strategy(compose_config(["strategy=fedavg", "strategy.name=fedprox"]))


def _trainer(cfg):
    prep = prepare_experiment(cfg)
    shard = prep.dealt.train_shards[0]
    return build_trainer(cfg=prep.cfg, plan=prep.privacy, num_classes=prep.num_classes,
                         num_features=prep.num_features, inputs=shard.inputs, labels=shard.labels,
                         input_map=prep.dealt.input_map, device=torch.device("cpu"), hospital=0,
                         noise=NoiseSource.reproducible(0, hospital(0)))


def _proximal_mu(trainer) -> float:
    """The μ of the trainer's proximal gradient hook (0 without one: FedAvg's local objective)."""
    terms = [hook for hook in trainer.gradient_hooks if isinstance(hook, ProximalTerm)]
    assert len(terms) <= 1
    return terms[0].mu if terms else 0.0


def test_fedprox_sends_mu_to_the_hospitals_and_fedavg_sends_nothing(tmp_path):
    assert FedProx(weighting="samples", proximal_mu=0.3).client_settings() == {"proximal_mu": 0.3}
    assert client_settings(compose_config(["strategy=fedprox", "strategy.proximal_mu=0.3"]).strategy) == {
        "proximal_mu": 0.3}
    for name in ("fedavg", "fedavgm", "fedadam"):
        assert client_settings(compose_config([f"strategy={name}"]).strategy) == {}
    assert _proximal_mu(_trainer(compose_typed([*RECORDS, "strategy=fedprox", "strategy.proximal_mu=0.3"],
                                               tmp_path))) == 0.3
    assert _proximal_mu(_trainer(compose_typed([*RECORDS, "strategy=fedprox", "strategy.proximal_mu=0.0"],
                                               tmp_path))) == 0.0  # μ = 0 adds no hook at all
    assert _proximal_mu(_trainer(compose_typed([*RECORDS, "strategy=fedavg"], tmp_path))) == 0.0


def test_the_trainer_takes_mu_from_the_strategy_not_from_its_name(tmp_path, toy_median):
    trainer = _trainer(compose_typed([*RECORDS, "strategy=toy_median", "strategy.mu=0.2"], tmp_path))
    assert _proximal_mu(trainer) == 0.4  # CoordinateMedian sends twice its mu


def test_a_strategy_that_is_not_a_mean_is_refused_under_secure_aggregation(toy_median):
    refused = compose_config(["strategy=toy_median", "fl.secure_aggregation=true"])
    with pytest.raises(FedrayError, match=r"^strategy=toy_median with fl.secure_aggregation=true: .* set "
                                          r"fl.secure_aggregation=false, or use a strategy that aggregates by a "
                                          r"mean \(fedavg, fedprox, fedavgm, fedadagrad, fedadam, fedyogi\)$"):
        check_strategy(refused)
    check_strategy(compose_config(["strategy=toy_median"]))  # plain aggregation sees every model
    for name in SHIPPED:
        check_strategy(compose_config([f"strategy={name}", "fl.secure_aggregation=true"]))


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
        DPFedAvg(**wrap, server=CoordinateMedian(weighting="uniform", mu=0.0))


def test_the_sweep_axis_strategy_takes_registered_strategies_with_their_option(tmp_path, toy_median):
    def paths(*space):
        cfg = compose_typed(["+sweep=privacy_tradeoff", *TINY, *space], tmp_path)
        return axis_paths(cfg.sweep, cfg)

    assert paths("+sweep.space.strategy=[fedavg,fedyogi]")["strategy"] == "strategy"
    assert paths("+sweep.space.strategy=[fedavg,toy_median]")["strategy"] == "strategy"  # its stored option
    assert paths("+sweep.space.strategy=[fedadam,fedyogi]", "+sweep.space.server_lr=[0.1]")["server_lr"] == \
        "strategy.server_lr"  # the knob of the strategies swept, which the base config's fedavg lacks
    with pytest.raises(FedrayError, match="unknown sweep axis 'server_lr'"):
        paths("+sweep.space.server_lr=[0.1]")
    with pytest.raises(FedrayError, match="sweep axis 'strategy' value 'fedsgd': 'fedsgd' is not a strategy; use "
                                          "one of fedavg, .*, toy_median"):
        paths("+sweep.space.strategy=[fedavg,fedsgd]")
    option = ConfigStore.instance().repo["strategy"].pop("toy_median.yaml")  # registered, but without its option
    try:
        with pytest.raises(FedrayError, match="strategy 'toy_median' has no conf/strategy/toy_median.yaml"):
            paths("+sweep.space.strategy=[fedavg,toy_median]")
    finally:
        ConfigStore.instance().repo["strategy"]["toy_median.yaml"] = option
