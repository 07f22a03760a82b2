"""The typed config: one frozen dataclass per config group option, registered in Hydra's ConfigStore.

YAML under ``conf/`` is the only home of defaults: no field here has a
default (every one is ``MISSING`` until a YAML file or an override sets it),
so code can never restate or contradict one. Each YAML file names its schema
in its defaults list (``- /schema/data/isic@_here_``), Hydra merges the two,
and a key the schema does not know is a composition error, not a silently
ignored typo.

Each field also carries its constraint (``fedray.config.checks``): a range
for numbers, allowed values for enums. :func:`fedray.config.checks.validate`
walks the whole tree once, before Ray starts.

:func:`fedray.config.compose.to_typed` turns the composed config into
instances of these classes, read-only once built (:class:`ReadOnly`). A builder
of one part receives its own section, typed (``build_model(cfg.model, ...)``,
``build_strategy(cfg.strategy, ...)``, ``load_splits(cfg.data, ...)``); the components
that join several sections (``Hospital``, ``Driver``, ``build_trainer``,
``run_auditor``) receive the whole typed :class:`Config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from fedray.config.checks import (
    Spec,
    boolean,
    choice,
    count,
    epsilon,
    fraction,
    free,
    nonnegative,
    nonnegative_count,
    open_fraction,
    path,
    positive,
    text,
)

class ReadOnly:
    """Frozen once built: a field is set by ``__init__`` and never again (``dataclasses.replace`` makes a copy).

    Not ``@dataclass(frozen=True)``: OmegaConf makes a frozen dataclass's config
    nodes read-only, and Hydra could then merge neither YAML nor overrides into them.
    """

    def __setattr__(self, name, value):
        if name in self.__dict__:
            raise dataclasses.FrozenInstanceError(f"the config is read-only: cannot assign {name!r}; "
                                                  "use fedray.config.replace for a changed copy")
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        raise dataclasses.FrozenInstanceError(f"the config is read-only: cannot delete {name!r}")


# -- data --------------------------------------------------------------------------


@dataclass
class Split(ReadOnly):
    train: float = fraction()
    val: float = fraction()
    test: float = fraction()


@dataclass
class DataCommon(ReadOnly):
    name: str = text()
    split: Split = free()
    augment: str = choice("flips", "none")
    consent_list: Optional[str] = path(nullable=True)  # a text file of the consenting ids


@dataclass
class ImageWhitening(ReadOnly):
    image_size: int = count(minimum=8)  # below 8 pixels the backbones' pooling stages run out of pixels
    whitening: str = choice("auto", "zca", "pca", "none")
    # under DP: the share of privacy.epsilon and delta spent on the noised colour statistics
    whitening_epsilon_share: float = open_fraction()


# -- model -------------------------------------------------------------------------


@dataclass
class BackboneModel(ReadOnly):
    name: str = text()
    pretrained: bool = boolean()
    finetune: str = choice("all", "head", "last_n")
    finetune_last_n: int = count()


@dataclass
class MlpModel(ReadOnly):
    name: str = text()
    hidden: list[int] = free()


@dataclass
class LogregModel(ReadOnly):
    name: str = text()


@dataclass
class SvmModel(ReadOnly):
    name: str = text()
    l2: float = nonnegative()  # lambda of the SVM objective, mean hinge + lambda/2 ||theta||^2 (C = 1/(lambda n))


@dataclass
class DecisionTreeModel(ReadOnly):
    name: str = text()
    max_depth: int = count()


@dataclass
class RandomForestModel(ReadOnly):
    name: str = text()
    max_depth: int = count()
    n_estimators: int = count()


# -- federation --------------------------------------------------------------------


@dataclass
class Partition(ReadOnly):
    scheme: str = choice("equal_per_class", "iid", "dirichlet", "natural")
    alpha: float = positive()


@dataclass
class Federation(ReadOnly):
    """The federation's topology and protocol; the strategy (``strategy=``) and Ray resources are their own."""

    rounds: int = count()
    local_epochs: int = count()
    eval_every: int = count()
    num_hospitals: int = count()
    clients_per_round: Optional[int] = count(nullable=True)
    actors: Optional[int] = count(nullable=True)  # hospital actors the hospitals share; null: pool.hospital_actor_count
    resident_hospitals: Optional[int] = count(nullable=True)  # kept built per actor; null: pool.resident_hospitals
    train_together: int = count()  # a round's hospitals an actor trains at once (training/together.py); 1: in turn
    partition: Partition = free()
    max_restarts: int = nonnegative_count()
    max_round_retries: int = nonnegative_count()
    secure_aggregation: bool = boolean()
    secure_max_abs: float = positive()


