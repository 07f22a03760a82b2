"""The whole product, run: every combination either keeps its claim or is refused in one line, before Ray.

mechanism × strategy × client sampling × secure aggregation × mode × whitening × data kind, each run for
one round on tiny data with every party in this process (:func:`run_in_process`, the real round loop and
proxy). For each run: every field of every hospital message passed the proxy's allowlist (it refuses
otherwise), every field of the run directory is covered by a release the ledger declares, and the
ledger's ε equals dp-accounting's composition of the declared events, recomputed here independently.
"""

from __future__ import annotations

import itertools
import math

import dp_accounting
import pytest

from conftest import TINY, compose_typed

from fedray.errors import FedrayError
from fedray.federation.experiment import prepare_experiment, run_in_process
from fedray.privacy.accounting import RDP_ORDERS
from fedray.results.run_dir import check_outputs, declared_outputs, output_fields

IMAGE = [*TINY, "fl.rounds=1"]
TABLE = ["data=ehr_synthetic", "data.num_records=200", "model=mlp", "fl.rounds=1", "train.batch_size=8",
         "fl.num_hospitals=5", "audit.enabled=false"]
PRODUCT = [combo for combo in itertools.product(
    ["none", "dpsgd", "dpfedavg", "laplace_input"], ["fedavg", "fedadam"], [None, 2], [False, True],
    ["federated", "centralized", "local"], ["none", "zca"], ["image", "table"])
    # Whitening is an image option, laplace_input a table mechanism, and only federated mode runs a strategy.
    if not (combo[6] == "table" and combo[5] == "zca") and not (combo[0] == "laplace_input" and combo[6] == "image")
    and not (combo[4] != "federated" and combo[1] != "fedavg")]


def _independent(events, delta, pure):
    if pure:
        return None
    acc = dp_accounting.rdp.RdpAccountant(orders=RDP_ORDERS,
                                          neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_SPECIAL)
    acc.compose(dp_accounting.ComposedDpEvent(events))
    return acc.get_epsilon(delta)


@pytest.mark.parametrize("mechanism, strategy, sampled, secure, mode, whitening, kind", PRODUCT)
def test_every_combination_keeps_its_claim_or_is_refused_in_one_line(tmp_path, mechanism, strategy, sampled, secure,
                                                                     mode, whitening, kind):
    data = [*IMAGE, f"data.whitening={whitening}", "data.whitening_epsilon_share=0.3"] if kind == "image" else TABLE
    overrides = [*data, f"privacy={mechanism}", f"strategy={strategy}", f"mode={mode}",
                 f"fl.secure_aggregation={str(secure).lower()}",
                 f"fl.clients_per_round={'null' if sampled is None else sampled}"]
    if mechanism != "none":
        overrides.append("privacy.epsilon=4")
    try:
        prep = prepare_experiment(compose_typed(overrides, tmp_path))
    except FedrayError as refused:
        assert "\n" not in str(refused) and ": " in str(refused)  # what is wrong, and the fix
        return
    result = run_in_process(prep.cfg, prepared=prep)  # every hospital message went through the proxy's check
    summary, ledger = result.summary.to_dict(), result.summary.privacy
    check_outputs(summary, result.rounds, models=True)  # provenance included: declared with the operations
    assert summary["provenance"]["libraries"]["opacus"] and summary["provenance"]["device"].startswith("in process")
    if not prep.privacy.claims_dp:
        assert ledger["epsilon"] == math.inf and ledger["guarantee"] is False
        return
    outputs = declared_outputs(summary)
    assert all(outputs.covers(name) for name in output_fields(summary, result.rounds, models=True))
    rows = ledger["hospitals"]
    if ledger["record_counts"]["published"]:  # the ledger's counts are the summary's, and add up to its N
        assert [r["training_records"] for r in rows] == summary["data"]["hospital_train_sizes"]
        assert ledger["record_counts"]["record_slots"] == sum(r["record_slots"] for r in rows)
    else:  # withheld everywhere: neither the summary nor the ledger states a hospital's count
        assert "hospital_train_sizes" not in summary["data"] and not any("record_slots" in r for r in rows)
    plan = prep.privacy
    states = result.summary.privacy.get("hospitals") or [{}] * plan.num_hospitals
    events = plan.events([{"dp_steps": h.get("steps", 0)} for h in states])
    pure = ledger["delta"] == 0.0
    if not pure:
        expected = max(_independent(e, ledger["delta"], pure) for e in events.values())
        assert ledger["epsilon"] == pytest.approx(expected, rel=1e-9)
    assert ledger["epsilon"] <= 4.0 + 1e-9
    if mechanism == "dpfedavg" and sampled:  # nothing published names a round's participants
        assert all(r["clients"] == [] for r in result.rounds)
    if kind == "image" and whitening == "zca":
        assert all(str(e[0]).startswith("GaussianDpEvent") for e in events.values())
