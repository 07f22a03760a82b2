"""A new image model is one registration (docs/extending.md): a backbone defined here, in tests/, trains.

Nothing in fedray/ names it: :func:`fedray.models.register_backbone` adds it, and the run (the real round loop,
every party in this process) builds it, fine-tunes its head and trains it under DP-SGD like any other backbone.
"""

from __future__ import annotations

import pytest
from torch import nn

from conftest import TINY, backbone, compose_typed, with_changes
from fedray.errors import FedrayError
from fedray.federation.experiment import run_in_process
from fedray.models import BackboneSpec, backbone_spec, build_model, register_backbone

NAME = "tiny_mlp_image"


class TinyMlpImage(nn.Module):
    """Flatten, one hidden layer, a head: Opacus computes its per-sample gradients in hooks mode."""

    def __init__(self, image_size: int = 16):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, 32), nn.ReLU())
        self.head = nn.Linear(32, 1000)  # build_model swaps in a num_classes head

    def forward(self, x):
        return self.head(self.body(x))


def build(pretrained: bool) -> nn.Module:
    if pretrained:
        raise FedrayError(f"{NAME} has no pretrained weights: set model.pretrained=false")
    return TinyMlpImage()


@pytest.fixture(autouse=True)
def registered():
    """Registered for this module's tests only: other modules parametrise over every backbone name."""
    from fedray.models import registry

    register_backbone(BackboneSpec(NAME, min_image_size=16, has_batchnorm=False), build, head="head")
    yield
    del registry._BACKBONES[NAME]


def test_registered_backbone_is_built_with_a_fresh_head_and_finetuned_blocks():
    model = build_model(backbone(NAME, finetune="head"), num_classes=3, image_size=16)
    assert model.head.out_features == 3
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}  # the default blocks leave the head out
    assert backbone_spec(NAME).min_image_size == 16


def test_a_second_backbone_under_a_known_name_is_refused():
    with pytest.raises(FedrayError, match="exists already"):
        register_backbone(BackboneSpec(NAME, min_image_size=16, has_batchnorm=False), lambda p: TinyMlpImage(),
                          head="head")


@pytest.mark.parametrize("privacy", [[], ["privacy=dpsgd", "privacy.epsilon=8"]], ids=["plain", "dpsgd"])
def test_registered_backbone_trains_end_to_end(tmp_path, privacy):
    cfg = compose_typed([*TINY, "fl.rounds=1", *privacy], tmp_path / "run")
    cfg = with_changes(cfg, model=backbone(NAME))
    result = run_in_process(cfg)
    summary = result.summary
    assert summary.model == NAME
    assert 0.0 <= summary.final_test["balanced_accuracy"] <= 1.0
    if privacy:
        assert summary.epsilon == pytest.approx(8.0, rel=0.01)
