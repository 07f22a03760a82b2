r"""FedAvg: the global model is the (sample-weighted or uniform) mean of client models.

.. math:: w_{t+1} = \sum_k p_k w_k, \qquad p_k = n_k / \sum_j n_j \ (\text{samples}) \text{ or } 1/K \ (\text{uniform}),

over the K hospitals of the round (McMahan et al. 2017). Its settings
(``conf/strategy/fedavg.yaml``) are those of every strategy: ``name`` and
``weighting``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedray.strategies.aggregate import check_weighting, weighted_average
from fedray.strategies.base import ClientResult, Params, Strategy, StrategySettings, register


@register
class FedAvg(Strategy):
    """McMahan et al. (2017). ``weighting`` is "samples" (n_k) or "uniform" (the seed's)."""

    name = "fedavg"
    Settings = StrategySettings
    aggregates_by_sum = True  # the mean itself: apply_update adds the mean update

    def __init__(self, weighting: str = "samples"):
        self.weighting = check_weighting(weighting)

    def aggregate(
        self, server_round: int, global_params: Params, results: Sequence[ClientResult]
    ) -> Params:
        return weighted_average([(r.params, r.num_samples) for r in results], weighting=self.weighting)
