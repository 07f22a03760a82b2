"""The Conv2d grad sampler of the per-record modes: both routes give a per-record loop's gradients."""

import copy

import pytest
import torch
from torch import nn

from test_ghost_clipping import CONVS

from fedray.privacy import conv_grad_samples


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped route", "unfold route"])
@pytest.mark.parametrize("name", CONVS)
def test_per_record_gradients_equal_a_per_record_loop(name, grouped, monkeypatch):
    monkeypatch.setattr(conv_grad_samples, "grouped_route_is_faster", lambda *_: grouped)
    torch.manual_seed(0)
    layer, x = copy.deepcopy(CONVS[name]), torch.randn(3, 4, 9, 8)
    backprops = torch.randn_like(layer(x))
    expected = []
    for i in range(len(x)):
        layer.zero_grad()
        (layer(x[i:i + 1]) * backprops[i:i + 1]).sum().backward()
        expected.append({p: p.grad.clone() for p in layer.parameters()})
    got = conv_grad_samples.conv2d_grad_sample(layer, [x], backprops)
    assert set(got) == {p for p in layer.parameters()}
    for p in layer.parameters():
        torch.testing.assert_close(got[p], torch.stack([e[p] for e in expected]), rtol=1e-4, atol=1e-5)


def test_the_grouped_route_is_taken_where_it_was_measured_faster_on_cpu():
    def faster(layer, size):
        return conv_grad_samples.grouped_route_is_faster(layer, torch.empty(32, layer.out_channels, size, size))

    assert faster(nn.Conv2d(16, 32, 3, padding=1), 32)
    assert faster(nn.Conv2d(32, 32, 3, padding=1, groups=32), 16)  # depthwise
    assert not faster(nn.Conv2d(3, 16, 3, padding=1), 64)  # a stem
    assert not faster(nn.Conv2d(128, 128, 3, padding=1), 8)  # few positions
    assert not faster(nn.Conv2d(16, 32, 3, padding=1, padding_mode="reflect"), 32)
