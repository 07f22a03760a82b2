"""One federated experiment end to end: data → partition → hospitals → driver → results.

:func:`run_experiment` is what the CLI and every Tune trial call. It takes the
typed config (frozen dataclasses cross process boundaries; no Hydra objects),
decodes the images once, deals the shards, puts each shard into Ray's object
store once, starts the hospital and driver actors (inside a placement group
when one is given), runs the rounds, and always tears the actors down.

Modes (every FL comparison needs both baselines):

- ``federated``: N hospitals, FedAvg at the driver.
- ``centralized``: one "hospital" holding the union of all shards, trained with
  the same rounds × local epochs, i.e. the same number of passes over the data.
- ``local``: each hospital trains alone for the same budget; metrics are the
  mean over the hospitals' models, each evaluated on the same held-out sets.

A hospital's shards reach its actor as ``ObjectRef`` s serialized out of band
(:func:`shard_handle`), not as constructor arguments: Ray logs an error-level
line for every actor whose constructor arguments live in the object store while
``max_restarts > 0`` (nested references and large values included), which a
healthy run must not print. An out-of-band reference is not reference-counted,
so this process keeps the shards pinned itself and frees them when the actors
are gone (:meth:`Actors.kill`); a restarted hospital re-reads the same objects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import ray
from ray import cloudpickle
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from fedray.config import Config, replace
from fedray.config.schema import Federation
from fedray.data.deal import Dealt, deal_data
from fedray.data.input_map import input_map_from_state
from fedray.data.types import Records
from fedray.errors import FedrayError
from fedray.federation.driver import Driver
from fedray.federation.hospital import Hospital
from fedray.federation.runtime import get_in_one_line
from fedray.models import model_family
from fedray.federation.audit import (CanaryPlan, audit_inputs, audit_summary, driver_canaries,
                                     hospital_gradient_canaries, plan_input_canaries, plan_white_box, run_auditor,
                                     training_shards)
from fedray.privacy.randomness import new_release_key
from fedray.privacy.mechanisms import PrivacyPlan, check_mechanism, plan_privacy
from fedray.training import build_training_model


log = logging.getLogger(__name__)


@dataclass
class ExperimentResult:
    rounds: list[dict]
    summary: dict
    final_params: list[dict] = field(repr=False)
    best_params: list[dict] = field(repr=False)  # the model(s) after the best-validation round
    dealt: Dealt = field(repr=False)


def _as_payload(data: Records) -> dict:
    """Plain numpy arrays: Ray stores them once and actors read them zero-copy."""
    return {"inputs": np.ascontiguousarray(np.asarray(data.inputs)), "labels": np.asarray(data.labels)}


def validate_model(cfg: Config, plan: dict, *, num_classes: int, num_features: int | None, data_kind: str) -> None:
    """Check the model against the data and build it once in the caller's process, before any actor starts."""
    name = cfg.model.name
    family = model_family(name)
    if (data_kind == "image") != (family == "image"):
        wants = "images" if family == "image" else "table rows"
        raise FedrayError(f"model {name} takes {wants} but data {cfg.data.name} holds {data_kind}s: "
                          f"pick a {'table' if data_kind == 'table' else 'image'} model (conf/model/)")
    if family != "tree":
        build_training_model(cfg, plan, num_classes=num_classes, num_features=num_features)


def actor_resources(fl: Federation, *, gpus_present: bool) -> tuple[dict, dict]:
    """(driver, hospital) resource requests; GPU fractions only where the cluster has GPUs."""
    def one(section) -> dict:
        return {"num_cpus": float(section.num_cpus), "num_gpus": float(section.num_gpus) if gpus_present else 0.0}
    return one(fl.driver), one(fl.hospital)


@dataclass
class Prepared:
    """Everything decided before Ray is touched: bad input fails here, in the caller's process."""

    cfg: Config  # resolved for the data (a tree model runs one round)
    dealt: Dealt
    privacy: PrivacyPlan
    num_classes: int
    num_features: int | None  # a table's column count; None for images
    # One secret per hospital for its one-time releases (Laplace rows, DP trees): a restarted
    # hospital must re-create the same release, never draw a second one. Never given to the driver.
    release_keys: list[int | None]
    # What each hospital trains on: its shard and the input canaries the auditor included there.
    training_shards: list[Records]
    # The auditor's canaries and their secret inclusion (None: no audit). Never given to the driver whole.
    canaries: CanaryPlan | None = None


