r"""One round under secure aggregation: what each hospital masks, and what the driver makes of the sum (pure numpy).

The masking protocol itself is :mod:`fedray.privacy.secure_aggregation`
(X25519 pair keys, ChaCha20 masks, a fixed-point ring). This module decides the
vector each hospital puts into it and how the driver turns the unmasked sum
into the next global model, for the two aggregations fedray can run on sums:

- **FedAvg** (no DP, or record-level DP-SGD at the hospitals): hospital k masks
  its floating parameters :math:`w_k`, times :math:`n_k` with one more element
  :math:`n_k` under sample weighting; the driver learns
  :math:`\sum_k n_k w_k` and :math:`\sum_k n_k` and sets
  :math:`w = \sum_k n_k w_k / \sum_k n_k`, FedAvg exactly up to fixed-point
  rounding. The ring needs a bound on every coordinate: ``fl.secure_max_abs``
  declares :math:`\max|w|`, and a hospital whose parameters exceed it refuses
  to mask (a clear error, never a wrapped sum).
- **Distributed DP-FedAvg** (``privacy=dpfedavg``): hospital k clips its update
  :math:`\Delta_k = w_k - w` to norm S and adds its share
  :math:`\mathcal N(0, z^2S^2/K)` of the noise before masking; the driver
  learns only the noised sum, whose noise is the :math:`\mathcal N(0, z^2S^2)`
  central DP-FedAvg adds, and sets :math:`w \leftarrow w + \frac1K\sum_k(\bar\Delta_k + e_k)`.
  The driver never sees an un-noised update: it need not be trusted.

Integer buffers (BatchNorm's counters) are not summed: the global value is kept. Nor are
the tensors of frozen submodules (a cached head's backbone,
:func:`fedray.models.frozen_state_names`): every party holds them unchanged,
so their sum tells the driver nothing, and leaving them out keeps a head's
masks to the head's size instead of the whole backbone's.
What the driver still learns: the sum (and under sample weighting the total
count :math:`\sum_k n_k`), who took part, and when.

**A sampled cohort** (``fl.clients_per_round``: each hospital takes part with
probability q = m/K, the driver's secret draw, :mod:`fedray.strategies.sampling`).
Pair keys are agreed among the round's cohort :math:`S_t` only
(:meth:`SecureRound.for_cohort`), so a round costs O(|S_t|²) key agreements,
not O(K²). The driver relays the keys, so it learns :math:`S_t`, and so does
every hospital of the cohort (it receives the others' keys). Under DP-FedAvg
with up to t hospitals colluding with the driver (``privacy.colluders``), two
views need two noise levels:

- *against the driver and t colluders*, who know the cohort and their own
  shares, the honest shares alone must carry :math:`z_h^2S^2`. A hospital
  cannot tell who else was drawn honestly, so each of the :math:`|S_t|`
  shares has variance :math:`z_h^2S^2/\max(|S_t|-t, 1)`: at least
  :math:`|S_t|-t` of them are honest, and when :math:`|S_t| \le t` the
  hospital's own share carries all of it;
- *against readers of the outputs*, who never learn :math:`S_t`, the released
  sum must carry the same :math:`\mathcal N(0, z^2S^2)` for every cohort, or its
  variance would tell them the cohort's size, and Poisson amplification would not
  hold (two Gaussians of different variances have unbounded privacy loss).
  The shares carry :math:`v(s) = s\,z_h^2S^2/\max(s-t, 1)` for a cohort of s,
  largest at :math:`s = t+1`: :math:`(t+1)z_h^2S^2`. So
  :math:`z = z_h\sqrt{t+1}`, and after unmasking the driver adds
  :math:`\mathcal N(0, z^2S^2 - v(s))` from its own secret stream
  (:meth:`SecureRound.top_up`). The released sum is then the central
  mechanism's for every cohort, and the Poisson-amplified ε at z holds.

With t = 0 this is z = z_h, shares :math:`z^2S^2/|S_t|` and no top-up. The
mechanism calibrates z for the readers' ε and states the driver's ε at
:math:`z_h = z/\sqrt{t+1}`, every round counted
(:mod:`fedray.privacy.mechanisms.dpfedavg`): colluders cost the run's model
no utility, only the guarantee against the driver. The driver divides by the
expected m, never by :math:`|S_t|`, as central DP-FedAvg does. An empty
cohort's round is the driver's noise alone, as in central DP-FedAvg (nobody is
there to add a share); a cohort of one sends its payload unmasked
(:attr:`SecureRound.min_cohort`), which carries :math:`z_h^2S^2` (the driver
tops it up). Without DP-FedAvg's noise a cohort of one would hand the driver a
lone update: its round is skipped (nobody trains; no privacy claim rests on
sampling there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from fedray.privacy.client_level import clip_update
from fedray.privacy.secure_aggregation import (
    ParamSpec,
    add_noise_share,
    clipped_update_bound,
    flatten_params,
    split_weighted_sum,
    unflatten,
    weighted_fedavg_bound,
    weighted_payload,
)

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class SecureRound:
    """What the driver and every hospital agree on for masked rounds: tensor layout, ring bound, aggregation."""

    spec: tuple[ParamSpec, ...]
    value_bound: float
    weighted: bool  # FedAvg by samples: hospitals mask (n_k w_k, n_k)
    clip_norm: float | None = None  # distributed DP-FedAvg: clip norm S and the honest noise multiplier z_h
    noise_multiplier: float = 0.0
    num_clients: int = 1  # the count DP-FedAvg divides by: the expected m (K without sampling)
    honest_shares: int = 1  # the shares that must carry z_h: K - t, or under sampling max(|S_t| - t, 1)
    colluders: int = 0  # t: hospitals whose shares the driver may know
    # sampled cohorts: the noise multiplier z = z_h sqrt(t + 1) every cohort's released sum carries
    released_noise_multiplier: float | None = None

    @classmethod
    def for_fedavg(cls, global_params: Params, *, weighted: bool, max_abs: float, max_samples: int) -> SecureRound:
        _, spec = flatten_params(_floating(global_params))
        bound = weighted_fedavg_bound(max_abs_value=max_abs, max_samples=max_samples if weighted else 1)
        return cls(spec=spec, value_bound=bound, weighted=weighted)

    @classmethod
    def for_dp_fedavg(cls, global_params: Params, *, clip_norm: float, noise_multiplier: float,
                      num_clients: int, colluders: int = 0, sampled: bool = False) -> SecureRound:
        """``noise_multiplier``: the honest shares' z_h. Without sampling the K - t honest shares carry it whole;
        with it, see :meth:`for_cohort` and :meth:`top_up`."""
        _, spec = flatten_params(_floating(global_params))
        secure = cls(spec=spec, value_bound=0.0, weighted=False, clip_norm=clip_norm,
                     noise_multiplier=noise_multiplier, num_clients=num_clients, colluders=colluders,
                     released_noise_multiplier=noise_multiplier * math.sqrt(colluders + 1) if sampled else None)
        return secure.for_cohort(num_clients)

    @property
    def min_cohort(self) -> int:
        """The fewest hospitals a masked round may have: one where each payload carries the honest noise whole, else
        two (a 'sum' of one is that hospital's update)."""
        return 1 if self.clip_norm is not None else 2

    def for_cohort(self, size: int) -> SecureRound:
        """This round's agreement for a cohort of ``size`` hospitals: under DP-FedAvg each share carries
        1/max(size - t, 1) of the honest noise (of K - t without sampling, where the cohort is everyone)."""
        if self.clip_norm is None:
            return self
        honest = max(size - self.colluders, 1)
        bound = clipped_update_bound(self.clip_norm, noise_multiplier=self.noise_multiplier, num_clients=honest)
        return replace(self, value_bound=bound, honest_shares=honest)

    def top_up_std(self, size: int) -> float:
        """The std of the noise the driver adds to a sampled cohort's unmasked sum, so that it carries z²S² for every
        cohort size: sqrt(z² - size·z_h²/max(size - t, 1))·S; 0 without sampling."""
        if self.released_noise_multiplier is None or size < 1:
            return 0.0
        shares = size * self.noise_multiplier ** 2 / max(size - self.colluders, 1)
        return self.clip_norm * math.sqrt(max(self.released_noise_multiplier ** 2 - shares, 0.0))

    def top_up(self, total: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
        """``total`` (a cohort of ``size``'s unmasked sum) plus the driver's top-up N(0, top_up_std(size)²)."""
        std = self.top_up_std(size)
        return total if std == 0.0 else total + rng.normal(0.0, std, size=total.shape)

    @property
    def vector_length(self) -> int:
        return sum(int(np.prod(p.shape)) for p in self.spec) + (1 if self.weighted else 0)

    def payload(self, global_params: Params, params: Params, num_samples: int,
                rng: np.random.Generator) -> np.ndarray:
        """The vector hospital k masks after training ``global_params`` into ``params`` on ``num_samples`` records."""
        if self.clip_norm is None:
            vector, _ = flatten_params({p.name: params[p.name] for p in self.spec}, self.spec)
            return weighted_payload(vector, num_samples) if self.weighted else vector
        update = {p.name: params[p.name] - global_params[p.name] for p in self.spec}
        clipped, _ = clip_update(update, clip_norm=self.clip_norm)
        vector, _ = flatten_params(clipped, self.spec)
        return add_noise_share(vector, clip_norm=self.clip_norm, noise_multiplier=self.noise_multiplier,
                               num_clients=self.honest_shares, rng=rng)

    def apply(self, global_params: Params, total: np.ndarray, *, participants: int) -> Params:
        """The next global model from the unmasked sum of the ``participants`` hospitals' :meth:`payload`."""
        if self.clip_norm is not None:  # DP-FedAvg divides by the fixed count its noise is calibrated to
            step = unflatten(total / self.num_clients, self.spec)
            new = {name: global_params[name] + value for name, value in step.items()}
        elif self.weighted:
            weighted_sum, count = split_weighted_sum(total)
            new = unflatten(weighted_sum / count, self.spec)
        else:
            new = unflatten(total / participants, self.spec)
        return {name: new[name].astype(value.dtype) if name in new else value
                for name, value in global_params.items()}


def _floating(params: Params) -> Params:
    return {name: value for name, value in params.items() if np.issubdtype(np.asarray(value).dtype, np.floating)}
