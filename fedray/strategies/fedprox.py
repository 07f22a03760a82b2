r"""FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020).

The server aggregates exactly as FedAvg; what changes is each hospital's
local objective, which gains a proximal term pulling it towards the global
model :math:`w_t` it started the round from:

.. math:: \min_w\ F_k(w) + \frac{\mu}{2}\lVert w - w_t\rVert^2 .

The strategy object carries :math:`\mu` (``fl.proximal_mu``), as Flower's
``FedProx`` does; the trainers apply the term
(:mod:`fedray.training.proximal`). :math:`\mu = 0` is FedAvg.
"""

from __future__ import annotations

from fedray.strategies.fedavg import FedAvg


class FedProx(FedAvg):
    """FedAvg at the server; hospitals add :math:`\\frac{\\mu}{2}\\lVert w - w_t\\rVert^2` to their local loss."""

    def __init__(self, *, weighting: str, proximal_mu: float):
        super().__init__(weighting=weighting)
        self.proximal_mu = proximal_mu
