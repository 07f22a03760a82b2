"""FedProx (Li et al. 2020): the server averages as FedAvg; the hospital's term μ/2‖w - w_t‖², a gradient hook, against
hand values and against autograd of the term itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedray.strategies.base import ClientResult
from fedray.strategies.fedavg import FedAvg
from fedray.strategies.fedprox import FedProx
from fedray.training.proximal import ProximalTerm, add_proximal_gradient, anchor_of


def _linear_moved_from_zero() -> tuple[torch.nn.Linear, list]:
    """A 2→1 linear layer anchored at zero (w_t), then moved to weight [[1, 2]], bias [0.5]."""
    model = torch.nn.Linear(2, 1).double()
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    anchor = anchor_of(model)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.bias.fill_(0.5)
    return model, anchor


def _term(anchor, mu: float) -> torch.Tensor:
    """μ/2 Σ‖w - w_t‖²: the objective's term, whose autograd gradient the hook must equal."""
    return 0.5 * mu * sum(((p - start) ** 2).sum() for p, start in anchor)


@pytest.mark.parametrize("weighting", ["samples", "uniform"])
def test_fedprox_aggregates_exactly_like_fedavg(weighting):
    results = [ClientResult(hospital=k, params={"w": np.array([1.0, -2.0]) * (k + 1), "steps": np.array(4 * k)},
                            num_samples=2 + 5 * k) for k in range(3)]
    global_params = {"w": np.zeros(2), "steps": np.array(0)}
    prox = FedProx(weighting=weighting, proximal_mu=0.3).aggregate(1, global_params, results)
    plain = FedAvg(weighting=weighting).aggregate(1, global_params, results)
    assert prox.keys() == plain.keys()
    for name in plain:
        np.testing.assert_array_equal(prox[name], plain[name])


def test_fedprox_carries_mu_for_the_hospitals():
    prox = FedProx(weighting="samples", proximal_mu=0.01)
    assert prox.proximal_mu == 0.01
    assert prox.client_settings() == {"proximal_mu": 0.01}  # what build_trainer hands each hospital's trainer
    assert FedAvg(weighting="samples").client_settings() == {}


def test_the_proximal_gradient_matches_the_hand_computation_and_autograd_of_the_term():
    model, anchor = _linear_moved_from_zero()
    # ‖w - w_t‖² = 1² + 2² + 0.5² = 5.25; μ/2 · 5.25 = 1.05.
    assert _term(anchor, 0.4).item() == pytest.approx(1.05, rel=1e-12)
    add_proximal_gradient(anchor, 0.4)  # no data gradient yet: the term creates p.grad
    # ∇ = μ(w - w_t): 0.4·[1, 2] and 0.4·0.5.
    torch.testing.assert_close(model.weight.grad, torch.tensor([[0.4, 0.8]], dtype=torch.float64))
    torch.testing.assert_close(model.bias.grad, torch.tensor([0.2], dtype=torch.float64))
    hook_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    _term(anchor, 0.4).backward()
    for by_hook, by_autograd in zip(hook_grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(by_hook, by_autograd)


def test_the_hook_anchors_at_the_rounds_start_and_adds_to_the_data_gradient():
    # Non-private path: the optimizer sees ∇F + μ(w - w_t), as one backward pass of loss + term would give.
    model, _ = _linear_moved_from_zero()
    hook = ProximalTerm(model, 0.4)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    hook.start_round(1)  # w_t = 0, the parameters the round loaded
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.bias.fill_(0.5)
    x = torch.tensor([[3.0, -1.0]], dtype=torch.float64)
    model(x).sum().backward()  # ∂(w·x + b)/∂w = x = [3, -1]
    hook.on_gradient(record_weight=1.0)  # the term reads no record: the weight does not scale it
    torch.testing.assert_close(model.weight.grad, torch.tensor([[3.4, -0.2]], dtype=torch.float64))
    torch.testing.assert_close(model.bias.grad, torch.tensor([1.2], dtype=torch.float64))


def test_frozen_parameters_are_not_pulled_towards_the_global_model():
    model = torch.nn.Linear(2, 1).double()
    model.bias.requires_grad_(False)
    with torch.no_grad():
        model.weight.zero_()
    anchor = anchor_of(model)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.bias.add_(10.0)  # a frozen tensor never enters the term
    assert [p for p, _ in anchor] == [model.weight]
    add_proximal_gradient(anchor, 0.4)
    assert model.bias.grad is None
    torch.testing.assert_close(model.weight.grad, torch.tensor([[0.4, 0.8]], dtype=torch.float64))


def test_under_dp_sgd_the_proximal_gradient_joins_the_noised_gradient_before_the_optimizer_step():
    # σ = 0 and a loose clip: Opacus' gradient is the data gradient, and momentum must see it plus μ(w - w_t).
    from fedray.privacy.opacus_wiring import private_step, wrap_private

    model, anchor = _linear_moved_from_zero()
    model = model.float()
    anchor = [(p, start.float()) for p, start in zip(model.parameters(), (a for _, a in anchor))]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    parts = wrap_private(model, optimizer, noise_multiplier=0.0, max_grad_norm=1e6, sample_rate=0.5,
                         expected_batch_size=2, grad_sample_mode="hooks")
    x, y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0], [0.0]])
    before = [p.detach().clone() for p in model.parameters()]
    term = ProximalTerm(model, 0.4)
    term.anchor = anchor
    private_step(parts, x, y, torch.nn.MSELoss(), hooks=[term])
    # Data gradient of the mean squared error at w = [1, 2], b = 0.5 on these two points: outputs 1.5 and 2.5.
    data_grad_w = torch.tensor([[1.5, 2.5]])  # mean of 2·(out - 0)·x over the batch
    data_grad_b = torch.tensor([(3.0 + 5.0) / 2])  # mean of 2·out
    expected_w = before[0] - 0.1 * (data_grad_w + 0.4 * before[0])
    expected_b = before[1] - 0.1 * (data_grad_b + 0.4 * before[1])
    torch.testing.assert_close(model.weight.detach(), expected_w)
    torch.testing.assert_close(model.bias.detach(), expected_b)
    assert sum(steps for _, _, steps in parts.accountant.history) == 1  # one accounted step

