"""A mechanism is one file: a toy one registered from tests/ runs end to end without editing fedray/.

The toy is Gaussian perturbation of each round's aggregate at the driver: hospitals' updates are clipped
to S and N(0, z²S²) is added to their sum (client-level, no sampling), declared with its own events and
releases. Nothing in fedray/ names it; its schema, plan, refusals, hooks and ledger all live here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass


import dp_accounting
import numpy as np
import pytest

from conftest import TINY, compose_typed

from fedray.config.schema import PrivacyCommon
from fedray.errors import FedrayError
from fedray.federation.experiment import run_experiment
from fedray.privacy.ledger import Release, Releases, calibrate_noise, compose_epsilon
from fedray.privacy.mechanisms import REGISTRY, PrivateMechanism, InsertionPoint, common_outputs, register
from fedray.privacy.randomness import Purpose
from fedray.results import write_run
from fedray.strategies.base import Strategy


@dataclass
class ToyPrivacy(PrivacyCommon):  # its schema dataclass
    epsilon: float = 4.0
    delta: float = 1e-3
    clip_norm: float = 1.0


class NoisyMean(Strategy):
    """Clip each update to S, add N(0, z²S²) to the sum, divide by the K hospitals."""

    aggregates_empty_rounds = True

    def __init__(self, clip_norm, noise_multiplier, noise, hospitals):
        self.clip_norm, self.noise_multiplier = clip_norm, noise_multiplier
        self.noise, self.hospitals = noise, hospitals

    def aggregate(self, server_round, global_params, results):
        from fedray.privacy.client_level import clip_update, noisy_mean

        floating = [n for n, v in global_params.items() if np.issubdtype(v.dtype, np.floating)]
        clipped = [clip_update({n: r.params[n] - global_params[n] for n in floating}, clip_norm=self.clip_norm)[0]
                   for r in results]
        mean = noisy_mean(clipped, clip_norm=self.clip_norm, noise_multiplier=self.noise_multiplier,
                          rng=self.noise.numpy_generator(server_round, Purpose.DPFEDAVG_NOISE),
                          expected_clients=self.hospitals)
        return self.apply_update(global_params, mean)


def _event(z: float, rounds: int):
    return dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), rounds)


@dataclass(frozen=True)
class ToyAggregatePerturbation(PrivateMechanism):
    name = "toy_aggregate_perturbation"
    families = ("image",)
    unit = "hospital"
    trust = "the driver (it adds the noise)"

    clip_norm: float = 1.0
    noise_multiplier: float = 0.0
    rounds: int = 1

    @classmethod
    def refuse(cls, cfg, context=None):
        if cfg.fl.clients_per_round is not None or cfg.mode != "federated":
            raise FedrayError("privacy=toy_aggregate_perturbation accounts every hospital every round: "
                              "set fl.clients_per_round=null and mode=federated")

    @classmethod
    def resolve(cls, cfg, context):
        z = calibrate_noise(lambda s: compose_epsilon([_event(s, cfg.fl.rounds)], delta=cfg.privacy.delta),
                            target=cfg.privacy.epsilon)
        return cls(**cls.common(cfg, context), clip_norm=cfg.privacy.clip_norm, noise_multiplier=z,
                   rounds=cfg.fl.rounds)

    def declared_count(self, hospital, actual):
        return None

    def wrap_strategy(self, strategy, *, noise, insertions=()):
        return NoisyMean(self.clip_norm, self.noise_multiplier, noise, self.num_hospitals)

    def insertion_point(self):
        return InsertionPoint(None, note="the toy has no insertion point of its own")

    def hospital_releases(self, hospital):
        return Releases(f"hospital {hospital}'s message", (Release(
            "update", ("params",), "accounted", "clipped, to the trusted driver", party=f"hospital {hospital}",
            unit="hospital", event=_event(self.noise_multiplier, self.rounds)),))

    def output_releases(self):
        return Releases("run output", common_outputs(counts_public=False, clients_public=True,
                                                     cross_validated=self.cross_validated))

    def events(self, hospital_states):
        return {"each hospital": [_event(self.noise_multiplier, self.rounds)]}

    def details(self, hospital_states, epsilons):
        return {"noise_multiplier": self.noise_multiplier}


@pytest.fixture
def toy_registered():
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import tests/
    register(ToyAggregatePerturbation)
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    REGISTRY.pop(ToyAggregatePerturbation.name)  # leave the registry as the other tests find it


def test_a_mechanism_registered_from_tests_runs_end_to_end_with_its_own_ledger(ray_session, toy_registered,
                                                                              tmp_path):
    cfg = compose_typed(TINY, tmp_path)
    toy = ToyPrivacy(name=ToyAggregatePerturbation.name, reproducible_noise=False, epsilon=4.0, delta=1e-3,
                     clip_norm=1.0)
    cfg = dataclasses.replace(cfg, privacy=toy)
    result = run_experiment(cfg)
    ledger = result.summary.privacy
    expected = compose_epsilon([_event(ledger["noise_multiplier"], cfg.fl.rounds)], delta=1e-3)
    assert ledger["mechanism"] == ToyAggregatePerturbation.name and ledger["guarantee"] is True
    assert ledger["epsilon"] == pytest.approx(expected) and 3.99 <= ledger["epsilon"] <= 4.0
    assert all(r["clients"] == [{"hospital": k} for k in range(5)] for r in result.rounds)  # no counts, no steps
    assert result.summary.data.source and result.summary.data.hospital_train_sizes is None  # withheld
    write_run(tmp_path / "run", resolved_cfg=cfg, rounds=result.rounds, summary=result.summary,
              models=(result.final_params, result.best_params))
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["privacy"]["output_releases"] and math.isfinite(float(written["privacy"]["epsilon"]))
    with pytest.raises(FedrayError, match="not covered by any release declared under privacy=toy"):
        write_run(tmp_path / "leaky", resolved_cfg=cfg, rounds=[{"round": 1, "clients": [{"num_samples": 84}]}],
                  summary=result.summary)
    assert not (tmp_path / "leaky").exists()  # nothing half-written

