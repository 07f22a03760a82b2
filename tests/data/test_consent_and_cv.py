"""Informed consent, k-fold cross-validation and model/mechanism pairs: pure functions, no Ray."""

from __future__ import annotations

import dataclasses

import math

import numpy as np
import pytest
import torch

from fedray.config import replace
from fedray.data.splits import load_splits
from fedray.data.deal import deal_data
from fedray.errors import FedrayError
from fedray.audit.auditor import audit_inputs
from fedray.federation.experiment import prepare_experiment
from fedray.metrics import mean_and_std
from fedray.privacy.mechanisms import NonPrivate, check_pair
from fedray.privacy.preprocessing import fit_input_map
from fedray.results import DataSummary
from fedray.results.crossval import combine_fold_summaries

from conftest import data_cfg, compose_typed, run_summary

EHR = ["data=ehr_synthetic", "data.num_records=400", "model=logreg", "fl.rounds=1"]


def _all_ids(splits) -> set[str]:
    return {str(i) for part in (splits.train, splits.val, splits.test) for i in part.ids}


def test_records_without_consent_reach_no_split_no_shard_and_no_audit_pool(tmp_path):
    cfg = compose_typed([*EHR, "data.consent_rate=0.7"], tmp_path)
    prep = prepare_experiment(cfg)
    splits = prep.dealt.splits
    everyone = load_splits(replace(cfg.data, consent_rate=1.0), seed=cfg.seed)
    assert 0.2 < splits.without_consent / 400 < 0.4
    assert len(_all_ids(splits)) == 400 - splits.without_consent
    from fedray.data.datasets.ehr_synthetic.loader import make_ehr

    _, consent = make_ehr(num_records=400, positive_rate=0.25, consent_rate=0.7, label_noise=0.0, seed=cfg.seed)
    refused = {f"ehr/{i:06d}" for i in np.flatnonzero(~consent)}
    assert refused and not refused & _all_ids(splits)
    assert refused <= _all_ids(everyone)  # they exist, and only consent kept them out
    shard_ids = {str(i) for shard in prep.dealt.train_shards + prep.dealt.val_shards for i in shard.ids}
    pool_ids = {str(i) for pool in ("members", "nonmembers", "reference")
                for i in _pool_ids(prep, pool)}
    assert not refused & shard_ids and not refused & pool_ids


def _pool_ids(prep, pool: str) -> list[str]:
    from fedray.audit.pools import audit_pools
    from fedray.data.deal import union

    pools = audit_pools(members=union(prep.dealt.train_shards),
                        held_out=union([prep.dealt.splits.val, prep.dealt.splits.test]), seed=0, max_records=1000)
    return list(pools[pool].ids)


def test_consent_list_keeps_only_listed_images_and_rejects_unknown_ids(tmp_path):
    data = data_cfg("synthetic", image_size=8, num_classes=2, samples_per_class=30)
    listed = [f"synthetic/{i:06d}" for i in range(0, 60, 2)]  # every other image consented
    consent_file = tmp_path / "consent.txt"
    consent_file.write_text("# opt-in register\n" + "\n".join(listed) + "\n\n")
    splits = load_splits(replace(data, consent_list=str(consent_file)), seed=0)
    assert _all_ids(splits) == set(listed) and splits.without_consent == 30
    consent_file.write_text("synthetic/000000\nsynthetic/999999\n")
    with pytest.raises(FedrayError, match="names 1 record.*synthetic/999999"):
        load_splits(replace(data, consent_list=str(consent_file)), seed=0)
    with pytest.raises(FedrayError, match="does not exist"):
        load_splits(replace(data, consent_list=str(tmp_path / "missing.txt")), seed=0)


def test_k_folds_test_every_record_exactly_once_and_never_train_on_it(tmp_path):
    cfg = compose_typed([*EHR, "cv.folds=4"], tmp_path)
    tested = []
    for fold in range(4):
        fold_cfg = replace(cfg, **{"cv.fold": fold})
        dealt = deal_data(fold_cfg, fit_input_map=lambda shards: fit_input_map(fold_cfg, shards))
        test_ids = set(dealt.splits.test.ids)
        assert not test_ids & set(dealt.splits.train.ids) and not test_ids & set(dealt.splits.val.ids)
        assert dealt.splits.fold == (fold, 4)
        tested += list(test_ids)
    assert len(tested) == len(set(tested)) == 400 - dealt.splits.without_consent


def test_more_folds_than_the_smallest_class_is_one_clear_error():
    data = data_cfg("synthetic", image_size=8, num_classes=2, samples_per_class=6)
    with pytest.raises(FedrayError, match=r"cv.folds=7 is larger than the smallest class .* has 6 .* at most 6"):
        load_splits(data, seed=0, fold=(0, 7))