@dataclass
class ActorResources(ReadOnly):
    num_cpus: float = positive()
    num_gpus: float = nonnegative()
    memory_gb: Optional[float] = positive(nullable=True)  # Ray's memory reservation per actor; null reserves none


@dataclass
class Resources(ReadOnly):
    """Ray's request for each actor of one experiment (``resources.hospital``, ``resources.driver``)."""

    hospital: ActorResources = free()
    driver: ActorResources = free()


# -- privacy -----------------------------------------------------------------------


@dataclass
class PrivacyCommon(ReadOnly):
    name: str = text()
    # true: DP noise derived from the config seed (tests, simulations); the run then claims no guarantee
    reproducible_noise: bool = boolean()


@dataclass
class NoPrivacy(PrivacyCommon):
    pass


@dataclass
class DpSgdPrivacy(PrivacyCommon):
    epsilon: float = epsilon()
    delta: Optional[float] = open_fraction()
    max_grad_norm: float = positive()
    accountant: str = choice("rdp", "prv")
    grad_sample_mode: Optional[str] = choice("hooks", "functorch", "ew", "ghost", "bookkeeping", nullable=True)


@dataclass
class DistributedDpSgdPrivacy(DpSgdPrivacy):
    # the hospitals that may collude with the driver: the other K - colluders noise shares carry all the noise
    colluders: int = nonnegative_count()


@dataclass
class DpFedAvgPrivacy(PrivacyCommon):
    epsilon: float = epsilon()
    delta: float = open_fraction()
    clip_norm: float = positive()
    # distributed DP (fl.secure_aggregation=true): the hospitals that may collude with the driver
    colluders: int = nonnegative_count()


@dataclass
class LaplaceInputPrivacy(PrivacyCommon):
    epsilon: float = epsilon()
    label_share: float = open_fraction()


@dataclass
class DpTreePrivacy(PrivacyCommon):
    epsilon: float = epsilon()


@dataclass
class DpPrototypesPrivacy(PrivacyCommon):
    epsilon: float = epsilon()
    delta: Optional[float] = open_fraction()
    accountant: str = choice("rdp", "prv")
    colluders: int = nonnegative_count()  # as distributed_dpsgd's: the honest K - colluders shares carry the noise


# -- run, audit, cluster, paths, sweep ------------------------------------------------


@dataclass
class Train(ReadOnly):
    optimizer: str = choice("sgd", "adam")
    lr: float = positive()
    lr_schedule: str = choice("constant", "cosine")
    momentum: float = Spec.make(check="momentum")
    weight_decay: float = nonnegative()
    batch_size: int = count()
    physical_batch_size: int = nonnegative_count()  # 0: a step's whole batch in one pass
    precision: str = choice("bf16", "fp32")
    channels_last: bool = boolean()
    cache_features: bool = boolean()
    augmult: int = count()  # views averaged per record before clipping (fedray.training.augmult)
    feature_norm: str = choice("none", "l2", "centre", "centre_l2")  # the trained layers' input map (feature_norm)
    centre_radius: float = positive()  # feature_norm=centre: L2 bound on a record's feature in the released sum
    centre_noise_multiplier: float = positive()  # feature_norm=centre under DP: the Gaussian release's sigma / bound
    feature_subspace: int = nonnegative_count()  # k: a public subspace before the unit map (feature_subspace); 0 off
    bias_calibration_rounds: int = nonnegative_count()  # after the last round (fedray.privacy.bias_calibration)
    bias_calibration_noise_multiplier: float = positive()  # under DP: each summed-prediction release's sigma
    head_init: str = choice("default", "prototypes")  # the head's start (training.prototype_head)
    prototype_count_weight: float = positive()  # alpha: the count column's weight in the one release
    # lambda: prototypes shrunk towards the centre, S_c / (n_c + lambda); several: the driver picks on validation
    prototype_shrinkage: list[float] = free()


@dataclass
class CrossValidation(ReadOnly):
    folds: int = count()
    fold: int = nonnegative_count()


@dataclass
class InProcessCluster(ReadOnly):
    name: str = text()


@dataclass
class RayCluster(ReadOnly):
    name: str = text()
    placement_timeout_s: float = positive()  # every actor of a run answers within this long, or the run ends
    round_timeout_s: float = positive()  # a round (or the audit, any call to the driver) ends within this long


@dataclass
class LocalCluster(RayCluster):
    num_cpus: Optional[float] = positive(nullable=True)
    num_gpus: Optional[float] = nonnegative(nullable=True)


@dataclass
class RemoteCluster(RayCluster):
    address: str = free()  # may be empty in the YAML (RAY_ADDRESS unset): connect() then says what to set
    runtime_env: dict[str, Any] = free()
    connect_timeout_s: float = positive()


@dataclass
class Paths(ReadOnly):
    root_dir: str = text()
    output_dir: str = text()
    feature_cache_dir: Optional[str] = path(nullable=True)


