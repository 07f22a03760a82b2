"""train.physical_batch_size: a step's batch in several forward/backward passes is the same step, under DP-SGD
(clipped into one sum, noised and counted once) and without DP (the batch mean's gradient)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY, compose_typed

from fedray.federation.experiment import prepare_experiment
from fedray.privacy.randomness import NoiseSource, hospital
from fedray.training import build_trainer
from fedray.training.local import physical_passes

DP = ["privacy=dpsgd", "privacy.epsilon=3", "privacy.reproducible_noise=true"]


def test_passes_cover_the_batch_in_order():
    assert physical_passes(7, 3) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert physical_passes(7, 0) == physical_passes(7, 7) == physical_passes(7, 9) == [slice(0, 7)]
    assert physical_passes(0, 3) == [slice(0, 0)]  # an empty Poisson batch is still one (noise-only) step


def _one_round(tmp_path, overrides: list[str], start: dict | None = None):
    prep = prepare_experiment(compose_typed([*TINY, "train.batch_size=8", *overrides], tmp_path))
    shard = prep.dealt.train_shards[0]
    trainer = build_trainer(cfg=prep.cfg, plan=prep.privacy, num_classes=prep.num_classes, num_features=None,
                            inputs=shard.inputs, labels=shard.labels, input_map=prep.dealt.input_map,
                            device=torch.device("cpu"), hospital=0,
                            noise=NoiseSource.reproducible(prep.cfg.seed, hospital(0)))
    start = trainer.export() if start is None else start
    params, metrics = trainer.fit(start, epochs=1, round_idx=1)
    return start, params, metrics, trainer


@pytest.mark.parametrize("privacy", [[], DP, [*DP, "privacy.grad_sample_mode=ghost"],
                                     [*DP, "privacy.grad_sample_mode=bookkeeping"]],
                         ids=["non-private", "dp-sgd", "dp-sgd-ghost", "dp-sgd-bookkeeping"])
def test_a_batch_in_passes_takes_the_same_steps(tmp_path, privacy):
    start, whole, whole_metrics, _ = _one_round(tmp_path / "whole", privacy)
    _, split, split_metrics, trainer = _one_round(tmp_path / "split", [*privacy, "train.physical_batch_size=3"],
                                                  start)
    assert not all(np.array_equal(whole[name], value) for name, value in start.items())  # it trained
    for name, value in whole.items():
        assert np.allclose(split[name], value, rtol=1e-4, atol=1e-6), name
    assert split_metrics["local_steps"] == whole_metrics["local_steps"]
    if privacy:  # the accountant counts logical steps, not passes
        assert trainer.privacy_state()["dp_steps"] == whole_metrics["local_steps"]
