"""Augmentation multiplicity and feature normalisation (fedray.training.augmult, .feature_norm): free utility."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import TINY, compose_typed

from fedray.errors import FedrayError
from fedray.privacy.opacus_wiring import private_step, wrap_private
from fedray.training import build_training_model, frozen_split
from fedray.training.augmult import ViewMeanLoss, pick_flip_views
from fedray.training.feature_norm import attach_feature_norm
from fedray.training.features import head_inputs

LITE0_HEAD = ["model=efficientnet_lite0", "model.pretrained=true", "model.finetune=head", "data.image_size=32"]
NO_PREPARATION = SimpleNamespace(prepare_model=lambda model: model)  # a plan that leaves the model as built


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # the input needs no grad: expected
@pytest.mark.parametrize("mode", ["hooks", "functorch", "ew"])
def test_a_records_clipped_gradient_is_the_clip_of_its_views_mean_gradient(mode):
    torch.manual_seed(0)
    records, views, features, classes, clip = 6, 3, 5, 4, 0.5
    head = nn.Linear(features, classes)
    reference = nn.Linear(features, classes)
    reference.load_state_dict(head.state_dict())
    x, y = torch.randn(records, views, features) * 3, torch.randint(classes, (records,))
    parts = wrap_private(head, torch.optim.SGD(head.parameters(), lr=0.1), noise_multiplier=0.0,
                         max_grad_norm=clip, sample_rate=0.5, expected_batch_size=records, grad_sample_mode=mode)

    # Clip each record's gradient, add σ = 0 noise, divide by the expected batch size (then an SGD step).
    private_step(parts, x, y, ViewMeanLoss(nn.CrossEntropyLoss()))

    by_hand = []  # per record: the mean over its views of each view's own loss gradient, then clipped as a whole
    for i in range(records):
        per_view = []
        for v in range(views):
            reference.zero_grad()
            nn.functional.cross_entropy(reference(x[i, v][None]), y[i][None]).backward()
            per_view.append(torch.cat([reference.weight.grad.flatten(), reference.bias.grad]))
        mean = torch.stack(per_view).mean(0)
        by_hand.append(mean * min(1.0, clip / float(mean.norm())))
    expected = torch.stack(by_hand).sum(0) / records
    got = torch.cat([head.weight.grad.flatten(), head.bias.grad])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert any(float(g.norm()) > clip * 0.999 for g in by_hand)  # the clip did bite on some record


def test_pick_flip_views_draws_distinct_views_of_each_record():
    cache = torch.arange(5 * 4, dtype=torch.float32).reshape(5, 4, 1)  # record r, view v holds 4r + v
    picked = pick_flip_views(3)(cache, torch.Generator().manual_seed(1))
    assert picked.shape == (5, 3, 1)
    for r in range(5):
        chosen = picked[r, :, 0].long().tolist()
        assert len(set(chosen)) == 3 and all(4 * r <= c < 4 * r + 4 for c in chosen)
    everything = pick_flip_views(4)(cache, torch.Generator().manual_seed(1))
    assert sorted(everything[2, :, 0].tolist()) == [8, 9, 10, 11]


@pytest.mark.parametrize("overrides, says", [
    (["train.augmult=2"], "per-sample gradients"),  # small_cnn trains its convolutions: no cached head
    ([*LITE0_HEAD, "train.augmult=5"], "<=4"),
    ([*LITE0_HEAD, "train.augmult=2", "data.augment=none"], "data.augment=none"),
    (["train.feature_norm=l2"], "model.finetune=head"),
])
def test_settings_the_model_cannot_take_are_refused_in_one_line(tmp_path, overrides, says):
    cfg = compose_typed([*TINY, "data.augment=flips", *overrides], tmp_path)
    with pytest.raises(FedrayError, match=r"^train\.\w+=\w+ [^\n]*" + says.replace(".", r"\.")):
        build_training_model(cfg, NO_PREPARATION, num_classes=3, num_features=None)


def test_feature_norm_puts_each_rows_views_at_unit_norm_before_the_layer(tmp_path):
    cfg = compose_typed([*TINY, "model=logreg", "train.feature_norm=l2"], tmp_path)
    layer = nn.Linear(3, 2, bias=False)
    seen = []
    layer.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    attach_feature_norm(layer, cfg, family="table")
    layer(torch.tensor([[[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]]]))
    torch.testing.assert_close(seen[0], torch.tensor([[[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]]))


class _Scale:
    def apply(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.float() / 255


def test_the_cache_keeps_raw_features_and_the_head_reads_them_normalised(tmp_path):
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    splits, cached = {}, {}
    for norm in ("none", "l2"):
        cfg = compose_typed([*TINY, *LITE0_HEAD, f"train.feature_norm={norm}"], tmp_path)
        model = build_training_model(cfg, NO_PREPARATION, num_classes=3, num_features=None)
        splits[norm] = frozen_split(cfg, model, torch.device("cpu"))
        cached[norm] = head_inputs(splits[norm], images, _Scale(), device=torch.device("cpu"), views=1)[:, 0]
    torch.testing.assert_close(cached["l2"], cached["none"])  # g(x) itself: one cache serves both settings
    seen = []
    splits["l2"].head.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    splits["l2"].head_side.eval()(cached["l2"] * 5)
    torch.testing.assert_close(seen[0], torch.nn.functional.normalize(cached["l2"], dim=1))