@dataclass
class Sweep(ReadOnly):
    name: str = text()
    space: dict[str, Any] = free()
    axes: dict[str, str] = free()
    optimized_metric: str = text()
    metric_mode: str = choice("max", "min")


@dataclass
class Tune(ReadOnly):
    search: str = choice("grid", "random", "optuna")
    num_samples: int = count()
    # Private selection (Papernot & Steinke 2022; fedray.sweep.selection): the number of trials is drawn.
    selection: Optional[str] = choice("poisson", "negative_binomial", nullable=True)
    selection_mean: float = positive()
    selection_shape: float = nonnegative()
    scheduler: Optional[str] = choice("asha", nullable=True)
    max_concurrent_trials: Optional[int] = count(nullable=True)
    reuse_actors: bool = boolean()
    trial_cpus: float = positive()
    placement_strategy: str = choice("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
    checkpoint_every: int = count()
    out_dir: str = text()
    storage_path: Optional[str] = free()
    resume: Optional[str] = free()


@dataclass
class Config(ReadOnly):
    seed: int = free()
    mode: str = choice("federated", "centralized", "local")
    run_dir: Optional[str] = free()
    train: Train = free()
    audit: Any = free()  # the audit's settings (fedray.audit.settings registers schema/audit/audit)
    cv: CrossValidation = free()
    data: Any = free()
    model: Any = free()
    strategy: Any = free()  # the settings its strategy registers (fedray.strategies: schema/strategy/<name>)
    fl: Federation = free()
    resources: Resources = free()
    privacy: Any = free()
    cluster: Any = free()
    paths: Paths = free()
    tracking: Any = free()  # the tracker's settings (fedray.tracking.settings registers schema/tracking/<name>)
    tune: Tune = free()
    sweep: Optional[Sweep] = free()


# Group -> option -> schema. A YAML option file names its schema as ``/schema/<group>/<key>@_here_``.
# The schemas above are listed here; a component that owns its settings (a dataset folder, a strategy, the
# audit) registers them itself with :func:`register_schema`, in a module of COMPONENT_PACKAGES.
GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "model": {"backbone": BackboneModel, "mlp": MlpModel, "logreg": LogregModel, "svm": SvmModel,
              "decision_tree": DecisionTreeModel, "random_forest": RandomForestModel},
    "fl": {"federation": Federation},
    "privacy": {"none": NoPrivacy, "dpsgd": DpSgdPrivacy, "distributed_dpsgd": DistributedDpSgdPrivacy,
                "dpfedavg": DpFedAvgPrivacy,
                "laplace_input": LaplaceInputPrivacy, "dp_tree": DpTreePrivacy,
                "dp_prototypes": DpPrototypesPrivacy},
    "cluster": {"local": LocalCluster, "remote": RemoteCluster, "inprocess": InProcessCluster},
    "paths": {"paths": Paths},
    "sweep": {"sweep": Sweep},
    "tune": {"tune": Tune},
}

# The packages whose import registers their components' schemas (each imports only its light settings
# modules: no torch). The config is composed after they are loaded; nothing here imports them at module level,
# so the config stays the first stage of the flow (config -> data -> hospitals -> driver -> results).
COMPONENT_PACKAGES: tuple[str, ...] = ("fedray.data.datasets", "fedray.strategies", "fedray.audit", "fedray.tracking")


def register_schema(group: str, key: str):
    """Class decorator: ``@register_schema("data", "isic")`` makes the class the schema of ``conf/<group>/*.yaml``
    files that name ``/schema/<group>/<key>@_here_``. A second, different class for the same key is an error."""

    def decorate(schema: type) -> type:
        options = GROUP_SCHEMAS.setdefault(group, {})
        known = options.get(key)
        if known is not None and known.__qualname__ != schema.__qualname__:
            raise ValueError(f"schema/{group}/{key} is already {known.__qualname__}; pick another key")
        options[key] = schema
        # stored at once too: a component imported while register() runs (its package imports the config) or after
        # it (a test's own strategy) is composable all the same
        ConfigStore.instance().store(group=f"schema/{group}", name=key, node=schema)
        return schema

    return decorate


def load_components() -> None:
    """Import every package of :data:`COMPONENT_PACKAGES`, so that their schemas are registered."""
    import importlib

    for package in COMPONENT_PACKAGES:
        importlib.import_module(package)


def register() -> None:
    """Load the components' schemas and put every schema into Hydra's ConfigStore (idempotent)."""
    load_components()
    store = ConfigStore.instance()
    store.store(group="schema", name="config", node=Config)
    for group, options in GROUP_SCHEMAS.items():
        for key, schema in options.items():
            store.store(group=f"schema/{group}", name=key, node=schema)
