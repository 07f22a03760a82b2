r"""Server-side optimizers on FedAvg's pseudo-gradient: FedAvgM, FedAdagrad, FedAdam, FedYogi.

Reddi et al., "Adaptive Federated Optimization" (ICLR 2021), Algorithm 2, and
Hsu et al. 2019 for server momentum. Each round the hospitals' models are
averaged as FedAvg does (:func:`~fedray.strategies.aggregate.weighted_average`),
and the change of the global model is read as a pseudo-gradient

.. math:: \Delta_t = \bar w_t - w_t,

on which the server takes one optimizer step with learning rate :math:`\eta`
(coordinate-wise, over every floating tensor):

- FedAvgM: :math:`u_t = \beta u_{t-1} + \Delta_t`, :math:`w_{t+1} = w_t + \eta u_t`;
- FedAdagrad: :math:`v_t = v_{t-1} + \Delta_t^2`;
- FedAdam: :math:`v_t = \beta_2 v_{t-1} + (1-\beta_2)\Delta_t^2`;
- FedYogi: :math:`v_t = v_{t-1} - (1-\beta_2)\Delta_t^2\,\mathrm{sign}(v_{t-1} - \Delta_t^2)`;

and for the last three :math:`m_t = \beta_1 m_{t-1} + (1-\beta_1)\Delta_t`,
:math:`w_{t+1} = w_t + \eta\, m_t / (\sqrt{v_t} + \tau)`, with :math:`m_0 = 0` and
:math:`v_0 = \tau^2` (Reddi et al. take :math:`v_{-1} \ge \tau^2`; no bias
correction, as in the paper). With :math:`\eta = 1, \beta = 0` FedAvgM is FedAvg.

Integer buffers (BatchNorm's counters) take FedAvg's average. The optimizer
state (:meth:`ServerOptimizer.state_dict`) travels in checkpoints, so a resumed
run continues with the same moments.

Composition with DP. Under record-level DP-SGD the hospitals' models are
already private; under client-level DP-FedAvg the noised mean update is the
pseudo-gradient (:meth:`ServerOptimizer.apply_update`). Either way the server
step is post-processing: the guarantee is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedray.config.checks import Spec, positive
from fedray.strategies.aggregate import check_weighting, weighted_average
from fedray.strategies.base import ClientResult, Params, Strategy, StrategySettings, register


@dataclass
class FedAvgMSettings(StrategySettings):
    server_lr: float = positive()  # eta
    server_momentum: float = Spec.make(check="momentum")  # beta


@dataclass
class AdaptiveSettings(StrategySettings):
    """FedAdagrad's, FedAdam's and FedYogi's knobs (FedAdagrad reads no beta2)."""

    server_lr: float = positive()  # eta
    beta1: float = Spec.make(check="momentum")  # first-moment decay
    beta2: float = Spec.make(check="momentum")  # second-moment decay
    tau: float = positive()  # adaptivity; also v_0 = tau^2


class ServerOptimizer(Strategy):
    """FedAvg's mean, then one server optimizer step on the pseudo-gradient (subclasses say which)."""

    aggregates_by_sum = True  # a step on the mean update: apply_update

    def __init__(self, *, weighting: str, server_lr: float):
        self.weighting = check_weighting(weighting)
        self.server_lr = server_lr
        self.state: dict[str, dict[str, np.ndarray]] = {}

    def aggregate(self, server_round: int, global_params: Params, results: Sequence[ClientResult]) -> Params:
        mean = weighted_average([(r.params, r.num_samples) for r in results], weighting=self.weighting)
        delta = {name: mean[name] - global_params[name] for name in _floating(global_params)}
        stepped = self.apply_update(global_params, delta)
        return {name: stepped[name] if name in delta else mean[name] for name in global_params}

    def apply_update(self, global_params: Params, delta: Params) -> Params:
        """:math:`w_{t+1}` from :math:`w_t` and the pseudo-gradient ``delta`` (floating tensors only)."""
        out = dict(global_params)
        for name, d in delta.items():
            step = self.direction(name, np.asarray(d, dtype=np.float64))
            out[name] = (global_params[name] + self.server_lr * step).astype(global_params[name].dtype)
        return out

    def direction(self, name: str, delta: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {slot: {name: value.copy() for name, value in values.items()} for slot, values in self.state.items()}

    def load_state_dict(self, state: dict) -> None:
        self.state = {slot: {name: np.array(value) for name, value in values.items()}
                      for slot, values in state.items()}

    def _slot(self, slot: str, name: str, initial: np.ndarray) -> np.ndarray:
        return self.state.setdefault(slot, {}).setdefault(name, initial)


@register
class FedAvgM(ServerOptimizer):
    """Server momentum (Hsu et al. 2019): :math:`u_t = \\beta u_{t-1} + \\Delta_t`, :math:`w_{t+1} = w_t + \\eta u_t`."""

    name = "fedavgm"
    Settings = FedAvgMSettings

    def __init__(self, *, weighting: str, server_lr: float, server_momentum: float):
        super().__init__(weighting=weighting, server_lr=server_lr)
        self.server_momentum = server_momentum

    def direction(self, name, delta):
        velocity = self.server_momentum * self._slot("velocity", name, np.zeros_like(delta)) + delta
        self.state["velocity"][name] = velocity
        return velocity


class _Adaptive(ServerOptimizer):
    """The adaptive family: first moment m, second moment v (its update is the subclass's), step m/(√v + τ)."""

    Settings = AdaptiveSettings

    def __init__(self, *, weighting: str, server_lr: float, beta1: float, beta2: float, tau: float):
        super().__init__(weighting=weighting, server_lr=server_lr)
        self.beta1, self.beta2, self.tau = beta1, beta2, tau

    def direction(self, name, delta):
        m = self.beta1 * self._slot("m", name, np.zeros_like(delta)) + (1 - self.beta1) * delta
        v = self.second_moment(self._slot("v", name, np.full_like(delta, self.tau**2)), delta)
        self.state["m"][name], self.state["v"][name] = m, v
        return m / (np.sqrt(v) + self.tau)

    def second_moment(self, v: np.ndarray, delta: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@register
class FedAdagrad(_Adaptive):
    name = "fedadagrad"

    def second_moment(self, v, delta):
        return v + delta**2


@register
class FedAdam(_Adaptive):
    name = "fedadam"

    def second_moment(self, v, delta):
        return self.beta2 * v + (1 - self.beta2) * delta**2


@register
class FedYogi(_Adaptive):
    name = "fedyogi"

    def second_moment(self, v, delta):
        return v - (1 - self.beta2) * delta**2 * np.sign(v - delta**2)


def _floating(params: Params) -> list[str]:
    return [name for name, value in params.items() if np.issubdtype(np.asarray(value).dtype, np.floating)]
