"""DP-SGD wiring: per-sample gradients, clipping, empty batches, accounting, and one DP step on every backbone."""

import dp_accounting
import pytest
import torch
from torch import nn

from conftest import backbone

from fedray.errors import FedrayError
from fedray.models import backbone_names, backbone_spec, build_model
from fedray.privacy.accounting import RDP_ORDERS
from fedray.privacy.ledger import compose_epsilon
from fedray.privacy.opacus_wiring import (
    CLIPPED_SUM_MODES,
    GRAD_SAMPLE_MODES,
    _clipped_pass,
    choose_grad_sample_mode,
    make_dp_compatible,
    private_step,
    wrap_private,
)

loss_fn = nn.CrossEntropyLoss()  # a module: ghost clipping (chosen for large backbones) asks it for per-record losses


class _DepthwiseResidual(nn.Module):
    """Grouped conv + GroupNorm + a residual sum: what MobileNet/EfficientNet blocks are made of."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.norm = nn.GroupNorm(4, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.stem(x)
        h = h + nn.functional.relu(self.norm(self.depthwise(h)))
        return self.head(h.mean(dim=(2, 3)))


def _models():
    torch.manual_seed(0)
    return {"small_cnn": build_model(backbone("small_cnn"), num_classes=3, image_size=16),
            "depthwise_residual": _DepthwiseResidual()}


def _wrap(model, *, sigma=1.0, clip=1.0, batch=4, mode=None, lr=0.1):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    return wrap_private(model, optimizer, noise_multiplier=sigma, max_grad_norm=clip, sample_rate=0.25,
                        expected_batch_size=batch, grad_sample_mode=mode)


def test_the_config_accepts_exactly_the_modes_the_wrapper_runs():
    # privacy.grad_sample_mode is refused by the config check, before Ray; wrap_private's own refusal is for
    # direct callers only.
    import dataclasses

    from fedray.config.schema import DpSgdPrivacy

    spec = next(f for f in dataclasses.fields(DpSgdPrivacy) if f.name == "grad_sample_mode").metadata["spec"]
    assert spec.choices == GRAD_SAMPLE_MODES and spec.nullable
    with pytest.raises(FedrayError, match="grad_sample_mode='vmap' is unknown"):
        _wrap(make_dp_compatible(_models()["small_cnn"]), mode="vmap")


@pytest.mark.parametrize("mode", [m for m in GRAD_SAMPLE_MODES if m not in CLIPPED_SUM_MODES])  # test_ghost_clipping.py
@pytest.mark.parametrize("name", ["small_cnn", "depthwise_residual"])
def test_per_sample_gradients_match_a_per_record_loop(mode, name):
    model = make_dp_compatible(_models()[name])
    x, y = torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    expected = []
    for i in range(len(x)):
        model.zero_grad()
        loss_fn(model(x[i : i + 1]), y[i : i + 1]).backward()
        expected.append([p.grad.clone() for p in model.parameters()])
    parts = _wrap(model, mode=mode)
    _clipped_pass(parts, x, y, loss_fn)  # the forward and backward of private_step, before any clipping
    for p, *per_record in zip(model.parameters(), *expected):
        torch.testing.assert_close(p.grad_sample, torch.stack(per_record), rtol=1e-4, atol=1e-6)


def test_mode_choice_follows_the_trainable_size():
    models = _models()
    assert choose_grad_sample_mode(models["small_cnn"]) == "hooks"
    assert choose_grad_sample_mode(models["depthwise_residual"]) == "hooks"
    large = nn.Sequential(models["depthwise_residual"], nn.Linear(3, 1000), nn.Linear(1000, 1000))
    assert choose_grad_sample_mode(large) == "bookkeeping"
    large[2].requires_grad_(False)  # what is frozen forms no per-record gradients
    assert choose_grad_sample_mode(large) == "hooks"


def test_a_noiseless_step_moves_at_most_lr_times_clip():
    torch.manual_seed(1)
    model = make_dp_compatible(_models()["small_cnn"])
    before = [p.detach().clone() for p in model.parameters()]
    lr, clip = 0.5, 1e-3
    parts = _wrap(model, sigma=0.0, clip=clip, batch=8, lr=lr)
    private_step(parts, torch.randn(8, 3, 16, 16), torch.randint(0, 3, (8,)), loss_fn)
    moved = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert 0 < moved <= lr * clip * (1 + 1e-5)


@pytest.mark.parametrize("sigma", [0.0, 1.0])
def test_an_empty_poisson_batch_is_a_noise_only_step_and_is_counted(sigma):
    model = make_dp_compatible(_models()["small_cnn"])
    before = [p.detach().clone() for p in model.parameters()]
    parts = _wrap(model, sigma=sigma)
    loss, _ = private_step(parts, torch.empty(0, 3, 16, 16), torch.empty(0, dtype=torch.long), loss_fn)
    assert loss != loss  # NaN: no records
    changed = any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert changed == (sigma > 0)
    assert parts.accountant.history == [(sigma, 0.25, 1)]


def test_the_accountant_counts_every_step():
    model = make_dp_compatible(_models()["small_cnn"])
    parts = _wrap(model, sigma=1.3)
    for batch in (3, 0, 5):
        private_step(parts, torch.randn(batch, 3, 16, 16), torch.randint(0, 3, (batch,)), loss_fn)
    assert parts.accountant.history == [(1.3, 0.25, 3)]
    assert parts.accountant.get_epsilon(delta=1e-5, alphas=RDP_ORDERS) == pytest.approx(compose_epsilon(
        [dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
            0.25, dp_accounting.GaussianDpEvent(1.3)), 3)], delta=1e-5), rel=1e-3)


def test_batchnorm_becomes_groupnorm_and_frozen_batchnorm_stays():
    frozen = nn.BatchNorm2d(8).requires_grad_(False).eval()
    model = nn.Sequential(nn.Conv2d(3, 48, 3), nn.BatchNorm2d(48), nn.Conv2d(48, 8, 3), frozen, nn.ReLU(inplace=True))
    fixed = make_dp_compatible(model)
    assert isinstance(fixed[1], nn.GroupNorm) and fixed[1].num_groups == 16  # gcd(32, 48)
    assert isinstance(fixed[3], nn.BatchNorm2d) and not fixed[3].training
    assert fixed[4].inplace is False
    assert isinstance(model[1], nn.BatchNorm2d)  # the input is not modified


class WithBuffer(nn.Linear):
    """A trainable layer with state shared across records (module level: Opacus deep-copies via pickle)."""

    def __init__(self):
        super().__init__(4, 4)
        self.register_buffer("running", torch.zeros(4))


def test_an_unsupported_layer_is_named():
    with pytest.raises(FedrayError, match=r"layer 1 \(WithBuffer\)"):
        make_dp_compatible(nn.Sequential(nn.Linear(4, 4), WithBuffer()))


def test_a_batchnorm_in_train_mode_stops_the_step():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4).requires_grad_(False), nn.Flatten(), nn.Linear(196, 3))
    parts = _wrap(make_dp_compatible(model))
    with pytest.raises(RuntimeError, match="set_frozen_eval"):
        private_step(parts, torch.randn(2, 3, 16, 16), torch.tensor([0, 1]), loss_fn)


@pytest.mark.parametrize("name", backbone_names())
def test_every_backbone_takes_a_dp_step(name):
    size = backbone_spec(name).min_image_size
    torch.manual_seed(0)
    model = make_dp_compatible(build_model(backbone(name), num_classes=3, image_size=size))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    parts = _wrap(model, batch=2)
    loss, _ = private_step(parts, torch.randn(2, 3, size, size), torch.tensor([0, 2]), loss_fn)
    assert torch.isfinite(torch.tensor(loss))
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert parts.accountant.history == [(1.0, 0.25, 1)]
