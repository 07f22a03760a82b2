"""The hospitals proxy and the actor pool: the round loop without Ray, and reused actors that keep no state."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY, compose_typed, same_params, torch_threads, with_changes
from fedray.errors import FedrayError

from fedray.federation.experiment import run_experiment, run_in_process
from fedray.federation.pool import ActorPool


def test_round_loop_runs_in_process_and_equals_the_ray_run(ray_session, tiny_cfg):
    cfg = with_changes(tiny_cfg, **{"fl.secure_aggregation": True})  # the masked round's two steps too
    with torch_threads(1):  # each party's threads, as an actor's one CPU gives it: sums split over more may differ
        in_process = run_in_process(cfg)  # the real round loop, every party in this process
    over_ray = run_experiment(cfg)
    assert same_params(in_process.final_params, over_ray.final_params)
    assert [r["test"]["balanced_accuracy"] for r in in_process.rounds] == \
        [r["test"]["balanced_accuracy"] for r in over_ray.rounds]
    assert in_process.summary.best_val_round == over_ray.summary.best_val_round
    assert in_process.summary.privacy["aggregation"] == over_ray.summary.privacy["aggregation"]


def test_hospitals_queued_on_two_actors_give_the_results_of_one_actor_each(ray_session, tmp_path):
    """fl.actors=2: each round's sampled hospitals are queued onto two actors, each keeping one built between
    turns (the others rebuilt from their tickets); under DP-SGD with reproducible noise and client sampling, so
    that the accountants (counting only the rounds each took part in) and noise streams are compared too."""
    cfg = compose_typed([*TINY, "privacy=dpsgd", "privacy.epsilon=3", "privacy.reproducible_noise=true",
                         "fl.clients_per_round=3"], tmp_path)
    pool = ActorPool()
    try:
        shared = run_experiment(with_changes(cfg, **{"fl.actors": 2, "fl.resident_hospitals": 1}), pool=pool)
        assert len(pool.hospitals) == 2
    finally:
        pool.close()
    own = run_experiment(with_changes(cfg, **{"fl.actors": 5}))
    assert same_params(shared.final_params, own.final_params)
    assert shared.summary.privacy["epsilon"] == own.summary.privacy["epsilon"]
    assert [r["test"] for r in shared.rounds] == [r["test"] for r in own.rounds]
    assert [r["clients"] for r in shared.rounds] == [r["clients"] for r in own.rounds]
    nodes = {p["node"] for p in shared.summary.placement["hospitals"]}
    assert len(shared.summary.placement["hospitals"]) == 5 and len(nodes) == 1


def test_a_killed_actor_holding_several_hospitals_has_each_rebuilt(ray_session, tiny_cfg):
    shared = with_changes(tiny_cfg, **{"fl.actors": 2})
    clean = run_experiment(shared)
    faulty = run_experiment(shared, kill_hospital=(2, 2))  # its actor also holds other hospitals
    assert faulty.summary.hospital_restarts >= 1  # each turn lost with the actor, queued again
    assert same_params(clean.final_params, faulty.final_params)
    # fl.train_together: each actor trains its group of the round's hospitals in one turn, in lockstep; a group
    # loses its turn with the actor and is queued again whole
    grouped = run_experiment(with_changes(shared, **{"fl.train_together": 3}), kill_hospital=(2, 2))
    assert grouped.summary.hospital_restarts >= 1
    for name, value in clean.final_params[0].items():
        np.testing.assert_allclose(grouped.final_params[0][name], value, rtol=1e-4, atol=1e-5)
    # each group also evaluated in one turn: every participant's validation metrics, in hospital order
    assert [[(v["hospital"], sorted(v)) for v in r["hospital_val"]] for r in grouped.rounds] == \
        [[(v["hospital"], sorted(v)) for v in r["hospital_val"]] for r in clean.rounds]


def test_reused_actors_leave_nothing_behind(ray_session, tmp_path):
    """Experiment B after experiment A on the same actors equals B on fresh actors: model, ledger, metrics.

    Both are DP-SGD runs (an accountant, an optimizer and noise streams to leak), with reproducible noise
    so that two runs of B can be compared at all.
    """
    b_cfg = compose_typed([*TINY, "privacy=dpsgd", "privacy.epsilon=3", "privacy.reproducible_noise=true",
                           "fl.actors=2"], tmp_path)  # shared actors: the more state there is to leak
    a_cfg = with_changes(b_cfg, seed=7, **{"train.lr": 0.3, "privacy.epsilon": 1.0})
    reused = ActorPool()
    try:
        run_experiment(a_cfg, pool=reused)
        a_hosts = list(reused.hospitals)
        b_reused = run_experiment(b_cfg, pool=reused)
        assert reused.hospitals == a_hosts  # the very same actors ran B
    finally:
        reused.close()
    fresh = ActorPool()
    try:
        b_fresh = run_experiment(b_cfg, pool=fresh)
    finally:
        fresh.close()
    assert same_params(b_reused.final_params, b_fresh.final_params)
    assert same_params(b_reused.best_params, b_fresh.best_params)
    assert b_reused.summary.privacy == b_fresh.summary.privacy  # the accountant started clean
    assert [r["test"] for r in b_reused.rounds] == [r["test"] for r in b_fresh.rounds]


def test_a_failed_experiment_leaves_no_actors_to_the_next(ray_session, tiny_cfg):
    cfg = with_changes(tiny_cfg, **{"fl.actors": 2})
    pool = ActorPool()
    try:
        run_experiment(cfg, pool=pool)
        assert pool.driver is not None and len(pool.hospitals) == 2
        with pytest.raises(FedrayError, match="hospital"):
            run_experiment(with_changes(cfg, **{"train.lr": 1e9}), pool=pool)  # diverges at a hospital
        assert pool.driver is None and pool.hospitals == []
        assert run_experiment(cfg, pool=pool).summary.rounds == cfg.fl.rounds
    finally:
        pool.close()
