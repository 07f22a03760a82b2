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

import dataclasses

import numpy as np

from fedray.audit.report import combine_folds
from fedray.metrics import mean_and_std
from fedray.results.summary import RunSummary

CV_NOTE = ("k-fold CV: each of the {k} fold models spends epsilon on overlapping records; the epsilon reported is "
           "one model's. Every record trains {k_minus_1} of the {k} models, so releasing all of them would spend up "
           "to {k_minus_1} x epsilon per record (basic composition).")


def combine_fold_summaries(summaries: list[RunSummary]) -> RunSummary:
    """One summary for the whole cross-validation: means, stds, per-fold values and the privacy note."""
    k = len(summaries)
    first = summaries[0]
    test_mean, test_std = mean_and_std([s.final_test for s in summaries])
    val_mean, _ = mean_and_std([s.final_val for s in summaries])
    best_mean, _ = mean_and_std([s.best_val_round_test for s in summaries])
    privacy = {**first.privacy, "epsilon": max(s.epsilon for s in summaries),
               "cv_note": CV_NOTE.format(k=k, k_minus_1=k - 1)}
    matrices = [s.final_test_confusion_matrix for s in summaries]
    sizes = [{split: getattr(s.data, split) for split in ("train", "val", "test") if getattr(s.data, split) is not None}
             for s in summaries]
    return dataclasses.replace(
        first,
        data=dataclasses.replace(first.data, fold=None, per_fold_sizes=sizes),
        final_test=test_mean,
        final_test_std=test_std,
        final_val=val_mean,
        final_test_confusion_matrix=(np.sum(matrices, axis=0).tolist()
                                     if all(m is not None for m in matrices) else None),
        best_val_round=None,
        validation_choices=None,
        best_val_round_test=best_mean,
        privacy=privacy,
        audit=combine_folds([s.audit for s in summaries]),
        cv={"folds": k, "per_fold": [s.final_test for s in summaries],
            "guarantee": ("outside the guarantee: each fold's test records train the other folds' models, so "
                          "these metrics are un-noised evaluation statistics of training records")},
        hospital_restarts=sum(int(s.hospital_restarts) for s in summaries),
        wall_seconds=sum(float(s.wall_seconds) for s in summaries),
        timing={phase: round(sum((s.timing or {}).get(phase, 0.0) for s in summaries), 3)
                for phase in dict.fromkeys(p for s in summaries for p in (s.timing or {}))},
        seconds_per_round=float(np.mean([s.seconds_per_round for s in summaries])),
        gpu_hours=sum(float(s.gpu_hours) for s in summaries),
    )