@dataclass
class ExperimentState:
    """An experiment stopped after round ``round``: what a checkpoint stores to continue it.

    The input map, its private-statistics entries and the hospitals' release
    keys are kept rather than recomputed: a second noised release of the same
    records would spend the budget again. The release keys are secrets of the
    hospitals: a checkpoint is as sensitive as the data it was made from. So
    is the auditor's canary plan, kept so that its inclusion is never redrawn.
    """

    round: int
    rounds: list[dict]
    driver: dict
    input_map_state: dict
    preprocessing: list[dict]
    release_keys: list[int | None]
    seconds: float  # wall time spent before the checkpoint
    canaries: CanaryPlan | None = None


def prepare_experiment(cfg: Config, *, resume: ExperimentState | None = None) -> Prepared:
    check_mechanism(cfg)
    fitted = None if resume is None else (input_map_from_state(resume.input_map_state), resume.preprocessing)
    dealt = deal_data(cfg, fitted=fitted)
    train = dealt.splits.train
    num_classes = len(train.class_names)
    num_features = int(train.inputs.shape[1]) if train.kind == "table" else None
    cfg = resolve_for_data(cfg)
    canaries = resume.canaries if resume is not None else plan_input_canaries(cfg, dealt)
    shards = training_shards(dealt, canaries)
    privacy = plan_privacy(cfg, shard_sizes=[len(s) for s in shards],
                           ranges_public=train.ranges_public, preprocessing=dealt.preprocessing)
    validate_model(cfg, privacy.resolved_cfg, num_classes=num_classes, num_features=num_features,
                   data_kind=train.kind)
    if resume is None:
        canaries = plan_white_box(cfg, privacy.resolved_cfg, canaries, dealt=dealt, num_classes=num_classes,
                                  num_features=num_features)
    release_keys = resume.release_keys if resume is not None else \
        [None if cfg.privacy.reproducible_noise else new_release_key() for _ in dealt.train_shards]
    return Prepared(cfg, dealt, privacy, num_classes, num_features, release_keys, shards, canaries)


def resolve_for_data(cfg: Config) -> Config:
    """A tree model is fitted once (a second fit would spend the privacy budget again): exactly one round."""
    if model_family(cfg.model.name) == "tree" and cfg.fl.rounds != 1:
        log.info("model %s is fitted once: running 1 round instead of fl.rounds=%s", cfg.model.name, cfg.fl.rounds)
        return replace(cfg, **{"fl.rounds": 1})
    return cfg


@dataclass
class Actors:
    driver: object
    hospitals: list
    shard_refs: list  # held for the whole run: a restarted hospital is re-created from these objects

    def kill(self) -> None:
        for actor in [self.driver, *self.hospitals]:
            if actor is not None:
                ray.kill(actor, no_restart=True)
        for pair in self.shard_refs:
            for ref in pair:
                _unpin(ref)


def shard_handle(ref: ray.ObjectRef) -> bytes:
    """``ref`` serialized out of band: a small constructor argument Ray does not count as an object-store one.

    Ray pins an out-of-band reference with one extra local reference for the
    life of this process; :func:`_unpin` drops it when the experiment ends.
    """
    return cloudpickle.dumps(ref)


def _unpin(ref: ray.ObjectRef) -> None:
    # The counterpart of the pin Ray's serializer adds (ray._private.serialization.add_contained_object_ref).
    core_worker = getattr(ray._private.worker.global_worker, "core_worker", None)
    if core_worker is not None and hasattr(core_worker, "remove_object_ref_reference"):
        core_worker.remove_object_ref_reference(ref)


