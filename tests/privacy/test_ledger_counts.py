"""The ledger explains itself: each hospital's row reconciles N = Σ n_k, q = B/n_k and its ε; counts only where public.

Pure: no Ray. fedray/privacy/mechanisms/counts.py builds the rows, fedray/privacy/ledger.py says why the counts are
public under record-level DP and withheld under client-level DP.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import TINY, compose_typed

from fedray.audit.plan import AuditPlan, Inserted, audit_slot_counts, slot_counts
from fedray.privacy.ledger import compose_epsilon
from fedray.privacy.mechanisms import PlanContext, plan_privacy
from fedray.results.run_dir import check_outputs

SHARDS = (84, 80, 90, 84, 82)  # the data's training records per hospital: 420
DEALT = SimpleNamespace(train_shards=[np.zeros(n) for n in SHARDS])
EHR = ["data=ehr_synthetic", "data.num_records=300", "model=mlp", "fl.rounds=2", "train.batch_size=8",
       "audit.enabled=false"]


def _audit(inclusion_seed: int = 0, m: int = 40) -> AuditPlan:
    """m input slots dealt round-robin (8 to each of 5 hospitals), a secret half of them filled."""
    included = np.random.default_rng(inclusion_seed).random(m) < 0.5
    return AuditPlan(input=Inserted(design=None, included=included, hospitals=np.arange(m) % 5))


def _ledger(overrides, tmp_path, audit: AuditPlan | None = None, **context):
    cfg = compose_typed(overrides, tmp_path)
    plan = plan_privacy(cfg, PlanContext(slot_counts=tuple(slot_counts(DEALT, audit)),
                                         audit_slots=tuple(audit_slot_counts(DEALT, audit)), **context))
    return cfg, plan, plan.ledger(plan.planned_states())


def test_each_dpsgd_row_reconciles_its_slots_its_sample_rate_its_steps_and_its_epsilon(tmp_path):
    cfg, plan, ledger = _ledger([*TINY, "privacy=dpsgd", "privacy.epsilon=2"], tmp_path, _audit())
    rows = ledger["hospitals"]
    assert [r["training_records"] for r in rows] == list(SHARDS)
    assert [r["audit_record_slots"] for r in rows] == [8] * 5
    for row in rows:
        assert row["record_slots"] == row["training_records"] + row["audit_record_slots"]
        assert row["expected_batch_size"] == cfg.train.batch_size
        assert row["sample_rate"] == cfg.train.batch_size / row["record_slots"]  # q = B / n_k, canary slots in n_k
        assert row["steps"] == row["planned_steps"] == \
            cfg.fl.rounds * cfg.fl.local_epochs * round(1 / row["sample_rate"])
        event = ledger["events"][f"hospital {row['hospital']}"]
        assert str(row["sample_rate"]) in event[0] and str(row["noise_multiplier"]) in event[0]
        assert row["epsilon"] == compose_epsilon(plan.events(plan.planned_states())[f"hospital {row['hospital']}"],
                                                 delta=ledger["delta"])
    totals = ledger["record_counts"]
    assert totals["published"] is True
    assert totals["record_slots"] == sum(r["record_slots"] for r in rows) == 460
    assert (totals["training_records"], totals["audit_record_slots"]) == (420, 40)
    assert "N=460 record slots (420 training records + 40 audit record slots)" in ledger["delta_note"]
    assert ledger["delta"] < 1 / totals["record_slots"]
    assert ledger["epsilon"] == max(r["epsilon"] for r in rows)
    assert ledger["bounding_unit"] == f"hospital {max(rows, key=lambda r: r['epsilon'])['hospital']}"
    assert "units" not in ledger  # each unit's ε is its hospital's row


def test_without_an_audit_every_slot_is_a_training_record(tmp_path):
    _, _, ledger = _ledger([*TINY, "privacy=dpsgd", "privacy.epsilon=2"], tmp_path)
    assert [r["record_slots"] for r in ledger["hospitals"]] == [r["training_records"] for r in ledger["hospitals"]]
    assert ledger["record_counts"]["audit_record_slots"] == 0 and ledger["record_counts"]["training_records"] == 420


def test_the_ledger_never_says_which_audit_slots_the_auditor_filled(tmp_path):
    ledgers = [json.dumps(_ledger([*TINY, "privacy=dpsgd", "privacy.epsilon=2"], tmp_path, _audit(seed))[2],
                          sort_keys=True) for seed in (0, 1)]
    assert ledgers[0] == ledgers[1]


@pytest.mark.parametrize("sampled", [None, 2])
def test_client_level_rows_state_the_schedule_and_withhold_every_record_count(tmp_path, sampled):
    overrides = [*TINY, "privacy=dpfedavg", "privacy.epsilon=5", f"fl.clients_per_round={sampled or 'null'}"]
    _, plan, ledger = _ledger(overrides, tmp_path, _audit())
    totals = ledger["record_counts"]
    assert totals["published"] is False and totals["reason"].startswith("withheld")
    assert set(totals) == {"published", "reason"}
    for row in ledger["hospitals"]:
        assert set(row) == {"hospital", "sample_rate", "noise_multiplier", "rounds", "epsilon"}
        assert row["sample_rate"] == (sampled or 5) / 5 and row["rounds"] == 2
        assert row["noise_multiplier"] == ledger["max_noise_multiplier"] and row["epsilon"] == ledger["epsilon"]
    check_outputs({"status": "completed", "privacy": ledger}, [], models=False)  # the ledger is a public release


def test_pure_mechanisms_rows_state_the_counts_and_each_records_epsilon(tmp_path):
    _, _, ledger = _ledger([*EHR, "privacy=laplace_input", "privacy.epsilon=1"], tmp_path, _audit(),
                           num_features=8, num_classes=2)
    assert ledger["record_counts"]["published"] is True
    for row in ledger["hospitals"]:
        assert row["record_slots"] == row["training_records"] + row["audit_record_slots"]
        assert row["epsilon"] == pytest.approx(1.0)


def test_the_experiment_gives_the_plan_its_audit_slots(tmp_path):
    from fedray.federation.experiment import prepare_experiment

    cfg = compose_typed([*TINY, "privacy=dpsgd", "privacy.epsilon=2", "audit.enabled=true",
                         "audit.input_canaries=10", "audit.canaries=0"], tmp_path)
    prep = prepare_experiment(cfg)
    rows = prep.privacy.ledger(prep.privacy.planned_states())["hospitals"]
    assert [r["training_records"] for r in rows] == [len(s) for s in prep.dealt.train_shards]
    assert sum(r["audit_record_slots"] for r in rows) == 10
