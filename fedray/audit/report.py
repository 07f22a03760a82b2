"""The audit's summary read back: the CLI's lines, and k folds' audits combined into one (pure, no Ray).

A fold's audit is ``summary["audit"]`` (:func:`fedray.audit.auditor.audit_summary`).
Combining folds (:func:`combine_folds`): the strongest attack's figures are
averaged over the folds, with their sample std; a canary audit's bound is
not averaged (a mean of 95% lower bounds is none), so each kind reports the
fold with the smallest bound, still a 95% lower bound on every fold's ε;
every fold's flags are kept.
"""

from __future__ import annotations

from collections import Counter

from fedray.metrics import mean_and_std

KIND_NAMES = {"gradient": "white-box gradient canaries", "clients": "canary clients", "input": "input canaries"}


def summary_lines(audit: dict | None) -> list[str]:
    """One line per audit: each canary audit's bound and guesses, the held-out attack, then every flag."""
    if not audit:
        return []
    lines = []
    for kind, report in (audit.get("canaries") or {}).items():
        if kind in KIND_NAMES:
            gaussian = report.get("gaussian_estimate")
            estimate = "" if not gaussian else (f"; Gaussian estimate {gaussian['epsilon']:.2f} "
                                                f"[{gaussian['interval'][0]:.2f}, {gaussian['interval'][1]:.2f}]")
            lines.append(f"audit: {KIND_NAMES[kind]}: epsilon >= {report['epsilon_lower_bound']:.2f} at "
                         f"{report['confidence']:.0%} (m={report['m']}, {report['included']} trained on, "
                         f"k+={report['k_plus']} k-={report['k_minus']}, {report['correct']} correct){estimate}")
    strongest = audit["strongest"]
    if strongest is None:
        lines.append(f"audit: no membership attack: {audit.get('attack_note')}")
    else:
        lines.append(f"audit: membership attack {strongest['attack']} (chosen on a held-out half): auc "
                     f"{strongest['auc']:.3f}, epsilon >= {strongest['epsilon_lower_bound']:.2f} "
                     f"({strongest['n_members']} members, {strongest['n_nonmembers']} non-members)")
    return lines + [f"audit: {flag}" for flag in audit.get("flags", [])]


def combine_folds(audits: list[dict | None]) -> dict | None:
    """The strongest attack's numbers averaged over folds (with std); the most frequent strongest attack's name.

    A canary audit's bound is not averaged (a mean of 95% lower bounds is none): each kind reports the fold
    with the smallest bound, still a 95% lower bound on every fold's epsilon; every fold's flags are kept.
    """
    if any(a is None for a in audits):
        return None
    strongest = [a["strongest"] for a in audits]
    attacked = all(strongest)  # a fold whose pool was too small for a held-out attack has none
    mean, std = mean_and_std(strongest) if attacked else ({}, None)
    name = Counter(s["attack"] for s in strongest).most_common(1)[0][0] if attacked else None
    per_kind = [a.get("canaries") or {} for a in audits]
    canaries = {kind: {**min((c[kind] for c in per_kind), key=lambda r: r["epsilon_lower_bound"]),
                       "combined": f"the smallest bound of {len(audits)} folds"}
                for kind in per_kind[0] if kind != "notes" and all(kind in c for c in per_kind)}
    return {"strongest": {"attack": name, **mean} if attacked else None, "strongest_std": std, "per_fold": audits,
            "reference_models": audits[0].get("reference_models"), "delta": audits[0].get("delta"),
            "canaries": {**canaries, "notes": per_kind[0].get("notes", {})},
            "flags": [flag for a in audits for flag in a.get("flags", [])]}
