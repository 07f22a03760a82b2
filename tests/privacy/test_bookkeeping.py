"""Book-keeping and the root-only backward: each layer type's clipped sum, and models with several trainable layers
fed by the input or one fed by a frozen layer, against a per-record loop."""

import copy

import pytest
import torch
from torch import nn

from test_ghost_clipping import CONVS, OTHERS

from fedray.privacy.opacus_wiring import private_step, wrap_private

CLIP = 1e-3  # below every record's gradient norm here: every record is clipped


def _clipped_sums(model, mode, x, y):
    """Each trainable parameter's clipped sum over the batch (no noise), as the optimizer holds it before noise."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    parts = wrap_private(model, optimizer, noise_multiplier=0.0, max_grad_norm=CLIP, sample_rate=0.5,
                         expected_batch_size=len(x), grad_sample_mode=mode)
    private_step(parts, x, y, nn.CrossEntropyLoss())
    return [p.summed_grad for p in parts.optimizer.params]


def _per_record_loop(model, x, y):
    """The reference: one plain backward per record, each record's whole gradient clipped to CLIP, then summed."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(x)):
        grads = torch.autograd.grad(nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), params)
        factor = min(1.0, CLIP / torch.cat([g.flatten() for g in grads]).norm().item())
        total = [t + factor * g for t, g in zip(total, grads)]
    return total


def _assert_bookkeeping_equals_hooks(model, x, y):
    """Book-keeping and hooks (both asking autograd for the root layers only) against a per-record loop."""
    torch.manual_seed(0)
    expected = _per_record_loop(copy.deepcopy(model), x, y)
    for mode in ("hooks", "bookkeeping"):
        got = _clipped_sums(copy.deepcopy(model), mode, x, y)
        assert len(got) == len(expected) > 0
        for e, g in zip(expected, got):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-9)
    total = torch.cat([g.flatten() for g in got])
    assert total.norm() <= CLIP * len(x) * (1 + 1e-4)  # the clipping bound holds for the sum
    assert total.norm() > 0


def _with_head(layer, x):
    """``layer`` then a Linear to 3 logits: a classifier whose first trainable layer is ``layer``."""
    with torch.no_grad():
        width = layer(x[:1]).numel()
    return nn.Sequential(layer, nn.Flatten(), nn.Linear(width, 3))


@pytest.mark.parametrize("name", CONVS)
def test_conv2d_clipped_sum_equals_the_sum_of_clipped_per_record_gradients(name):
    torch.manual_seed(0)
    x = torch.randn(4, 4, 9, 8)
    _assert_bookkeeping_equals_hooks(_with_head(copy.deepcopy(CONVS[name]), x), x, torch.tensor([0, 1, 2, 0]))


@pytest.mark.parametrize("name", [*OTHERS, "linear over positions"])
def test_linear_and_norm_layer_clipped_sums_equal_the_sum_of_clipped_per_record_gradients(name):
    layer, shape = OTHERS.get(name, (nn.Linear(6, 5), (3, 6)))
    torch.manual_seed(0)
    x = torch.randn(4, *shape)
    _assert_bookkeeping_equals_hooks(_with_head(copy.deepcopy(layer), x), x, torch.tensor([0, 1, 2, 0]))


def test_an_embedding_without_a_closed_form_uses_its_per_record_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 3))
    _assert_bookkeeping_equals_hooks(model, torch.randint(0, 10, (5, 3)), torch.tensor([0, 1, 2, 0, 1]))


class _TwoBranches(nn.Module):
    """Two trainable layers read the input itself, and one trainable layer follows a frozen one."""

    def __init__(self):
        super().__init__()
        self.wide = nn.Conv2d(3, 4, 3, padding=1)
        self.frozen = nn.Conv2d(3, 4, 1).requires_grad_(False)
        self.after_frozen = nn.GroupNorm(2, 4)
        self.narrow = nn.Conv2d(3, 4, 1)
        self.head = nn.Linear(12 * 6 * 6, 3)

    def forward(self, x):
        branches = (self.wide(x), self.after_frozen(self.frozen(x)), self.narrow(x))
        return self.head(torch.relu(torch.cat(branches, dim=1)).flatten(1))


def test_every_layer_fed_only_by_frozen_inputs_still_gets_its_clipped_sum():
    # The backward asks only for these layers' gradients (their inputs carry none); a layer it missed would
    # keep a zero sum, which the comparison would catch.
    torch.manual_seed(0)
    _assert_bookkeeping_equals_hooks(_TwoBranches(), torch.randn(4, 3, 6, 6), torch.tensor([0, 1, 2, 0]))


def _spied_after_the_backward(mode):
    """(class, method) called once the step's backward pass is over and before its gradients are read."""
    from opacus.optimizers import DPOptimizer

    from fedray.privacy.bookkeeping import BookKeepingModule

    return (BookKeepingModule, "get_clipping_coef") if mode == "bookkeeping" else (DPOptimizer, "pre_step")


@pytest.mark.parametrize("mode", ["bookkeeping", "hooks", "functorch"])
def test_the_backward_forms_unclipped_gradients_only_for_the_layers_fed_by_frozen_inputs(mode, monkeypatch):
    torch.manual_seed(0)
    model = _with_head(nn.Conv2d(3, 4, 3, padding=1), torch.randn(1, 3, 6, 6))
    after_backward = {}
    owner, method = _spied_after_the_backward(mode)
    original = getattr(owner, method)

    def spy(self, *args, **kwargs):
        after_backward.update({name: p.grad is not None for name, p in model.named_parameters()})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, method, spy)
    sums = _clipped_sums(model, mode, torch.randn(4, 3, 6, 6), torch.tensor([0, 1, 2, 0]))
    assert after_backward == {"0.weight": True, "0.bias": True, "2.weight": False, "2.bias": False}
    assert all(s.abs().sum() > 0 for s in sums)  # the head's clipped sum still came from its hook
