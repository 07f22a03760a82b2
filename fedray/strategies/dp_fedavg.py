r"""DP-FedAvg: client-level differential privacy at the driver (McMahan et al. 2018).

Each round, every hospital k's update :math:`\Delta_k = w_k - w` is clipped
to L2 norm S over all its floating-point tensors, and the driver adds
Gaussian noise to their sum:

.. math:: w \leftarrow w + \frac1K\Big(\sum_k \bar\Delta_k + \mathcal N(0, z^2S^2 I)\Big)

The unit of privacy is a whole hospital: with 5 hospitals all taking part
(sampling rate q = 1) this hides whether any one *hospital* took part, which
needs a large z for a small ε, and says nothing finer about its patients
than that. With ``fl.clients_per_round = m`` each hospital takes part with
probability q = m/K (Poisson sampling, drawn by the driver from its secret
stream) and K in the formula is the expected count m, fixed in advance: the
accountant then counts the amplification by sampling at rate q. Integer buffers (BatchNorm's batch counters) are not aggregated:
the global value is kept. The noise of round r comes from the driver's
:class:`~fedray.privacy.randomness.NoiseSource` (secret by default), never
from the config seed: whoever could regenerate it could subtract it.

``insertions`` (:class:`~fedray.strategies.base.ClientInsertion`, e.g. an
audit's clients) join the clipped sum like hospitals: insertion j draws its
participation from the driver's stream (index j + 1) and adds an update of
norm at most S. K stays the hospitals' expected count, so the noise per
hospital, and the ε of each client, are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedray.privacy.client_level import clip_update, noisy_mean
from fedray.privacy.randomness import NoiseSource, Purpose
from fedray.strategies.base import ClientInsertion, ClientResult, Params, Strategy


class DPFedAvg(Strategy):
    """Uniform FedAvg of clipped updates plus Gaussian noise z·S on their sum."""

    aggregates_empty_rounds = True

    def __init__(self, *, clip_norm: float, noise_multiplier: float, noise: NoiseSource, expected_clients: int,
                 server: Strategy, insertions: Sequence[ClientInsertion] = ()):
        self.clip_norm = clip_norm
        self.noise_multiplier = noise_multiplier
        self.noise = noise
        self.expected_clients = expected_clients
        if not server.aggregates_by_sum:
            raise ValueError(f"DP-FedAvg noises the hospitals' mean update; {type(server).__name__} does not "
                             "aggregate by a mean (aggregates_by_sum is False)")
        self.server = server  # what it does with the noised mean update: FedAvg adds it, a server optimizer steps
        self.insertions = tuple(insertions)

    @property
    def aggregates_by_sum(self) -> bool:
        """Its server's: under secure aggregation the noise is already in the masked sum."""
        return self.server.aggregates_by_sum

    def apply_update(self, global_params: Params, delta: Params) -> Params:
        """The server's step on a mean update (a noised one: DP-FedAvg's own, or the distributed-DP masked sum's)."""
        return self.server.apply_update(global_params, delta)

    def client_settings(self) -> dict:
        return self.server.client_settings()

    def state_dict(self) -> dict | None:
        """The server optimizer's state (None for plain FedAvg), for checkpoints."""
        return self.server.state_dict() if hasattr(self.server, "state_dict") else None

    def load_state_dict(self, state: dict) -> None:
        self.server.load_state_dict(state)

    def aggregate(self, server_round: int, global_params: Params, results: Sequence[ClientResult]) -> Params:
        floating = [name for name, value in global_params.items() if np.issubdtype(value.dtype, np.floating)]
        clipped = [
            clip_update({n: r.params[n] - global_params[n] for n in floating}, clip_norm=self.clip_norm)[0]
            for r in results
        ]
        if not clipped:  # no hospital drawn this round: the release is the noise alone
            clipped = [{n: np.zeros_like(global_params[n]) for n in floating}]
        for j, insertion in enumerate(self.insertions):  # each update's norm is at most S: not clipped again
            clipped.append(insertion.round_update(
                self.noise.numpy_generator(server_round, Purpose.CLIENT_SAMPLING, index=1 + j)))
        update = noisy_mean(clipped, clip_norm=self.clip_norm, noise_multiplier=self.noise_multiplier,
                             rng=self.noise.numpy_generator(server_round, Purpose.DPFEDAVG_NOISE),
                             expected_clients=self.expected_clients)
        return self.server.apply_update(global_params, update)