def start_hospitals(prep: Prepared, hospital_res: dict, placed: Callable[[int], dict]) -> Actors:
    """One actor per hospital, each given only its own shards (put into the object store once)."""
    cfg = prep.cfg
    shard_refs = [(ray.put(_as_payload(t)), ray.put(_as_payload(v)))
                  for t, v in zip(prep.training_shards, prep.dealt.val_shards)]
    hospital_cls = ray.remote(Hospital)
    hospitals = [
        hospital_cls.options(
            max_restarts=cfg.fl.max_restarts, **hospital_res, **placed(1 + k),
        ).remote(
            hospital_id=k, shards=[shard_handle(train_ref), shard_handle(val_ref)], cfg=cfg,
            plan=prep.privacy.resolved_cfg,
            input_map_state=prep.dealt.input_map.state_dict(), num_classes=prep.num_classes,
            num_features=prep.num_features, resources=hospital_res, release_key=prep.release_keys[k],
            gradient_canaries=hospital_gradient_canaries(prep.canaries, k),
        )
        for k, (train_ref, val_ref) in enumerate(shard_refs)
    ]
    return Actors(driver=None, hospitals=hospitals, shard_refs=shard_refs)


def driver_kwargs(prep: Prepared, hospitals: list, driver_res: dict) -> dict:
    return dict(
        cfg=prep.cfg, plan=prep.privacy.resolved_cfg, hospitals=hospitals,
        val_set=_as_payload(prep.dealt.splits.val), test_set=_as_payload(prep.dealt.splits.test),
        input_map_state=prep.dealt.input_map.state_dict(), num_classes=prep.num_classes,
        num_features=prep.num_features, max_samples=max(len(s) for s in prep.training_shards),
        resources=driver_res, **driver_canaries(prep.canaries),
    )


def run_experiment(
    cfg: Config,
    *,
    prepared: Prepared | None = None,
    on_round: Callable[[dict], None] | None = None,
    placement_group=None,
    bundle_offset: int = 0,
    resume: ExperimentState | None = None,
    on_checkpoint: Callable[[dict, ExperimentState], None] | None = None,
) -> ExperimentResult:
    """Run one experiment on the connected Ray cluster and return its rounds and summary.

    With ``placement_group``, the driver takes bundle ``bundle_offset`` and
    hospital k bundle ``bundle_offset + 1 + k``. ``resume`` continues a
    checkpointed experiment after its last round. With ``on_checkpoint``,
    every ``tune.checkpoint_every``-th round before the last is handed to it
    with the :class:`ExperimentState` to save, instead of to ``on_round``.
    """
    started = time.perf_counter() - (resume.seconds if resume else 0.0)
    prep = prepared or prepare_experiment(cfg, resume=resume)
    cfg = prep.cfg
    gpus_present = ray.cluster_resources().get("GPU", 0) > 0
    driver_res, hospital_res = actor_resources(cfg.fl, gpus_present=gpus_present)

    def placed(index: int) -> dict:
        if placement_group is None:
            return {}
        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group=placement_group, placement_group_bundle_index=bundle_offset + index)}

    actors = start_hospitals(prep, hospital_res, placed)
    try:
        actors.driver = ray.remote(Driver).options(**driver_res, **placed(0)).remote(
            **driver_kwargs(prep, actors.hospitals, driver_res))
        rounds = list(resume.rounds) if resume else []
        if resume:
            ray.get(actors.driver.restore.remote(resume.driver))
        total = cfg.fl.rounds
        feature_cache = _hospital_errors_as_one_line(actors.driver.feature_cache.remote())
        first = len(rounds) + 1
        for r in range(first, total + 1):
            evaluate = r % cfg.fl.eval_every == 0 or r == total
            record = _hospital_errors_as_one_line(actors.driver.run_round.remote(r, evaluate))
            record["total_rounds"] = total
            if feature_cache and r == first:
                record["feature_cache"] = cache_line(feature_cache)
            rounds.append(record)
            if on_checkpoint is not None and r < total and r % cfg.tune.checkpoint_every == 0:
                on_checkpoint(record, ExperimentState(
                    round=r, rounds=list(rounds), driver=ray.get(actors.driver.snapshot.remote()),
                    input_map_state=prep.dealt.input_map.state_dict(), preprocessing=prep.dealt.preprocessing,
                    release_keys=prep.release_keys, seconds=time.perf_counter() - started,
                    canaries=prep.canaries))
            elif on_round is not None:
                on_round(record)
        placement = ray.get(actors.driver.placement.remote())
        final_params, best_params = ray.get(actors.driver.exported_params.remote())
        privacy_states = ray.get(actors.driver.hospital_privacy_states.remote())
        canary_scores = ray.get(actors.driver.canary_scores.remote())
    finally:
        actors.kill()
    ledger = prep.privacy.summary(privacy_states)
    audit = None
    if cfg.audit.enabled:
        # The auditor takes the driver's freed bundle: it is the only process that sees members' records.
        auditor = ray.get(ray.remote(run_auditor).options(**driver_res, **placed(0)).remote(
            **audit_inputs(prep, final_params, driver_res)))
        audit = audit_summary(cfg, prep.canaries, auditor, canary_scores,
                              ledger=ledger,
                              num_records=sum(len(s) for s in prep.training_shards))
    seconds = time.perf_counter() - started
    summary = _summarise(cfg, prep.dealt, rounds, ledger, seconds, driver_res, hospital_res)
    summary["membership_inference"] = audit
    summary["feature_cache"] = feature_cache or None
    summary["placement"] = placement
    summary["resumed_after_round"] = resume.round if resume else None
    return ExperimentResult(rounds=rounds, summary=summary, final_params=final_params, best_params=best_params,
                            dealt=prep.dealt)


