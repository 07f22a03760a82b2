"""train.lr_schedule: the hospitals' step size per round (pure; the trainer sets it at the start of every fit)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import TINY, compose_typed, torch_threads

from fedray.training.local import scheduled_lr


@pytest.fixture
def train_cfg(tmp_path):
    return compose_typed(TINY, tmp_path).train


def test_constant_schedule_is_train_lr(train_cfg):
    assert [scheduled_lr(train_cfg, r, 10) for r in (1, 5, 10)] == [train_cfg.lr] * 3


def test_cosine_starts_at_lr_and_decays_monotonically_to_a_small_positive_step(train_cfg):
    cosine = dataclasses.replace(train_cfg, lr_schedule="cosine")
    lrs = np.array([scheduled_lr(cosine, r, 30) for r in range(1, 31)])
    assert lrs[0] == pytest.approx(train_cfg.lr)
    assert np.all(np.diff(lrs) < 0) and 0 < lrs[-1] < 0.01 * train_cfg.lr
    assert scheduled_lr(cosine, 1, 1) == train_cfg.lr  # a one-round run (trees, the auditor's references)


def test_the_trainer_steps_with_the_scheduled_lr(tmp_path):
    from fedray.federation.experiment import hospital_setups, prepare_experiment
    from fedray.federation.hospital import Hospital
    from fedray.federation.pool import actor_resources
    from fedray.federation.residency import hospital_kwargs

    with torch_threads():  # the hospital pins them
        prep = prepare_experiment(compose_typed([*TINY, "train.lr_schedule=cosine", "fl.rounds=4"], tmp_path))
        setup = hospital_setups(prep, actor_resources(prep.cfg.resources, gpus_present=False)[1])[0]
        hospital = Hospital(**hospital_kwargs(setup))
        params = hospital.trainer.export()
        for round_idx in (1, 3):
            hospital.fit(params, round_idx)
            assert [g["lr"] for g in hospital.trainer.optimizer.param_groups] == \
                [scheduled_lr(prep.cfg.train, round_idx, 4)]
