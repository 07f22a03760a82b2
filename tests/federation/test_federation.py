"""The engine on a session-scoped Ray with tiny synthetic data and the small CNN (the baselines' budget in process)."""

from __future__ import annotations

import numpy as np
import pytest
import ray
import torch

from conftest import same_params, torch_threads, with_changes

from fedray.federation.driver import Driver
from fedray.federation.experiment import (
    actor_resources,
    driver_kwargs,
    hospital_setups,
    prepare_experiment,
    run_experiment,
    run_in_process,
)
from fedray.federation.pool import process_pool
from fedray.federation.proxy import RayHospitals
from fedray.models import build_model
from fedray.strategies import ClientResult


def test_same_seed_same_final_weights_and_different_seed_differs(tiny_run, tiny_cfg):
    first = tiny_run  # the session's run of this config (conftest)
    second = run_experiment(tiny_cfg)
    other = run_experiment(with_changes(tiny_cfg, seed=1))
    assert same_params(first.final_params, second.final_params)
    assert same_params(first.best_params, second.best_params)  # the best-validation model is reproducible too
    assert not same_params(first.final_params, other.final_params)
    assert [r["round"] for r in first.rounds] == [1, 2]
    assert all(len(r["clients"]) == 5 for r in first.rounds)


def test_killed_hospital_is_restarted_and_the_round_retried(tiny_run, tiny_cfg):
    clean = tiny_run  # the session's run of tiny_cfg's config
    faulty = run_experiment(tiny_cfg, kill_hospital=(2, 2))
    assert faulty.summary.hospital_restarts >= 1
    assert [len(r["clients"]) for r in faulty.rounds] == [5, 5]
    # The retried round starts from the same global model with the same seeded batches.
    assert same_params(clean.final_params, faulty.final_params)


def test_driver_receives_only_parameters_counts_and_metrics(ray_session, tiny_cfg, monkeypatch):
    prep = prepare_experiment(tiny_cfg)
    driver_res, hospital_res = actor_resources(tiny_cfg.resources, gpus_present=False)
    # This process's pool, as run_experiment takes it (same resources and restarts): the actors the runs before
    # started, reused instead of six new processes. Reused actors keep nothing of earlier runs (test_pool.py).
    pool = process_pool()
    _, hosts = pool.hosts(count=5, driver_res=driver_res, hospital_res=hospital_res,
                          max_restarts=tiny_cfg.fl.max_restarts)
    received = []
    real_get = ray.get

    def recording_get(refs, *args, **kwargs):
        values = real_get(refs, *args, **kwargs)
        received.extend(values if isinstance(refs, list) else [values])
        return values

    try:
        hospitals = RayHospitals(hosts, hospital_setups(prep, hospital_res, store=ray.put), plan=prep.privacy,
                                 capacity=1, max_round_retries=0)
        # The driver runs in this process, so every object it fetches from a hospital passes here.
        driver = Driver(**driver_kwargs(prep, hospitals, driver_res))
        monkeypatch.setattr(ray, "get", recording_get)
        driver.run_round(1)
    except BaseException:
        pool.close()  # as run_experiment does: never hand a half-finished party to the next test
        raise
    finally:
        monkeypatch.undo()
    pool.release()  # drop the parties, keep the processes for the tests after this one
    model = build_model(tiny_cfg.model, num_classes=prep.num_classes, image_size=tiny_cfg.data.image_size)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    train_labels = np.concatenate([s.labels for s in prep.dealt.train_shards])
    fits = [v for v in received if isinstance(v, ClientResult)]
    evals = [v for v in received if isinstance(v, dict)]
    assert len(fits) == 5 and len(evals) == 5 and len(received) == 10
    for result in fits:
        assert {k: v.shape for k, v in result.params.items()} == shapes
        assert isinstance(result.num_samples, int)
        assert all(isinstance(v, float) for v in result.metrics.values())
    for metrics in evals:  # own-validation metrics: scalars and a confusion matrix, never records
        assert set(metrics) <= {"loss", "accuracy", "balanced_accuracy", "precision", "recall", "f1", "auc",
                                "confusion_matrix"}
        assert np.asarray(metrics["confusion_matrix"]).sum() < len(train_labels)


# In process (no Ray): the budget is the dealing's and the driver's, the same whoever carries the calls
# (test_pool.py checks an in-process run equals the Ray run); both baselines run on Ray in test_sweep_e2e's seed_isic
# sweep, and on Ray a centralized run (one actor) would stop four of the pooled actors the next test restarts.
@pytest.mark.parametrize("mode", ["centralized", "local"])
def test_baselines_use_the_same_budget(tiny_cfg, mode):
    result = run_in_process(with_changes(tiny_cfg, mode=mode))
    sizes = result.summary.data.hospital_train_sizes
    if mode == "centralized":
        assert len(sizes) == 1 and len(result.rounds[0]["clients"]) == 1
        assert sizes[0] == sum(len(s) for s in prepare_experiment(tiny_cfg).dealt.train_shards)
    else:
        assert len(result.final_params) == 5
        assert len(result.rounds[-1]["test_per_hospital"]) == 5
    assert 0.0 <= result.summary.final_test["accuracy"] <= 1.0


def test_in_process_each_party_uses_the_threads_of_the_process(tiny_cfg, monkeypatch):
    # The parties take turns in one process, so none should be pinned to an actor's one-CPU share.
    import fedray.federation.driver as driver_module
    import fedray.federation.hospital as hospital_module

    asked = []

    def recording(configure):
        def configure_and_record(**kwargs):
            asked.append(kwargs["num_cpus"])
            return configure(**kwargs)
        return configure_and_record

    for module in (driver_module, hospital_module):
        monkeypatch.setattr(module, "configure_process", recording(module.configure_process))
    with torch_threads(2):
        run_in_process(with_changes(tiny_cfg, **{"fl.rounds": 1}))
        assert torch.get_num_threads() == 2  # the caller's count, restored
    assert len(asked) == 1 + 5 and set(asked) == {2}  # the driver and the five hospitals
