"""Virtual hospitals: K hospitals taking turns on fewer processes give the results of one process each.

In process (no Ray) the residency is exercised alone: keeping one hospital
built must equal keeping all of them, under DP-SGD and DP-FedAvg, with and
without client sampling, with reproducible noise so that every stream is
compared. Over Ray, the queue on two actors must equal one actor per
hospital (``tests/federation/test_pool.py``).
"""

from __future__ import annotations

import pytest

from conftest import TINY, compose_typed, same_params, with_changes
from fedray.federation.experiment import hospital_setups, prepare_experiment, run_in_process
from fedray.federation.hospital import Hospital
from fedray.federation.pool import actor_resources, resident_hospitals
from fedray.federation.residency import NotHeld, Residency, Ticket, run_turn

PRIVATE = ["privacy.reproducible_noise=true", "privacy.epsilon=3"]
CASES = {
    "dpsgd": ["privacy=dpsgd", *PRIVATE],
    "dpsgd-sampled": ["privacy=dpsgd", *PRIVATE, "fl.clients_per_round=3"],
    "dpfedavg": ["privacy=dpfedavg", *PRIVATE],
    "dpfedavg-sampled": ["privacy=dpfedavg", *PRIVATE, "fl.clients_per_round=3"],
}


def _same_runs(a, b) -> None:
    assert same_params(a.final_params, b.final_params)
    assert same_params(a.best_params, b.best_params)
    assert a.summary.privacy == b.summary.privacy  # every hospital's accountant counted the same turns
    assert [r["test"] for r in a.rounds] == [r["test"] for r in b.rounds]
    assert [r["clients"] for r in a.rounds] == [r["clients"] for r in b.rounds]


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_hospital_kept_built_equals_all_kept(tmp_path, case):
    cfg = compose_typed([*TINY, "fl.rounds=2", *CASES[case], "audit.enabled=false", "cluster=inprocess"], tmp_path)
    turns = run_in_process(with_changes(cfg, **{"fl.resident_hospitals": 1}))  # every turn rebuilds its hospital
    kept = run_in_process(with_changes(cfg, **{"fl.resident_hospitals": 5}))
    _same_runs(turns, kept)


def test_the_residency_rebuilds_a_stale_copy_and_keeps_at_most_its_capacity(tmp_path):
    cfg = compose_typed([*TINY, "privacy=dpsgd", *PRIVATE, "audit.enabled=false"], tmp_path)
    prep = prepare_experiment(cfg)
    setups = hospital_setups(prep, actor_resources(cfg.resources, gpus_present=False)[1])
    residency = Residency()
    start = residency.hospital(Ticket(0, setups[0], {}, 0), capacity=2).trainer.export()
    result = run_turn(residency, Ticket(0, setups[0], {}, 0), Hospital.fit, (start, 1), capacity=2, advances=True)
    assert residency.held[0].turns == 1 and residency.builds == 1
    state = {k: v for k, v in result.metrics.items() if k.startswith("dp_")}
    assert state["dp_steps"] > 0
    # the same turn count: the copy is current and reused, its accountant as it was
    assert residency.hospital(Ticket(0, setups[0], state, 1), capacity=2).privacy_state() == state
    assert residency.builds == 1
    # another process trained it since (two turns): rebuilt, its accountant restored from the ticket
    later = {"dp_steps": 2 * state["dp_steps"]}
    assert residency.hospital(Ticket(0, setups[0], later, 2), capacity=2).privacy_state() == later
    assert residency.builds == 2
    for k in (1, 2, 3):  # capacity 2: the least recently used go
        residency.hospital(Ticket(k, setups[k], {}, 0), capacity=2)
    assert list(residency.held) == [2, 3]
    residency.pinned.add(2)  # a masked round's cohort stays until its masks are sent
    residency.hospital(Ticket(4, setups[4], {}, 0), capacity=1)
    assert list(residency.held) == [2, 4]
    with pytest.raises(NotHeld):
        residency.hospital(Ticket(0, setups[0], {}, 0), capacity=2, held_only=True)


def test_an_actor_keeps_its_share_of_a_small_federation_and_a_bounded_number_of_a_large_one(tmp_path):
    cfg = compose_typed([*TINY], tmp_path)
    assert resident_hospitals(cfg, 2) == 3  # five hospitals on two actors: each keeps its share, built once
    big = with_changes(cfg, **{"fl.num_hospitals": 1000})
    assert resident_hospitals(big, 2) == 8
    assert resident_hospitals(with_changes(big, **{"fl.resident_hospitals": 1}), 2) == 1
