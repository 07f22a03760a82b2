r"""Federated forest: the global model is every hospital's trees, weighted by hospital.

Trees cannot be averaged parameter by parameter, so the hospitals' ensembles
are pooled instead. With p_k(y | x) the class probabilities of hospital k's
ensemble (the mean of its trees' leaf distributions), the global model is::

    p(y | x) = Σ_k w_k p_k(y | x),    w_k = a_k / Σ_j a_j

with a_k = n_k, hospital k's number of training records ("samples"), or
a_k = 1 ("uniform"). The merged ensemble holds Σ_k T_k trees and is rebuilt from
this round's results alone: trees are fitted once, so a hospital sends the
same ensemble every round and the global model is the same after round one.
Privacy is post-processing of each hospital's release; no budget is spent here.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedray.models.trees import merge_ensembles
from fedray.strategies.aggregate import check_weighting, client_weights
from fedray.strategies.base import ClientResult, Params, Strategy


class TreeEnsemble(Strategy):
    """Pools the hospitals' tree ensembles; ``weighting`` is "samples" (n_k) or "uniform".

    Not registered: ``build_strategy`` picks it for tree models whatever ``strategy`` is chosen.
    Trees are not summed, so ``aggregates_by_sum`` stays False.
    """

    def __init__(self, *, weighting: str = "samples"):
        self.weighting = check_weighting(weighting)

    def aggregate(
        self, server_round: int, global_params: Params, results: Sequence[ClientResult]
    ) -> Params:
        weights = client_weights([r.num_samples for r in results], weighting=self.weighting)
        return merge_ensembles([(r.params, w) for r, w in zip(results, weights)])
