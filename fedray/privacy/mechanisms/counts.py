r"""The ledger's account of each hospital: its record counts (where the ledger may state them), its schedule, its ε.

Each row of ``summary.json["privacy"]["hospitals"]`` reconciles on its own:

- ``record_slots`` :math:`n_k` = ``training_records`` + ``audit_record_slots``: the data's records dealt to
  hospital k, and the record slots an audit dealt it (each filled by the auditor's secret draw or left null);
  :math:`N = \sum_k n_k` is the N of the rule δ < 1/N, and ``record_counts`` holds the three totals;
- the schedule its mechanism states (:meth:`~fedray.privacy.mechanisms.base.PrivateMechanism.hospital_schedule`),
  e.g. DP-SGD's :math:`q_k` = ``expected_batch_size`` / :math:`n_k`, σ_k and the steps;
- ``epsilon``: the composition of the events (``events``) of the unit group holding hospital k's units, at the
  run's δ.

The counts are stated only where a *public* output release of the plan covers the hospitals' record counts
(``summary.data.hospital_train_sizes``). The ledger is itself a public release, so a count it stated where the
mechanism withholds it would publish it by the back door; :mod:`fedray.privacy.ledger` says why the counts are
public under record-level DP and not under client-level DP. Where they are withheld, ``record_counts`` says so and
why, and the rows carry no count.
"""

from __future__ import annotations

COUNTS_FIELD = "summary.data.hospital_train_sizes"


def record_counts(plan) -> dict:
    """The totals N = training records + audit record slots with the release that makes them public, or why not."""
    release = _public_counts_release(plan)
    if release is None:
        return {"published": False,
                "reason": f"withheld: no release under privacy={plan.mechanism} makes the hospitals' record counts "
                          f"public (the privacy unit is one {plan.unit}, whose count may be its own data), so the "
                          "ledger, itself public, does not state them"}
    slots, audit = _slots(plan)
    return {"published": True, "reason": release.reason, "record_slots": sum(slots),
            "training_records": sum(slots) - sum(audit), "audit_record_slots": sum(audit)}


def hospital_rows(plan, hospital_states: list[dict], epsilons: dict[str, float]) -> list[dict]:
    """One row per hospital: its counts where they are public, its schedule, and the ε of its units."""
    counted = _public_counts_release(plan) is not None
    slots, audit = _slots(plan)
    shared = next(iter(epsilons.values())) if len(epsilons) == 1 else None  # one unit group for every hospital
    rows = []
    for k in range(plan.num_hospitals):
        state = hospital_states[k] if k < len(hospital_states) else {}
        counts = {"training_records": slots[k] - audit[k], "audit_record_slots": audit[k],
                  "record_slots": slots[k]} if counted else {}
        site = {"site": plan.sites[k]} if plan.sites else {}
        rows.append({"hospital": k, **site, **counts, **plan.hospital_schedule(k, state),
                     "epsilon": epsilons.get(f"hospital {k}", shared)})
    return rows


def bounding_site(plan, unit: str) -> dict:
    """``{"bounding_site": name}`` when the unit group bounding the run's ε is one hospital's records and the
    hospitals are sites (a natural partition); else nothing. With unequal sites each hospital's sampling rate
    and noise follow its own count, and the smallest site usually bounds ε."""
    for k, site in enumerate(plan.sites):
        if unit == f"hospital {k}":
            return {"bounding_site": site}
    return {}


def _public_counts_release(plan):
    release = plan.output_releases().covering(COUNTS_FIELD)
    return release if release is not None and release.kind == "public" else None


def _slots(plan) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Each hospital's record slots, and of them the audit's (none when no audit dealt any)."""
    return plan.slot_counts, plan.audit_slots or (0,) * len(plan.slot_counts)