def cache_line(feature_cache: dict) -> str:
    """One line for the progress output: what was cached and the wall time it took (the slowest party's)."""
    parties = [feature_cache["driver"], *feature_cache["hospitals"]]
    records = sum(p["records"] for p in parties)
    seconds = max(p["seconds"] for p in parties)
    where = "read from the feature cache" if all(p["from_disk"] for p in parties) else "computed"
    return (f"frozen features of {records} images ({feature_cache['hospitals'][0]['views']} views at the hospitals) "
            f"{where} in {seconds:.1f} s")


def _hospital_errors_as_one_line(ref):
    """A user-fixable error inside the driver or a hospital (the driver names the hospital) as one FedrayError."""
    return get_in_one_line(ref, causes=(FedrayError,))


def _summarise(cfg, dealt: Dealt, rounds, ledger: dict, seconds, driver_res, hospital_res) -> dict:
    final = rounds[-1]
    evaluated = [r for r in rounds if "val" in r]  # fl.eval_every; the last round is always evaluated
    best = max(evaluated, key=lambda r: r["val"]["balanced_accuracy"])  # chosen on validation, never on test
    scalar = lambda m: {k: v for k, v in m.items() if not isinstance(v, list)}  # noqa: E731
    gpu_share = driver_res["num_gpus"] + hospital_res["num_gpus"] * len(dealt.train_shards)  # all reserved
    return {
        "status": "completed",
        "mode": cfg.mode,
        "model": cfg.model.name,
        "data": {
            "source": dealt.splits.source,
            "classes": list(dealt.splits.train.class_names),
            "train": len(dealt.splits.train), "val": len(dealt.splits.val), "test": len(dealt.splits.test),
            "hospital_train_sizes": [len(s) for s in dealt.train_shards],
            "dropped_by_partition": dealt.dropped,
            "skipped_files": list(dealt.splits.skipped_files),
            "without_consent": dealt.splits.without_consent,
            "fold": list(dealt.splits.fold) if dealt.splits.fold else None,
        },
        "rounds": len(rounds),
        "final_test": scalar(final["test"]),
        "final_val": scalar(final["val"]),
        "final_test_confusion_matrix": final["test"].get("confusion_matrix"),
        "best_val_round": best["round"],
        "best_val_round_test": scalar(best["test"]),
        "privacy": ledger,
        "hospital_restarts": final["restarts"],
        "wall_seconds": seconds,
        "seconds_per_round": float(np.mean([r["round_seconds"] for r in rounds])),
        "gpu_hours": seconds / 3600 * gpu_share,
    }
