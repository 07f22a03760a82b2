"""fl.train_together: hospitals trained in lockstep with torch.func equal the same hospitals trained one after another,
to float tolerance, with and without DP-SGD; and what cannot train together is refused, naming why."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY, compose_typed, with_changes

from fedray.errors import FedrayError
from fedray.federation.experiment import prepare_experiment, run_in_process
from fedray.federation.residency import together_groups
from fedray.privacy.randomness import NoiseSource, hospital
from fedray.training import build_trainer
from fedray.training.together import fit_together, why_not_together

EHR = ["data=ehr_synthetic", "data.num_records=400", "model=mlp", "fl.num_hospitals=4", "fl.partition.scheme=dirichlet",
       "train.batch_size=16", "audit.enabled=false"]
DP = ["privacy=dpsgd", "privacy.epsilon=3", "privacy.reproducible_noise=true"]


def _trainers(tmp_path, overrides: list[str]):
    prep = prepare_experiment(compose_typed(overrides, tmp_path))
    return [build_trainer(cfg=prep.cfg, plan=prep.privacy, num_classes=prep.num_classes,
                          num_features=prep.num_features, inputs=shard.inputs, labels=shard.labels,
                          input_map=prep.dealt.input_map, device=torch.device("cpu"), hospital=k,
                          noise=NoiseSource.reproducible(prep.cfg.seed, hospital(k)))
            for k, shard in enumerate(prep.dealt.train_shards)]


def _starts(trainers) -> list[dict]:
    """Different start parameters per hospital (a personalised strategy sends such), from one model's."""
    base = trainers[0].export()
    rng = np.random.default_rng(0)
    return [{name: (v + 0.01 * rng.standard_normal(v.shape)).astype(v.dtype) for name, v in base.items()}
            for _ in trainers]


@pytest.mark.parametrize("overrides", [
    [*EHR],
    [*EHR, "train.optimizer=adam", "train.lr=0.01"],
    [*EHR, *DP],
    [*TINY, "data.augment=flips", *DP],
], ids=["mlp-sgd", "mlp-adam", "mlp-dpsgd", "small_cnn-flips-dpsgd"])
def test_hospitals_trained_together_equal_one_after_another(tmp_path, overrides):
    apart, together = _trainers(tmp_path / "apart", overrides), _trainers(tmp_path / "together", overrides)
    sizes = {t.num_samples for t in apart}
    starts = _starts(apart)
    for round_idx in (1, 2):  # the second round continues each accountant and draws new streams
        expected = [trainer.fit(start, epochs=1, round_idx=round_idx) for trainer, start in zip(apart, starts)]
        got = fit_together(together, starts, epochs=1, round_idx=round_idx)
        for (params, metrics), (want_params, want_metrics) in zip(got, expected):
            assert params.keys() == want_params.keys()
            for name, value in want_params.items():
                assert np.allclose(params[name], value, rtol=1e-4, atol=1e-5), name
            assert metrics.keys() == want_metrics.keys()
            for key, value in want_metrics.items():
                if key != "fit_seconds":
                    assert metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
        starts = [params for params, _ in got]
    assert not np.allclose(starts[0][next(iter(starts[0]))], _starts(apart)[0][next(iter(starts[0]))])  # it trained
    if "privacy=dpsgd" in overrides:  # each accountant counted its own steps
        assert [t.privacy_state() for t in together] == [t.privacy_state() for t in apart]
    else:  # shards of different sizes take different numbers of steps: the early finishers were held still
        assert len(sizes) > 1 and len({m["local_steps"] for _, m in got}) > 1


def test_what_cannot_train_together_is_refused_naming_why(tmp_path):
    proximal = _trainers(tmp_path / "fedprox", [*EHR, "strategy=fedprox"])
    assert "proximal" in why_not_together(proximal[0].model, proximal[0])
    with pytest.raises(ValueError, match="fl.train_together=1"):
        fit_together(proximal, [t.export() for t in proximal], epochs=1, round_idx=1)
    dropout = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.2))
    assert "dropout" in why_not_together(dropout)
    assert why_not_together(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.0))) is None
    assert "BatchNorm" in why_not_together(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3)))


def test_a_round_is_split_into_one_group_per_process_at_most_train_together_each():
    assert together_groups([4, 0, 2, 7, 9], together=1, processes=2) == [(0,), (2,), (4,), (7,), (9,)]
    assert together_groups([4, 0, 2, 7, 9], together=8, processes=2) == [(0, 2, 4), (7, 9)]
    assert together_groups(list(range(6)), together=2, processes=1) == [(0, 1), (2, 3), (4, 5)]
    assert together_groups([], together=4, processes=2) == []


def _in_turn_and_together(cfg):
    """The run of ``cfg`` in turn and trained together in groups of 4, checked for the same models and ledger."""
    in_turn = run_in_process(cfg)
    together = run_in_process(with_changes(cfg, **{"fl.train_together": 4}))
    for got, want in zip(together.final_params, in_turn.final_params):
        for name, value in want.items():
            assert np.allclose(got[name], value, rtol=1e-4, atol=1e-5), name
    assert together.summary.privacy == in_turn.summary.privacy
    return in_turn, together


def test_a_federation_trained_together_equals_one_trained_in_turn(tmp_path):
    """The whole round loop in process, under DP-SGD with client sampling: groups of hospitals give the models,
    accountants and sampled cohorts of hospitals taking turns, to float tolerance."""
    cfg = compose_typed([*EHR, *DP, "data.num_records=900", "fl.partition.alpha=5", "fl.num_hospitals=6",
                         "fl.clients_per_round=4", "fl.rounds=2", "fl.local_epochs=1", "cluster=inprocess"], tmp_path)
    in_turn, together = _in_turn_and_together(cfg)
    assert [r["clients"] for r in together.rounds] == [r["clients"] for r in in_turn.rounds]
    assert max(len(r["clients"]) for r in in_turn.rounds) > 1  # some round had a group to train together


def test_train_together_is_refused_before_any_round_where_the_strategy_adds_to_each_step(tmp_path):
    with pytest.raises(FedrayError, match=r"fl.train_together=4: .*proximal.*set fl.train_together=1"):
        prepare_experiment(compose_typed([*EHR, "strategy=fedprox", "fl.train_together=4"], tmp_path))
    prepare_experiment(compose_typed([*EHR, "fl.train_together=4"], tmp_path / "mlp"))  # the MLP may


def test_an_audited_federation_trained_together_equals_one_trained_in_turn(tmp_path):
    """The audit's gradient canaries join each hospital's step in lockstep as in its turn alone: the same models,
    ledger and canary scores (each hospital's hook draws from its own stream, so the order of hospitals is moot)."""
    cfg = compose_typed([*EHR, *DP, "data.num_records=900", "fl.partition.alpha=5", "fl.rounds=2", "fl.local_epochs=1",
                         "cluster=inprocess", "audit.enabled=true", "audit.reference_models=0"], tmp_path)
    in_turn, together = _in_turn_and_together(cfg)
    got, want = (run.summary.audit["canaries"]["gradient"] for run in (together, in_turn))
    numbers = {key for key, value in want.items() if isinstance(value, (int, float)) and not isinstance(value, bool)}
    assert numbers and {key: got[key] for key in numbers} == pytest.approx({key: want[key] for key in numbers},
                                                                          rel=1e-3, abs=1e-6)
