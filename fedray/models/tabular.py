"""Models for table rows: the seed study's neural network, linear models and tree families.

Inputs are rows already scaled to ``[0, 1]`` per feature by their public
ranges (:class:`fedray.data.FeatureScaling`). The torch models are plain
``Linear``/``ReLU`` stacks with no normalisation layer, so Opacus computes
their per-sample gradients exactly and fast (``hooks`` mode), and FedAvg
averages every parameter.

* ``mlp``: ``D -> h_1 -> ... -> h_m -> C`` with ReLU between layers.
* ``logreg``: one ``Linear(D, C)``: multinomial logistic regression, trained
  by the same SGD/DP-SGD as the network.
* ``svm``: the same ``Linear(D, C)`` scores :math:`s = Wx + b`, trained on the
  Crammer-Singer multi-class hinge loss with an L2 penalty (the seed study's
  SVM; the loss and the penalty are in :mod:`fedray.training.objective`).

The tree families (``decision_tree``, ``random_forest``) are not torch models:
:mod:`fedray.training.trees` fits them with scikit-learn or diffprivlib and
the driver merges them into one forest (:mod:`fedray.strategies.ensemble`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from fedray.config.schema import LogregModel, MlpModel, SvmModel
from fedray.errors import FedrayError

TORCH_TABLE_MODELS = ("mlp", "logreg", "svm")
TREE_MODELS = ("decision_tree", "random_forest")


def mlp(num_features: int, num_classes: int, hidden: Sequence[int]) -> nn.Sequential:
    widths = (num_features, *(int(h) for h in hidden))
    layers: list[nn.Module] = []
    for w_in, w_out in zip(widths, widths[1:]):
        layers += [nn.Linear(w_in, w_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], num_classes))


def build_table_model(model_cfg: MlpModel | LogregModel | SvmModel, *, num_classes: int,
                      num_features: int) -> nn.Module:
    """The torch model ``model_cfg.name`` (``mlp``, ``logreg`` or ``svm``) for ``num_features`` inputs."""
    if model_cfg.name in ("logreg", "svm"):
        return nn.Sequential(nn.Linear(num_features, num_classes))
    hidden = model_cfg.hidden
    if not hidden or any(int(h) < 1 for h in hidden):
        raise FedrayError(f"model.hidden={hidden}: give one positive width per hidden layer, e.g. [64, 32]")
    return mlp(num_features, num_classes, hidden)

