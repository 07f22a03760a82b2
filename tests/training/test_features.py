"""Frozen-feature training (fedray.training.features): the cache changes the cost, never the result."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TINY, compose_typed

from fedray.data.augment import random_flips
from fedray.federation.experiment import prepare_experiment, run_experiment
from fedray.privacy.randomness import NoiseSource, hospital
from fedray.results import write_run
from fedray.training import build_evaluator, build_trainer
from fedray.progress import Progress
from fedray.training.features import Features, FeatureStore, pick_flip_view, split_frozen

LITE0_HEAD = [*TINY, "model=efficientnet_lite0", "model.pretrained=true", "model.finetune=head",
              "data.image_size=32", "data.augment=flips", "paths.feature_cache_dir=null"]


def _trainer(tmp_path, overrides: list[str], *, k: int = 0):
    prep = prepare_experiment(compose_typed(overrides, tmp_path))
    shard = prep.dealt.train_shards[k]
    return build_trainer(cfg=prep.cfg, plan=prep.privacy, num_classes=prep.num_classes,
                         num_features=None, inputs=shard.inputs, labels=shard.labels,
                         input_map=prep.dealt.input_map, device=torch.device("cpu"), hospital=k,
                         noise=NoiseSource.reproducible(prep.cfg.seed, hospital(k))), prep


def _two_rounds(trainer, params: dict) -> dict:
    torch.manual_seed(7)  # the head's dropout draws from the global generator, seeded once per hospital process
    for round_idx in (1, 2):
        params, _ = trainer.fit(params, epochs=1, round_idx=round_idx)
    return params


@pytest.mark.parametrize("privacy", [[], ["privacy=dpsgd", "privacy.epsilon=3", "privacy.reproducible_noise=true"]],
                         ids=["non-private", "dp-sgd"])
def test_training_the_head_on_cached_features_equals_training_the_whole_model(tmp_path, privacy):
    cached, _ = _trainer(tmp_path, [*LITE0_HEAD, *privacy])
    direct, _ = _trainer(tmp_path, [*LITE0_HEAD, *privacy, "train.cache_features=false"])
    assert cached.encoder is not None and direct.encoder is None
    assert cached.inputs.shape[1:] == (4, 1280)  # four flip views of the head's 1280 inputs per image

    start = cached.export()
    after_cached, after_direct = _two_rounds(cached, start), _two_rounds(direct, start)
    assert after_cached.keys() == after_direct.keys()  # the full model's state dict is still what travels
    for name in after_direct:
        np.testing.assert_allclose(after_cached[name], after_direct[name], rtol=1e-4, atol=1e-5, err_msg=name)
    assert not np.allclose(after_cached["_fc.weight"], start["_fc.weight"])  # the head did train
    frozen = [n for n in after_direct if not n.startswith("_fc.")]
    assert all(np.array_equal(after_cached[n], after_direct[n]) for n in frozen)


def test_cached_evaluation_predicts_what_the_whole_model_predicts(tmp_path):
    prep = prepare_experiment(compose_typed(LITE0_HEAD, tmp_path))
    shape = dict(num_classes=prep.num_classes, num_features=None, input_map=prep.dealt.input_map,
                 device=torch.device("cpu"))
    cfg_direct = compose_typed([*LITE0_HEAD, "train.cache_features=false"], tmp_path)
    cached = build_evaluator(prep.cfg, prep.privacy, **shape)
    direct = build_evaluator(cfg_direct, prep.privacy, **shape)
    direct.load(cached.export())
    images = prep.dealt.splits.test.inputs
    encoded = cached.encode(images)
    assert isinstance(encoded, Features) and len(encoded) == len(images)
    np.testing.assert_allclose(cached.predict_proba(encoded), direct.predict_proba(images), atol=1e-5)
    np.testing.assert_allclose(cached.predict_proba(images), direct.predict_proba(images), atol=1e-5)


def test_a_cached_view_is_the_flip_random_flips_draws_from_the_same_generator():
    images = torch.arange(6 * 3 * 4 * 4, dtype=torch.float32).view(6, 3, 4, 4)
    views = torch.stack([images, images.flip(-1), images.flip(-2), images.flip(-1).flip(-2)], dim=1)
    flipped = random_flips(images, torch.Generator().manual_seed(3))
    picked = pick_flip_view(views.flatten(2), torch.Generator().manual_seed(3))
    assert torch.equal(picked, flipped.flatten(1))


def test_a_frozen_part_with_an_active_dropout_is_not_cut():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 4),
                                torch.nn.Dropout(0.2), torch.nn.Linear(4, 2))
    for p in [*model[0].parameters(), *model[2].parameters()]:
        p.requires_grad_(False)
    assert split_frozen(model, "4", torch.zeros(2, 4)) is None  # dropout 1 runs before frozen layer 2
    model[1].p = 0.0
    split = split_frozen(model, "4", torch.zeros(2, 4))
    assert split is not None and list(split.head_side) == [model[3], model[4]]  # the head keeps its dropout
    model[2].weight.requires_grad_(True)
    assert split_frozen(model, "4", torch.zeros(2, 4)) is None  # a trainable layer outside the head


def test_the_store_computes_once_and_keys_on_the_images(tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    model[1].weight.requires_grad_(True)
    split = split_frozen(model, "1", torch.zeros(2, 3, 2, 2))

    class Scale:
        def apply(self, batch):
            return batch.float() / 255

        def state_dict(self):
            return {"kind": "scale"}

    store, images = FeatureStore(tmp_path / "cache"), torch.randint(0, 255, (5, 3, 2, 2), dtype=torch.uint8)
    first, _, from_disk_first = store.load_or_compute(split, images, Scale(), device=torch.device("cpu"), views=4)
    again, _, from_disk_again = store.load_or_compute(split, images, Scale(), device=torch.device("cpu"), views=4)
    other, _, from_disk_other = store.load_or_compute(split, images.flip(0), Scale(), device=torch.device("cpu"),
                                                      views=4)
    assert (from_disk_first, from_disk_again, from_disk_other) == (False, True, False)
    assert torch.equal(first, again) and first.shape == (5, 4, 12)
    assert torch.equal(first[:, 1], (images.flip(-1).float() / 255).flatten(1))
    # as sensitive as the images: the owner alone may list the cache or read a file of it
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    assert {f.stat().st_mode & 0o777 for f in (tmp_path / "cache").iterdir()} == {0o600}


def test_extraction_progress_states_shares_rate_and_time_left_never_counts(capsys):
    progress = Progress("frozen features", every_s=0.0)  # drawn at every update
    for done in (128, 384, 512):
        progress(done, 512)
    out = capsys.readouterr().out
    for share in ("25%", "75%", "100%"):
        assert f"frozen features: {share:>4}" in out
    assert "left" in out and "%/s" in out  # the time left and the rate, in percent per second
    without_rates = re.sub(r"[\d.]+%/s", "", out)  # a rate's digits may spell a count by chance
    assert not re.search(r"\b(128|384|512)\b", without_rates)


def test_progress_stays_silent_in_a_short_phase(capsys):
    progress = Progress("decoding images", every_s=60.0)
    for done in range(1, 9):
        progress(done, 8)
    assert capsys.readouterr().out == ""


def test_a_run_says_what_it_cached_and_evaluates_every_kth_round(ray_session, tmp_path):
    overrides = [*TINY, "model.finetune=head", f"paths.feature_cache_dir={tmp_path / 'cache'}", "fl.rounds=3",
                 "fl.eval_every=2"]
    result = run_experiment(compose_typed(overrides, tmp_path / "a"))
    cache = result.summary.feature_cache
    assert cache["driver"]["records"] == result.summary.data.val + result.summary.data.test
    assert [h["records"] for h in cache["hospitals"]] == [
        n + v for n, v in zip(result.summary.data.hospital_train_sizes, _val_sizes(result))]
    assert not cache["driver"]["from_disk"] and len(list((tmp_path / "cache").glob("*.pt"))) == 2 + 5 * 2
    assert "computed" in result.rounds[0]["feature_cache"]
    assert ["val" in r for r in result.rounds] == [False, True, True]  # every 2nd round, and always the last
    assert result.summary.best_val_round in (2, 3)
    write_run(tmp_path / "written", resolved_cfg=compose_typed(overrides, tmp_path / "a"), rounds=result.rounds,
              summary=result.summary, models=(result.final_params, result.best_params))
    assert set(pd.read_parquet(tmp_path / "written" / "rounds.parquet").query("round == 1")["split"]) == {"train"}


def _val_sizes(result) -> list[int]:
    return [len(shard) for shard in result.dealt.val_shards]
