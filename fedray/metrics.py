"""Classification metrics from predicted probabilities, computed by scikit-learn (balanced accuracy from its
confusion matrix, as it defines it).

``classification_metrics(y_true, probs)`` returns accuracy, balanced accuracy,
precision/recall/F1, one-vs-rest macro AUC-ROC, cross-entropy loss and the
confusion matrix. With two classes precision, recall and F1 are those of the
positive class (label 1: "develops the condition", "malignant"), as clinical
studies report them; with more classes they are macro averages. AUC is averaged over the classes present in ``y_true``
(a one-vs-rest AUC is undefined for a class with no positives), and is NaN when
fewer than two classes are present.
"""

from __future__ import annotations

import numpy as np

SCALAR_METRICS = ("loss", "accuracy", "balanced_accuracy", "precision", "recall", "f1", "auc")
PROB_FLOOR = 1e-7  # probabilities are clipped to this before the log, so a confident miss costs a finite loss


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """Metrics of ``probs`` ([N, C], rows summing to 1) against integer labels ``y_true``."""
    # Imported here: every party imports this module, and a DP hospital never evaluates (about 1 s per process).
    from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, precision_recall_fscore_support

    num_classes = probs.shape[1]
    labels = np.arange(num_classes)
    y_pred = probs.argmax(axis=1)
    # Macro averages run over the classes present in y_true or y_pred (scikit-learn's
    # default), so a hospital's validation shard missing a class is not penalised for it.
    average = "binary" if num_classes == 2 else "macro"
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average=average, pos_label=1, zero_division=0
    )
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    return {
        "loss": float(log_loss(y_true, np.clip(probs, PROB_FLOOR, 1.0), labels=labels)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # scikit-learn's balanced_accuracy_score on this matrix, which has every label: its own unlabelled matrix
        # warns on a small validation shard of one class, or one lacking a predicted class (many small hospitals
        # would fill the console)
        "balanced_accuracy": balanced_accuracy(matrix),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "auc": _ovr_auc(y_true, probs),
        "confusion_matrix": matrix.tolist(),
    }


def balanced_accuracy(confusion_matrix) -> float:
    """The mean recall over the classes present (rows with records) of a confusion matrix (rows: true classes),
    as :func:`sklearn.metrics.balanced_accuracy_score` defines it; NaN for an empty matrix."""
    matrix = np.asarray(confusion_matrix, dtype=np.float64)
    present = matrix.sum(axis=1) > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(matrix)[present] / matrix.sum(axis=1)[present]))


def _ovr_auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import label_binarize

    present = np.unique(y_true)
    if present.size < 2:
        return float("nan")
    one_hot = label_binarize(y_true, classes=np.arange(probs.shape[1]))
    if probs.shape[1] == 2:
        return float(roc_auc_score(y_true, probs[:, 1]))
    return float(roc_auc_score(one_hot[:, present], probs[:, present], average="macro"))


def learned_nothing(confusion_matrix: list[list[int]]) -> str | None:
    r"""Why a model's test predictions show no learning, or None when they do.

    Two signs, read from the confusion matrix of K classes over n test records:

    - every record is predicted as one class (a majority-class model);
    - the balanced accuracy is within two standard errors of chance, :math:`1/K`,
      with :math:`\mathrm{SE} = \sqrt{(1/K)(1 - 1/K)/n}` (the binomial error of a
      per-record success rate at chance; balanced accuracy averages K such rates).

    >>> learned_nothing([[5, 0], [5, 0]])
    'every test record is predicted as one class'
    >>> learned_nothing([[9, 1], [1, 9]]) is None
    True
    """
    matrix = np.asarray(confusion_matrix, dtype=np.float64)
    n, k = matrix.sum(), matrix.shape[0]
    if n == 0 or k < 2:
        return None
    if np.count_nonzero(matrix.sum(axis=0)) == 1:
        return "every test record is predicted as one class"
    balanced = balanced_accuracy(matrix)
    chance = 1.0 / k
    if abs(balanced - chance) <= 2 * np.sqrt(chance * (1 - chance) / n):
        return f"test balanced accuracy {balanced:.3f} is within noise of chance ({chance:.3f} for {k} classes)"
    return None


def mean_and_std(dicts: list[dict]) -> tuple[dict, dict]:
    """Per-key mean and sample std over ``dicts`` of every key whose values are all finite-or-nan numbers."""
    keys = [k for k, v in dicts[0].items() if _is_number(v) and all(_is_number(d.get(k)) for d in dicts)]
    values = {k: np.array([float(d[k]) for d in dicts]) for k in keys}
    ddof = 1 if len(dicts) > 1 else 0
    with np.errstate(invalid="ignore"):  # an infinite value (e.g. an unbounded ε estimate) has no spread: nan
        return ({k: float(np.mean(v)) for k, v in values.items()},
                {k: float(np.std(v, ddof=ddof)) for k, v in values.items()})


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
