r"""Feature maps of the trained layers' input: unit norm per record (``train.feature_norm=l2``), centred
(``centre``), or centred and then unit (``centre_l2``).

Tramèr & Boneh 2021 ("Differentially private learning needs better
features (or much more data)", §3) train linear models under DP-SGD on
fixed features normalised per record, with a data-independent map. Here the
map is

.. math:: u(z) = z / \max(\lVert z\rVert_2, 10^{-12}),

applied to the last dimension of

- an image backbone's head input, with ``model.finetune=head`` (the frozen
  features :math:`g(x)` of :mod:`fedray.training.features`, each flip view
  on its own), and
- a table model's input row, after the public range scaling of the input map.

Why it can help. For a linear head :math:`s = Wz + b` under cross-entropy, record
:math:`i`'s gradient is :math:`(p_i - e_{y_i})\,(z_i, 1)^\top`, of norm
:math:`\lVert p_i - e_{y_i}\rVert \sqrt{\lVert z_i\rVert^2 + 1}`. Raw
EfficientNet features have norms of tens, so at C = 1 every record's gradient is
clipped to the same norm and the factor :math:`\lVert p_i - e_{y_i}\rVert` (how
wrong the model still is on the record) is lost; at unit norm the gradient is
at most 2 and mostly below C, so clipping leaves it as it is. The price: the
scale of the features, and the step size that suits them, change.

Privacy. :math:`u` reads one record and no parameter of the data: DP-SGD's
per-record gradient is still that of one record, clipped to C, so the
sensitivity and the accounting are unchanged (post-processing of the public
pipeline: ``docs/privacy.md``). Evaluation passes through the same map, since it is
part of the model's forward pass: a forward pre-hook on the head (or on the
table model), which the cached features (taken before the hook,
:func:`fedray.training.features.head_inputs`) never contain. A state dict
saved from the run holds the weights only: a model rebuilt from it needs the
run's ``train.feature_norm`` again.

Centring (``train.feature_norm=centre``). The head's input becomes
:math:`z - m`, :math:`m` the hospitals' mean frozen feature. Why it could
help under DP-SGD (measured on ISIC, it did not beyond the spread of reruns:
``docs/privacy.md``): EfficientNet's pooled ReLU6 features share a large common
component (on ISIC half of a feature's energy lies along the mean; the
average cosine between two records is 0.49, 0.00 after centring). For the
head, that component carries no class information, yet it takes half of
every clipped gradient's norm C, and noise in the weights along it moves
every class score by the same random amount for every input, which costs
balanced accuracy most; after centring that offset is left to the bias, whose
input is 1 instead of about 20. :math:`m` is a statistic of private records:
each hospital releases its clipped feature sum under the Gaussian mechanism
(:func:`fedray.privacy.preprocessing.private_feature_sums`; its count is
public under zero-out neighbouring; the launcher computes the features
through the cache the hospital reads), the
ledger composes that release with training, and :math:`m` is post-processing
(:func:`fedray.privacy.preprocessing.feature_centre`). The released sums
travel in the plan's preprocessing entries, so every party builds the same
map, and a resumed run reuses them rather than releasing again. Only a head on
cached frozen features takes it (a table row's scale is already public).

Centred unit features (``train.feature_norm=centre_l2``), the space of the
prototype head (:mod:`fedray.privacy.prototypes`). The input becomes

.. math:: v(z) = u\big(u(z) - m\big),

:math:`m` the hospitals' mean of :math:`u(g_i)`. It is released as above with
each record's unit feature in place of :math:`g_i` and :math:`R = 1` (the
bound every unit feature meets, whatever ``train.centre_radius``), but as
one sum masked under secure aggregation with the noise in the hospitals'
shares (:mod:`fedray.training.prototype_head`), which only
``privacy=dp_prototypes`` charges. Centring
removes the common direction; the second :math:`u` gives every record the
same weight in a class's sum, as the prototype release's sensitivity needs.

``train.feature_subspace=k`` projects the frozen features onto a public
subspace before the unit maps (:mod:`fedray.training.feature_subspace`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from fedray.errors import FedrayError
from fedray.privacy.preprocessing import feature_centre, private_feature_sums
from fedray.privacy.randomness import NoiseSource, Purpose, hospital
from fedray.training.feature_subspace import project, public_basis


def _projected_unit(inputs: torch.Tensor, basis) -> torch.Tensor:
    """``u(Qz)`` per row (``Q`` the identity without ``train.feature_subspace``'s basis)."""
    return functional.normalize(project(inputs, basis), p=2.0, dim=-1)


def _centred_unit(centre: torch.Tensor, inputs: torch.Tensor, basis=None) -> torch.Tensor:
    """``u(u(Qz) - c)`` per row, for a centre ``c`` already in the span (:func:`_span_centre`)."""
    return functional.normalize(_projected_unit(inputs, basis) - centre.to(inputs.device, inputs.dtype),
                                p=2.0, dim=-1)


def _span_centre(centre, basis) -> torch.Tensor:
    """``Qm``: the released centre with its noise outside the span dropped."""
    return project(torch.as_tensor(np.asarray(centre)), basis)


def unit_features(features: np.ndarray, basis: np.ndarray | None = None) -> np.ndarray:
    """``u(Qz)`` for rows of frozen features in float64: what ``l2`` maps them to, and what the centre of
    ``centre_l2`` averages."""
    return _projected_unit(torch.as_tensor(np.asarray(features, dtype=np.float64)), basis).numpy()


def centred_unit_features(features: np.ndarray, centre: np.ndarray, basis: np.ndarray | None = None) -> np.ndarray:
    """``v(z)`` of ``train.feature_norm=centre_l2`` for rows of frozen features, as the head's hook maps them
    (``basis``: ``train.feature_subspace``'s, :func:`fedray.training.feature_subspace.public_basis`)."""
    return _centred_unit(_span_centre(centre, basis), torch.as_tensor(np.asarray(features)), basis).numpy()


class _UnitRows:
    """A forward pre-hook: ``u(Qx)`` (``train.feature_norm=l2``; ``Q`` the identity without a subspace)."""

    def __init__(self, basis: np.ndarray | None = None):
        self.basis = None if basis is None else torch.as_tensor(basis, dtype=torch.float32)

    def __call__(self, _module: nn.Module, args: tuple):
        return (_projected_unit(args[0], self.basis), *args[1:])


class _Centred:
    """A forward pre-hook: the layer's input minus a fixed centre (cast to the input's device and dtype)."""

    def __init__(self, centre: np.ndarray):
        self.centre = torch.as_tensor(np.asarray(centre), dtype=torch.float32)

    def __call__(self, _module: nn.Module, args: tuple):
        return (args[0] - self.centre.to(args[0].device, args[0].dtype), *args[1:])


class _CentredUnit(_Centred):
    """A forward pre-hook: ``u(u(Qx) - Qm)`` for a fixed centre ``m`` (``Q`` the identity without a subspace)."""

    def __init__(self, centre: np.ndarray, basis: np.ndarray | None):
        super().__init__(_span_centre(centre, basis).float().numpy())  # projected once, not every batch
        self.basis = None if basis is None else torch.as_tensor(basis, dtype=torch.float32)

    def __call__(self, _module: nn.Module, args: tuple):
        return (_centred_unit(self.centre, args[0], self.basis), *args[1:])


def attach_feature_norm(model: nn.Module, cfg, *, family: str, preprocessing=()) -> None:
    """Make ``model`` map its trained layers' input (``train.feature_norm``), in place.

    Image backbones: only with ``model.finetune=head``, where the head is the only layer with trainable
    parameters; anything else is refused in one FedrayError line (the run has not started yet). ``centre``
    reads its centre from the released feature sums among the plan's ``preprocessing`` entries.
    """
    norm = cfg.train.feature_norm
    basis = public_basis(cfg)  # refuses a subspace this map or model cannot take
    if norm == "none":
        return
    if family == "table" and norm == "l2":
        model.register_forward_pre_hook(_UnitRows())
        return
    layer = trained_layer(model, cfg, family=family)
    if norm == "l2":
        layer.register_forward_pre_hook(_UnitRows(basis))
        return
    centre = feature_centre(preprocessing)
    if centre is None:  # the plan was resolved before the hospitals' sums were released (a sweep varying it)
        raise FedrayError(f"train.feature_norm={norm}: the plan holds no released feature sums; set it for every "
                          "trial of a sweep alike, or train.feature_norm=none")
    layer.register_forward_pre_hook(_CentredUnit(centre, basis) if norm == "centre_l2" else _Centred(centre))


def trained_layer(model: nn.Module, cfg, *, family: str) -> nn.Module:
    """The one layer with trainable parameters of a head on frozen features, or a one-line refusal."""
    norm = cfg.train.feature_norm
    trainable = [m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]
    if family != "image" or cfg.model.finetune != "head" or len(trainable) != 1:
        what = "centres the input of a head on frozen features" if norm.startswith("centre") else \
            "normalises the input of a head on frozen features or of a table model"
        raise FedrayError(f"train.feature_norm={norm} {what}; model {cfg.model.name} here trains more than its "
                          "head: set model.finetune=head or train.feature_norm=none")
    return trainable[0]


def frozen_features(cfg, shards, input_map, *, num_classes: int, what: str) -> list[np.ndarray]:
    """Each shard's ``[n, d]`` frozen features (view 0), through the feature cache the hospitals read later.

    ``what`` names the switch that needs them, for the refusals.
    """
    from fedray.models import build_model, model_family
    from fedray.training import _store, frozen_split
    from fedray.training.features import FLIP_VIEWS, FeatureEncoder

    family = model_family(cfg.model.name)
    if family != "image":
        raise FedrayError(f"{what} needs a head on frozen features; model {cfg.model.name} takes table rows: set "
                          f"train.feature_norm=none or l2 and train.head_init=default")
    model = build_model(cfg.model, num_classes=num_classes, image_size=cfg.data.image_size)
    trained_layer(model, cfg, family=family)  # the same refusal as the hospitals', before any work
    split = frozen_split(cfg, model, torch.device("cpu"))
    if split is None:
        raise FedrayError(f"{what} needs cached frozen features; model {cfg.model.name} here has none: set "
                          f"train.cache_features=true, or train.feature_norm=none and train.head_init=default")
    encoder = FeatureEncoder(split, input_map, _store(cfg), torch.device("cpu"))
    views = FLIP_VIEWS if cfg.data.augment == "flips" else 1  # the hospitals' cache file: they read it later
    return [encoder.features(np.asarray(shard.inputs), views=views)[:, 0].numpy() for shard in shards]


def release_feature_sums(cfg, features: list[np.ndarray], *, private: bool) -> list[dict]:
    """Every hospital's frozen-feature sum for ``train.feature_norm=centre``: its ledger entries.

    Computed where the hospital would (here, before Ray starts), from each hospital's frozen features
    (:func:`frozen_features`). Under a DP claim each sum is noised by the hospital's own secret ``NoiseSource``
    (reproducible only under ``privacy.reproducible_noise``); without one it is exact. (``centre_l2``'s centre
    is a masked release: :func:`fedray.training.prototype_head.release_centre`.)
    """
    entries = []
    for k, hospital_features in enumerate(features):
        noise = NoiseSource.from_config(cfg.privacy, seed=cfg.seed, party=hospital(k))
        entry = private_feature_sums(hospital_features, radius=cfg.train.centre_radius,
                                     noise_multiplier=cfg.train.centre_noise_multiplier if private else None,
                                     rng=noise.numpy_generator(1, Purpose.STAT_NOISE) if private else None)
        entries.append({**entry, "hospital": k})
    return entries
