"""Accuracy anchor for ``model=svm``: scikit-learn's LinearSVC on the pooled training rows of each CV fold.

For each fold of ``cv.folds`` it deals the data exactly as a federated run
with the same overrides does (``fedray.data.deal.deal_data``: same split,
same hospitals' training shards, same public-range scaling to [0, 1]), pools
the training shards and fits, without Ray and without privacy:

- ``LinearSVC(multi_class="crammer_singer", C=1/(λn))``: the objective
  ``model=svm`` minimises by federated SGD (mean Crammer-Singer hinge +
  λ/2 ||θ||², intercept penalised too), with λ = ``model.l2`` and n the pooled
  training rows;
- ``LinearSVC()`` with scikit-learn's defaults (one-vs-rest squared hinge, C = 1).

It prints held-out test accuracy, balanced accuracy and AUC (of the decision
function) per fold and their mean ± std (ddof 1), to set beside
``python -m fedray model=svm ... cv.folds=K`` (docs/models.md).

    python benchmarks/svm_anchor.py                      # breast_cancer, 5 folds, the ehr_tradeoff sweep's partition
    python benchmarks/svm_anchor.py --data ehr_synthetic --folds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np

from _common import compose, markdown_table, save_json


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="breast_cancer", help="a table dataset (data=...)")
    p.add_argument("--folds", type=int, default=5, help="cv.folds")
    p.add_argument("--override", action="append", default=["fl.partition.scheme=iid"],
                   help="further Hydra overrides, as given to the federated run")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def pooled_fold(overrides: list[str], fold: int, folds: int):
    """(train rows, train labels, test rows, test labels, λ) of one fold, scaled as the federated run scales them."""
    import torch

    from fedray.data.deal import deal_data
    from fedray.privacy.preprocessing import fit_input_map

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([*overrides, "model=svm", f"cv.folds={folds}", f"cv.fold={fold}"], Path(tmp) / "run")
    dealt = deal_data(cfg, fit_input_map=lambda shards: fit_input_map(cfg, shards))

    def scaled(inputs) -> np.ndarray:
        return dealt.input_map.apply(torch.as_tensor(np.asarray(inputs), dtype=torch.float32)).numpy()

    x = np.concatenate([scaled(s.inputs) for s in dealt.train_shards])
    y = np.concatenate([np.asarray(s.labels) for s in dealt.train_shards])
    test = dealt.splits.test
    return x, y, scaled(test.inputs), np.asarray(test.labels), float(cfg.model.l2)


def scores(model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    pred = model.predict(x)
    decision = model.decision_function(x)
    auc = roc_auc_score(y, decision) if decision.ndim == 1 else roc_auc_score(y, decision, multi_class="ovr")
    return {"accuracy": accuracy_score(y, pred), "balanced_accuracy": balanced_accuracy_score(y, pred), "auc": auc}


def main(argv=None) -> None:
    from sklearn.svm import LinearSVC

    args = parse_args(argv)
    overrides = [f"data={args.data}", *args.override]
    per_fold: dict[str, list[dict]] = {"crammer_singer": [], "default": []}
    for fold in range(args.folds):
        x, y, x_test, y_test, l2 = pooled_fold(overrides, fold, args.folds)
        matched = LinearSVC(multi_class="crammer_singer", C=1.0 / (l2 * len(y)), max_iter=100_000).fit(x, y)
        per_fold["crammer_singer"].append(scores(matched, x_test, y_test))
        per_fold["default"].append(scores(LinearSVC(max_iter=100_000).fit(x, y), x_test, y_test))
    labels = {"crammer_singer": f"LinearSVC crammer_singer, C = 1/(λn), λ = {l2:g}",
              "default": "LinearSVC() defaults (OvR squared hinge, C = 1)"}
    rows = []
    for key, folds in per_fold.items():
        cells = []
        for metric in ("accuracy", "balanced_accuracy", "auc"):
            values = [f[metric] for f in folds]
            cells.append(f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}")
        rows.append([labels[key], *cells])
    print(f"pooled LinearSVC, data={args.data}, {args.folds}-fold CV, overrides {' '.join(args.override)}\n")
    print(markdown_table(["model", "test accuracy", "balanced accuracy", "AUC"], rows))
    save_json(args.json, {"data": args.data, "folds": args.folds, "overrides": args.override, "per_fold": per_fold})


if __name__ == "__main__":
    main()
