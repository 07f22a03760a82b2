"""Ghost clipping: each layer's per-record gradient norms, and a whole DP step on the seed backbones (ghost clipping's
two passes and book-keeping's one), against "hooks"."""

import copy

import pytest
import torch
from opacus.grad_sample import GradSampleModule, GradSampleModuleFastGradientClipping
from torch import nn

from conftest import backbone

from fedray.errors import FedrayError
from fedray.models import build_model
from fedray.privacy import ghost_norms
from fedray.privacy.opacus_wiring import make_dp_compatible, private_step, wrap_private
from fedray.training.objective import MulticlassHinge

CONVS = {
    "3x3 padded": nn.Conv2d(4, 6, 3, padding=1),
    "stride 2, no bias": nn.Conv2d(4, 6, 3, stride=2, bias=False),
    "7x7 stride 2 pad 3": nn.Conv2d(4, 8, 7, stride=2, padding=3),
    "dilated, rectangular": nn.Conv2d(4, 6, (3, 2), dilation=(2, 1), padding=(2, 0)),
    "padding same": nn.Conv2d(4, 6, 3, padding="same"),
    "groups 2": nn.Conv2d(4, 6, 3, padding=1, groups=2),
    "depthwise stride 2": nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4),
    "pointwise": nn.Conv2d(4, 6, 1),
}
OTHERS = {
    "linear": (nn.Linear(5, 3), (5,)),
    "group norm": (nn.GroupNorm(2, 4), (4, 6, 6)),
    "layer norm": (nn.LayerNorm(6), (3, 6)),
}


def _per_record_norms(gsm_class, layer, x, weights, **kwargs):
    """{parameter name: [n] norms} after one backward of the per-record losses <layer(x_i), w>, mean-reduced."""
    layer = copy.deepcopy(layer)
    module = gsm_class(layer, batch_first=True, loss_reduction="mean", **kwargs)
    (module(x) * weights).flatten(1).sum(1).mean().backward()
    if gsm_class is GradSampleModule:
        return {n: p.grad_sample.flatten(1).norm(dim=1) for n, p in layer.named_parameters()}
    return {n: p._norm_sample for n, p in layer.named_parameters()}


def _assert_ghost_norms_match_hooks(layer, x):
    torch.manual_seed(1)
    weights = torch.randn_like(layer(x))
    expected = _per_record_norms(GradSampleModule, layer, x, weights)
    got = _per_record_norms(GradSampleModuleFastGradientClipping, layer, x, weights, use_ghost_clipping=True)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("gram", [True, False], ids=["gram route", "gradient route"])
@pytest.mark.parametrize("name", CONVS)
def test_conv2d_norms_equal_the_norms_of_per_record_gradients(name, gram, monkeypatch):
    monkeypatch.setattr(ghost_norms, "gram_route_is_cheaper", lambda *_: gram)
    torch.manual_seed(0)
    _assert_ghost_norms_match_hooks(CONVS[name], torch.randn(3, 4, 9, 8))


@pytest.mark.parametrize("name", OTHERS)
def test_linear_and_norm_layer_norms_equal_the_norms_of_per_record_gradients(name):
    layer, shape = OTHERS[name]
    torch.manual_seed(0)
    _assert_ghost_norms_match_hooks(layer, torch.randn(3, *shape))


def test_the_cheaper_route_is_chosen_by_size():
    assert not ghost_norms.gram_route_is_cheaper(32 * 32, 64, 3 * 49)  # a stem: many positions, few channels
    assert not ghost_norms.gram_route_is_cheaper(16, 1, 9)  # depthwise
    assert ghost_norms.gram_route_is_cheaper(4 * 4, 512, 512 * 9)  # a deep 3x3 conv


def _wrapped(model, mode, *, clip, batch):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    return wrap_private(model, optimizer, noise_multiplier=1.0, max_grad_norm=clip, sample_rate=0.25,
                        expected_batch_size=batch, generator=torch.Generator().manual_seed(7),
                        grad_sample_mode=mode)


class _GradientProbe:
    """A trainer gradient hook: records the gradient it is shown, which must be the noised one, divided by qn."""

    def __init__(self, params):
        self.params, self.seen = params, None

    def on_gradient(self, record_weight):
        self.seen = (record_weight, [p.grad.clone() for p in self.params])


