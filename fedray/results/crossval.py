"""Combine the run summaries of k cross-validation folds into one (pure, no Ray).

Stratified k-fold cross-validation trains k independent federated models;
fold i tests on the i-th k-th of the consented records, so every record is
tested exactly once. A metric is reported as its mean over the folds with the
sample standard deviation (ddof = 1) beside it, and the test confusion matrix
is the sum over folds (each record counted once).

Privacy: each fold's model spends ε on records that the other folds' models
also trained on. The summary reports the largest per-model ε. The test folds
are disjoint, so every record is a training record of exactly k − 1 of the k
models (it is left out of the one whose test fold holds it): releasing all k
models spends at most (k − 1)·ε per record by basic composition, which the
summary's ``cv_note`` says.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

CV_NOTE = ("k-fold CV: each of the {k} fold models spends epsilon on overlapping records; the epsilon reported is "
           "one model's. Every record trains {k_minus_1} of the {k} models, so releasing all of them would spend up "
           "to {k_minus_1} x epsilon per record (basic composition).")


def mean_and_std(dicts: list[dict]) -> tuple[dict, dict]:
    """Per-key mean and sample std over ``dicts`` of every key whose values are all finite-or-nan numbers."""
    keys = [k for k, v in dicts[0].items() if _is_number(v) and all(_is_number(d.get(k)) for d in dicts)]
    values = {k: np.array([float(d[k]) for d in dicts]) for k in keys}
    ddof = 1 if len(dicts) > 1 else 0
    with np.errstate(invalid="ignore"):  # an infinite value (e.g. an unbounded ε estimate) has no spread: nan
        return ({k: float(np.mean(v)) for k, v in values.items()},
                {k: float(np.std(v, ddof=ddof)) for k, v in values.items()})


def combine_fold_summaries(summaries: list[dict]) -> dict:
    """One summary for the whole cross-validation: means, stds, per-fold values and the privacy note."""
    k = len(summaries)
    first = summaries[0]
    test_mean, test_std = mean_and_std([s["final_test"] for s in summaries])
    val_mean, _ = mean_and_std([s["final_val"] for s in summaries])
    best_mean, _ = mean_and_std([s["best_val_round_test"] for s in summaries])
    privacy = {**first["privacy"], "epsilon": max(float(s["privacy"]["epsilon"]) for s in summaries),
               "cv_note": CV_NOTE.format(k=k, k_minus_1=k - 1)}
    matrices = [s.get("final_test_confusion_matrix") for s in summaries]
    return {
        **first,
        "data": {**first["data"], "fold": None,
                 "per_fold_sizes": [{p: s["data"][p] for p in ("train", "val", "test") if p in s["data"]}
                                    for s in summaries]},
        "final_test": test_mean,
        "final_test_std": test_std,
        "final_val": val_mean,
        "final_test_confusion_matrix": (np.sum(matrices, axis=0).tolist()
                                        if all(m is not None for m in matrices) else None),
        "best_val_round": None,
        "best_val_round_test": best_mean,
        "privacy": privacy,
        "membership_inference": _combine_audits([s.get("membership_inference") for s in summaries]),
        "cv": {"folds": k, "per_fold": [s["final_test"] for s in summaries],
               "guarantee": ("outside the guarantee: each fold's test records train the other folds' models, so "
                             "these metrics are un-noised evaluation statistics of training records")},
        "hospital_restarts": sum(int(s["hospital_restarts"]) for s in summaries),
        "wall_seconds": sum(float(s["wall_seconds"]) for s in summaries),
        "seconds_per_round": float(np.mean([s["seconds_per_round"] for s in summaries])),
        "gpu_hours": sum(float(s["gpu_hours"]) for s in summaries),
    }


def _combine_audits(audits: list[dict | None]) -> dict | None:
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


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
