"""The audit's summary read back: the CLI's lines, and k folds' audits combined into one (pure, no Ray).

A fold's audit is ``summary["audit"]`` (:func:`fedray.audit.auditor.audit_summary`).
Combining folds (:func:`combine_folds`): the strongest attack's figures are
averaged over the folds, with their sample std; a canary audit's bound is
not averaged (a mean of 95% lower bounds is none), so each kind reports the
fold with the smallest bound, still a 95% lower bound on every fold's ε, and
its f-DP fields (``*_fdp``) from the fold with the smallest f-DP bound; every
fold's flags are kept.
"""

from __future__ import annotations

from collections import Counter

from fedray.metrics import mean_and_std

KIND_NAMES = {"gradient_step": "white-box gradient canaries, every step",
              "gradient_step_sampled": "white-box gradient canaries, every step with the sample known",
              "gradient": "white-box gradient canaries, each round's update", "clients": "canary clients",
              "input": "input canaries"}


def summary_lines(audit: dict | None) -> list[str]:
    """One plain line per audit: each canary audit's bound and guesses, the held-out attack, then every flag.

    Counts are printed as integers; a mean over folds keeps one decimal only where it is fractional.
    """
    if not audit:
        return []
    lines = [f"audit: {KIND_NAMES[kind]}: {canary_text(report)}"
             for kind, report in (audit.get("canaries") or {}).items() if kind in KIND_NAMES]
    strongest = audit["strongest"]
    if strongest is None:
        lines.append(f"audit: no membership attack: {audit.get('attack_note')}")
    else:
        lines.append(f"audit: membership attack {strongest['attack']}: {attack_text(strongest, audit)}")
    return lines + [f"audit: {flag}" for flag in audit.get("flags", [])]


def canary_text(report: dict) -> str:
    """The one-run bound, the f-DP bound and the most this audit could show, then what the auditor guessed of how
    many canaries (Steinke et al.'s k₊, k₋). A report written before the f-DP bound gives only the first."""
    text = (f"ε ≥ {report['epsilon_lower_bound']:.2f} at {report['confidence']:.0%} confidence"
            f"{reach_text(report)}: of {count(report['m'])} canaries ({count(report['included'])} trained on), "
            f"the attack guessed {count(report['guesses'])} ({count(report['k_plus'])} 'in', "
            f"{count(report['k_minus'])} 'out'), {count(report['correct'])} right")
    gaussian = report.get("gaussian_estimate")
    if gaussian:
        low, high = gaussian["interval"]
        text += f"; Gaussian estimate ε ≈ {gaussian['epsilon']:.2f} (interval {low:.2f} to {high:.2f})"
    if report.get("published_sample_epsilon") is not None:
        text += (f"; to compare with ε = {report['published_sample_epsilon']:.2f} of DP-SGD with its sample "
                 "published, not with the accountant's")
    if "combined" in report:
        text += f" ({report['combined']})"
    return text


def reach_text(report: dict) -> str:
    """The f-DP bound and both ceilings, as far as known, in parentheses after the bound: " (f-DP: ε ≥ 3.20; this
    audit can show at most 5.09, f-DP 8.80)".

    The f-DP figures are absent under pure DP (δ = 0: no Gaussian curve has a finite ε) and in older reports.
    """
    fdp, ceiling, ceiling_fdp = (report.get(key) for key in ("epsilon_lower_bound_fdp", "ceiling", "ceiling_fdp"))
    parts = [] if fdp is None else [f"f-DP: ε ≥ {fdp:.2f}"]
    if ceiling is not None:
        parts.append(f"this audit can show at most {ceiling:.2f}" + ("" if ceiling_fdp is None
                                                                      else f", f-DP {ceiling_fdp:.2f}"))
    return f" ({'; '.join(parts)})" if parts else ""


def attack_text(strongest: dict, audit: dict) -> str:
    """The held-out attack's bound and AUC, and on how many members and non-members; under k folds, their means."""
    members = f"{count(strongest['n_members'])} members and {count(strongest['n_nonmembers'])} non-members"
    folds = audit.get("per_fold")
    if folds:
        return (f"the strongest attack in most of {len(folds)} folds; mean over the folds: ε lower bound "
                f"{strongest['epsilon_lower_bound']:.2f}, AUC {strongest['auc']:.3f} ± "
                f"{audit['strongest_std']['auc']:.3f} (0.5 is chance), on {members} on average")
    return (f"ε ≥ {strongest['epsilon_lower_bound']:.2f} at {strongest['confidence']:.0%} confidence, AUC "
            f"{strongest['auc']:.3f} (0.5 is chance) on {count(audit['n_eval'])} records ({members}), chosen as "
            f"the strongest of {len(audit['attacks'])} attacks on {count(audit['n_choose'])} others")


def count(value: float) -> str:
    """A count as an integer; a mean of counts keeps one decimal where it is fractional (36.5)."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def smallest_bounds(reports: list[dict]) -> dict:
    """One kind's canary audits over the folds: the fold with the smallest bound, with every ``*_fdp`` field from
    the fold with the smallest f-DP μ (defined under pure DP too), so that each bound is the smallest of its kind,
    and the largest fold's ``p_value``: the smallest bound exceeds ε exactly when every fold's p-value is below
    1 - confidence, and under the claim each fold's is a p-value, so their maximum is one too."""
    smallest = min(reports, key=lambda r: r["epsilon_lower_bound"])
    p_values = [r.get("p_value") for r in reports]
    if "p_value" in smallest:
        smallest = {**smallest, "p_value": None if None in p_values else max(p_values)}
    if "mu_lower_bound_fdp" not in smallest:  # written before the f-DP bound
        return smallest
    smallest_fdp = min(reports, key=lambda r: r["mu_lower_bound_fdp"])
    return {**smallest, **{key: value for key, value in smallest_fdp.items() if key.endswith("_fdp")}}


def combine_folds(audits: list[dict | None]) -> dict | None:
    """The strongest attack's numbers averaged over folds (with std); the most frequent strongest attack's name.

    A canary audit's bound is not averaged (a mean of 95% lower bounds is none): each kind reports the fold
    with the smallest bound, still a 95% lower bound on every fold's epsilon (:func:`smallest_bounds`); every
    fold's flags are kept.
    """
    if any(a is None for a in audits):
        return None
    strongest = [a["strongest"] for a in audits]
    attacked = all(strongest)  # a fold whose pool was too small for a held-out attack has none
    mean, std = mean_and_std(strongest) if attacked else ({}, None)
    mean = {key: int(value) if isinstance(strongest[0][key], int) and value.is_integer() else value
            for key, value in mean.items()}  # a whole mean of counts stays a count (54, not 54.0)
    name = Counter(s["attack"] for s in strongest).most_common(1)[0][0] if attacked else None
    per_kind = [a.get("canaries") or {} for a in audits]
    canaries = {kind: {**smallest_bounds([c[kind] for c in per_kind]),
                       "combined": f"the smallest bound of {len(audits)} folds"}
                for kind in per_kind[0] if kind != "notes" and all(kind in c for c in per_kind)}
    unattacked = {} if attacked else {"attack_note": next(a["attack_note"] for a in audits if not a["strongest"])}
    return {"strongest": {"attack": name, **mean} if attacked else None, "strongest_std": std, **unattacked,
            "per_fold": audits,
            "reference_models": audits[0].get("reference_models"), "delta": audits[0].get("delta"),
            "canaries": {**canaries, "notes": per_kind[0].get("notes", {})},
            "flags": [flag for a in audits for flag in a.get("flags", [])]}