@pytest.mark.parametrize("mode", ["ghost", "bookkeeping"])
@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "mobilenet_v3_large", "efficientnet_lite0", "inception_v3",
                                  pytest.param("vgg19", marks=pytest.mark.slow)])  # 140 M parameters: -m slow
def test_a_clipped_sum_step_equals_a_hooks_step_under_the_same_noise(name, mode):
    torch.manual_seed(0)
    size = 75 if name == "inception_v3" else 32  # Inception's smallest input
    hooks_model = make_dp_compatible(build_model(backbone(name), num_classes=3, image_size=size))
    if name == "vgg19":
        # Its 25088x4096 Linear (Opacus' own norm sampler, checked above) in 4 per-record copies would take the
        # hooks path some 40 s: frozen here, the convolutions and the other Linears are still compared.
        hooks_model.classifier[0].requires_grad_(False)
    ghost_model = copy.deepcopy(hooks_model)
    x, y = torch.randn(3, 3, size, size), torch.tensor([0, 1, 2])
    steps = {}
    for side, model in (("hooks", hooks_model), (mode, ghost_model)):
        parts = _wrapped(model, side, clip=0.5, batch=4)
        probe = _GradientProbe(parts.optimizer.params)
        torch.manual_seed(1)  # the same dropout masks (mobilenet_v3_large, vgg19)
        private_step(parts, x, y, nn.CrossEntropyLoss(), hooks=[probe])
        steps[side] = ([p.summed_grad for p in parts.optimizer.params], probe, parts.accountant.history)
    (hooks_sum, hooks_probe, hooks_history), (ghost_sum, ghost_probe, ghost_history) = steps["hooks"], steps[mode]
    for expected, got in zip(hooks_sum, ghost_sum):  # the clipped sum, before noise
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-5)
    assert ghost_probe.seen[0] == hooks_probe.seen[0] == 1 / 4
    for expected, got in zip(hooks_probe.seen[1], ghost_probe.seen[1]):
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-5)
    for expected, got in zip(hooks_model.parameters(), ghost_model.parameters()):
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-5)
    assert ghost_history == hooks_history == [(1.0, 0.25, 1)]


@pytest.mark.parametrize("mode", ["ghost", "bookkeeping"])
def test_a_clipped_sum_step_on_an_empty_batch_is_noise_only_and_counted(mode):
    torch.manual_seed(0)
    hooks_model = make_dp_compatible(build_model(backbone("small_cnn"), num_classes=3, image_size=16))
    ghost_model = copy.deepcopy(hooks_model)
    x, y = torch.empty(0, 3, 16, 16), torch.empty(0, dtype=torch.long)
    for side, model in (("hooks", hooks_model), (mode, ghost_model)):
        parts = _wrapped(model, side, clip=1.0, batch=4)
        loss, logits = private_step(parts, x, y, nn.CrossEntropyLoss())
        assert loss != loss and logits is None
        assert parts.accountant.history == [(1.0, 0.25, 1)]
    for expected, got in zip(hooks_model.parameters(), ghost_model.parameters()):
        torch.testing.assert_close(got, expected)


def test_the_svm_hinge_gives_per_record_losses_for_ghost_clipping():
    scores, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    per_record = MulticlassHinge(reduction="none")(scores, labels)
    assert per_record.shape == (5,)
    torch.testing.assert_close(per_record.mean(), MulticlassHinge()(scores, labels))


def test_ghost_refuses_a_loss_that_cannot_give_per_record_losses():
    parts = _wrapped(make_dp_compatible(nn.Sequential(nn.Flatten(), nn.Linear(12, 3))), "ghost", clip=1.0, batch=2)
    x, y = torch.randn(2, 3, 2, 2), torch.tensor([0, 1])
    with pytest.raises(FedrayError, match="reduction='mean'"):
        private_step(parts, x, y, nn.functional.cross_entropy)


def test_ghost_refuses_a_conv_that_does_not_pad_with_zeros():
    layer = nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")
    with pytest.raises(FedrayError, match="padding_mode='reflect'"):
        _per_record_norms(GradSampleModuleFastGradientClipping, layer, torch.randn(2, 2, 5, 5),
                          torch.ones(2, 2, 5, 5), use_ghost_clipping=True)
