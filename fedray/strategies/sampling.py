r"""Which hospitals train in a round: Poisson client sampling (pure numpy, no Ray).

With :math:`K` hospitals and ``clients_per_round`` :math:`m \le K`, each hospital
takes part in round :math:`t` independently with probability

.. math:: q = m / K ,

so the round's set :math:`S_t` has a random size, :math:`|S_t| \sim \mathrm{Bin}(K, q)`
with mean :math:`m`, and may be empty (probability :math:`(1-q)^K`).
``clients_per_round=None`` (or :math:`m = K`) is every hospital, every round.

Why Poisson and not a fixed-size draw of :math:`m` without replacement.
The client-level accountant (:mod:`fedray.privacy.mechanisms.dpfedavg`,
dp-accounting RDP, zero-out-one-hospital adjacency) analyses exactly the Poisson
subsampled Gaussian mechanism (Mironov, Talwar & Zhang 2019; in
``dp_accounting``: ``PoissonSampledDpEvent(q, GaussianDpEvent(z))``). A
fixed-size draw is ``SampledWithoutReplacementDpEvent(K, m, ...)``, which
``dp_accounting``'s RDP accountant accepts only under *replace-one*
adjacency (Wang, Balle & Kasiviswanathan 2019) and its PLD accountant not at
all: an ε for another neighbouring relation (one hospital's data replaced,
not a hospital added or removed), not comparable with the rest of the ledger. So the sampler matches the
accountant: q is what :func:`client_sampling_rate` returns, and DP-FedAvg
divides the noised sum by the *expected* count :math:`m`, never by
:math:`|S_t|` (which depends on who was drawn).

Amplification by sampling (the smaller ε at q < 1) holds only if

- the draw is truly random and secret from the adversary: pass a generator
  from the driver's :class:`~fedray.privacy.randomness.NoiseSource`
  (``Purpose.CLIENT_SAMPLING``), never one seeded from the config, which
  anyone holding the config can replay;
- nothing released reveals :math:`S_t` (a hospital knows it was drawn;
  the guarantee is against whoever sees only the released models);
- the draw does not depend on the data or on who answered last round.

Without client-level DP (plain FedAvg, or DP-SGD at each hospital) sampling
is only a way to train fewer hospitals per round; no privacy rests on it.
"""

from __future__ import annotations

import numpy as np


def client_sampling_rate(num_clients: int, clients_per_round: int | None) -> float:
    """:math:`q = m / K`, the probability that one hospital takes part in a round (1.0 for everyone).

    >>> client_sampling_rate(5, 2), client_sampling_rate(5, None)
    (0.4, 1.0)
    """
    if num_clients < 1:
        raise ValueError(f"num_clients={num_clients}: a federation needs at least one hospital")
    if clients_per_round is None:
        return 1.0
    if not 1 <= clients_per_round <= num_clients:
        raise ValueError(f"clients_per_round={clients_per_round} must be in [1, {num_clients}]")
    return clients_per_round / num_clients


def sample_clients(num_clients: int, clients_per_round: int | None, rng: np.random.Generator) -> list[int]:
    """The sorted hospital ids of one round, each drawn independently with probability :math:`q = m/K`.

    Draws ``rng.random(num_clients)`` once (hospital k is in if its uniform is
    below q), the driver's rule, so a reproducible run keeps its draws. At
    q = 1 every hospital takes part and ``rng`` is left untouched.
    """
    rate = client_sampling_rate(num_clients, clients_per_round)
    if rate >= 1:
        return list(range(num_clients))
    uniforms = rng.random(num_clients)
    return [int(k) for k in np.flatnonzero(uniforms < rate)]
