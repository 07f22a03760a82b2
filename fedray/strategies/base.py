"""The strategy contract: one object that turns client results into a new global model.

Kept apart from transport (as in Flower): a strategy sees parameters, sample
counts and metrics, never Ray handles, so FedProx or FedAdam can be added as
another small subclass and tested with numpy alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class ClientResult:
    """Everything a hospital sends back after local training.

    This is the complete payload the driver receives: model parameters, the
    number of samples trained on, and scalar metrics. No images or labels.
    """

    hospital: int
    params: Params
    num_samples: int | None  # None: not released under the mechanism (DP-FedAvg never sends it)
    metrics: dict[str, float] = field(default_factory=dict)


class Strategy(ABC):
    """Aggregates one round of client results into new global parameters."""

    # Under client sampling a round may draw no hospital; most strategies then keep the global model,
    # DP-FedAvg still releases its noise (the accountant charged the round whoever took part).
    aggregates_empty_rounds = False

    def apply_update(self, global_params: Params, delta: Params) -> Params:
        """The next global model from a mean update ``delta`` (floating tensors): FedAvg adds it.

        Server optimizers take a step on it instead; DP-FedAvg and secure
        aggregation hand them their noised or unmasked mean this way.
        """
        return {name: (value + delta[name]).astype(value.dtype) if name in delta else value
                for name, value in global_params.items()}

    @abstractmethod
    def aggregate(
        self, server_round: int, global_params: Params, results: Sequence[ClientResult]
    ) -> Params:
        """Return the next global parameters from this round's results."""
