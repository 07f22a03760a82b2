r"""FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020).

The server aggregates exactly as FedAvg; what changes is each hospital's
local objective, which gains a proximal term pulling it towards the global
model :math:`w_t` it started the round from:

.. math:: \min_w\ F_k(w) + \frac{\mu}{2}\lVert w - w_t\rVert^2 .

The strategy object carries :math:`\mu` (``strategy.proximal_mu``), as Flower's
``FedProx`` does, and sends it to the hospitals (:meth:`FedProx.client_settings`,
Flower's ``configure_fit``); the trainers apply the term
(:mod:`fedray.training.proximal`). :math:`\mu = 0` is FedAvg.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedray.config.checks import nonnegative
from fedray.strategies.base import StrategySettings, register
from fedray.strategies.fedavg import FedAvg


@dataclass
class FedProxSettings(StrategySettings):
    proximal_mu: float = nonnegative()  # mu: weight of mu/2 ||w - w_t||^2 in each hospital's loss


@register
class FedProx(FedAvg):
    """FedAvg at the server; hospitals add :math:`\\frac{\\mu}{2}\\lVert w - w_t\\rVert^2` to their local loss."""

    name = "fedprox"
    Settings = FedProxSettings

    def __init__(self, *, weighting: str, proximal_mu: float):
        super().__init__(weighting=weighting)
        self.proximal_mu = proximal_mu

    def client_settings(self) -> dict:
        """Every hospital adds :math:`\\frac{\\mu}{2}\\lVert w - w_t\\rVert^2` to its local loss."""
        return {"proximal_mu": self.proximal_mu}