def test_fold_summaries_combine_to_mean_and_sample_std():
    def summary(acc: float, eps: float, auc: float):
        metrics = {"accuracy": acc, "auc": 0.5}
        return run_summary(model="logreg", rounds=1, best_val_round=1, final_test=metrics, final_val=metrics,
                           best_val_round_test=metrics, final_test_confusion_matrix=[[1, 0], [1, 1]],
                           data=DataSummary(train=8, val=1, test=3, without_consent=2, fold=[0, 2]),
                           privacy={"epsilon": eps}, audit={"strongest": {"attack": "lira_offline", "auc": auc}},
                           wall_seconds=2.0, seconds_per_round=1.0)

    combined = combine_fold_summaries([summary(0.6, 0.9, 0.52), summary(0.8, 1.0, 0.56)])
    assert combined.final_test["accuracy"] == pytest.approx(0.7)
    assert combined.final_test_std["accuracy"] == pytest.approx(math.sqrt(0.02))  # ddof = 1
    assert combined.final_test_confusion_matrix == [[2, 0], [2, 2]]
    assert combined.epsilon == 1.0 and "up to 1 x epsilon" in combined.privacy["cv_note"]
    assert combined.audit["strongest"]["auc"] == pytest.approx(0.54)
    assert combined.folds == 2 and combined.wall_seconds == 4.0 and combined.best_val_round is None
    assert combined.data.fold is None and combined.data.per_fold_sizes == [{"train": 8, "val": 1, "test": 3}] * 2
    assert mean_and_std([{"x": math.inf}, {"x": math.inf}])[0]["x"] == math.inf


@pytest.mark.parametrize("model, family, mechanism", [
    ("resnet18", "image", "laplace_input"), ("resnet18", "image", "dp_tree"),
    ("mlp", "table", "dp_tree"), ("random_forest", "tree", "dpsgd"), ("random_forest", "tree", "dpfedavg"),
])
def test_a_pair_that_does_not_exist_names_the_pairs_that_do(model, family, mechanism):
    with pytest.raises(FedrayError) as err:
        check_pair(model, family, mechanism)
    assert f"{model} cannot be trained with privacy={mechanism}" in str(err.value)
    assert "mlp, logreg, svm x none|dpsgd|distributed_dpsgd|dpfedavg|laplace_input" in str(err.value)
    assert "decision_tree, random_forest x none|laplace_input|dp_tree" in str(err.value)


def test_laplace_rows_are_noisy_once_per_hospital_and_the_release_is_keyed_by_a_secret(tmp_path):
    from fedray.privacy.randomness import NoiseSource, hospital as party
    from fedray.training import build_trainer

    cfg = compose_typed([*EHR, "privacy=laplace_input", "privacy.epsilon=1"], tmp_path)
    prep = prepare_experiment(cfg)
    shard = prep.dealt.train_shards[0]
    plan = prep.privacy

    def rows(plan, hospital: int = 0, key: int = 1234, apply_mechanism: bool = True) -> torch.Tensor:
        return build_trainer(cfg=prep.cfg, plan=plan, num_classes=2, num_features=prep.num_features,
                             inputs=shard.inputs, labels=shard.labels, input_map=prep.dealt.input_map,
                             device=torch.device("cpu"), hospital=hospital,
                             noise=NoiseSource.secret(party(hospital), release_key=key),
                             apply_mechanism=apply_mechanism).inputs

    noisy = rows(plan)
    assert torch.equal(noisy, rows(plan))  # a restarted hospital (same release key) re-creates the same release
    assert not torch.equal(noisy, rows(plan, hospital=1)) and not torch.equal(noisy, rows(plan, key=99))
    assert not torch.allclose(noisy, shard.inputs)
    assert torch.equal(rows(plan, apply_mechanism=False), shard.inputs)  # the auditor's reference models
    baseline = NonPrivate(**{f.name: getattr(plan, f.name) for f in dataclasses.fields(NonPrivate)})
    assert torch.equal(rows(baseline), shard.inputs)
    assert prep.privacy.ledger([{}] * 5)["delta"] == 0.0


def test_audit_members_are_true_rows_not_the_noisy_release(tmp_path):
    cfg = compose_typed([*EHR, "privacy=laplace_input", "privacy.epsilon=1"], tmp_path)
    prep = prepare_experiment(cfg)
    members = audit_inputs(prep, final_params=[{}], resources={}, validation_choices={})["pools"]["members"]["inputs"]
    train_rows = {tuple(r) for shard in prep.dealt.train_shards for r in shard.inputs.numpy()}
    assert all(tuple(r) in train_rows for r in members)
