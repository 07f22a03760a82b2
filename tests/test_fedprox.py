"""FedProx (Li et al. 2020): the server averages as FedAvg; the hospital's term μ/2‖w - w_t‖² against hand values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedray.strategies.base import ClientResult
from fedray.strategies.fedavg import FedAvg
from fedray.strategies.fedprox import FedProx
from fedray.training.proximal import anchor_of, proximal_loss, proximal_step


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
    assert FedProx(weighting="samples", proximal_mu=0.01).proximal_mu == 0.01


def test_proximal_term_and_its_gradient_match_the_hand_computation():
    model, anchor = _linear_moved_from_zero()
    loss = proximal_loss(anchor, 0.4)
    # ‖w - w_t‖² = 1² + 2² + 0.5² = 5.25; μ/2 · 5.25 = 1.05.
    assert loss.item() == pytest.approx(1.05, rel=1e-12)
    loss.backward()
    # ∇ = μ(w - w_t): 0.4·[1, 2] and 0.4·0.5.
    torch.testing.assert_close(model.weight.grad, torch.tensor([[0.4, 0.8]], dtype=torch.float64))
    torch.testing.assert_close(model.bias.grad, torch.tensor([0.2], dtype=torch.float64))


def test_the_proximal_gradient_adds_to_the_data_gradient():
    # Non-private path: the optimizer sees ∇F + μ(w - w_t) from one backward pass of loss + term.
    model, anchor = _linear_moved_from_zero()
    x = torch.tensor([[3.0, -1.0]], dtype=torch.float64)
    model(x).sum().backward()
    data_grad = model.weight.grad.clone()  # ∂(w·x + b)/∂w = x = [3, -1]
    model.zero_grad()
    (model(x).sum() + proximal_loss(anchor, 0.4)).backward()
    torch.testing.assert_close(model.weight.grad - data_grad, torch.tensor([[0.4, 0.8]], dtype=torch.float64))
    torch.testing.assert_close(model.weight.grad, torch.tensor([[3.4, -0.2]], dtype=torch.float64))


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
    assert proximal_loss(anchor, 0.4).item() == pytest.approx(0.2 * 5.0, rel=1e-12)


def test_mu_zero_leaves_the_local_objective_as_fedavg():
    model, anchor = _linear_moved_from_zero()
    term = proximal_loss(anchor, 0.0)
    assert term.item() == 0.0
    term.backward()
    assert torch.count_nonzero(model.weight.grad) == 0
    before = [p.detach().clone() for p in model.parameters()]
    proximal_step(anchor, 0.0, lr=0.1)
    for p, old in zip(model.parameters(), before):
        torch.testing.assert_close(p.detach(), old)


def test_decoupled_proximal_step_after_a_private_step():
    # Under DP-SGD the term is applied after the noised step: w ← w - ημ(w - w_t) = [1, 2]·(1 - 0.1·0.4).
    model, anchor = _linear_moved_from_zero()
    proximal_step(anchor, 0.4, lr=0.1)
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[0.96, 1.92]], dtype=torch.float64))
    torch.testing.assert_close(model.bias.detach(), torch.tensor([0.48], dtype=torch.float64))
    assert anchor[0][1].abs().sum() == 0  # w_t itself is untouched
