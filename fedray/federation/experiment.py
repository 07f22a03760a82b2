"""One federated experiment end to end: data → partition → hospitals → driver → results.

:func:`run_experiment` is what the CLI and every Tune trial call. It takes the
typed config (frozen dataclasses cross process boundaries; no Hydra objects),
decodes the images once, deals the shards, puts each shard into Ray's object
store once, builds the hospitals and the driver in this process's pooled
actors (:mod:`fedray.federation.pool`, inside a placement group when one is
given), runs the rounds, runs the audit (:mod:`fedray.audit`) in the driver's freed actor, and
always drops the experiment's parties (a failed experiment also kills the
actors, so no later experiment inherits them).

Modes (every FL comparison needs both baselines):

- ``federated``: N hospitals, FedAvg at the driver.
- ``centralized``: one "hospital" holding the union of all shards, trained with
  the same rounds × local epochs, i.e. the same number of passes over the data.
- ``local``: each hospital trains alone for the same budget; metrics are the
  mean over the hospitals' models, each evaluated on the same held-out sets.

A hospital's shards are object references in its set-up
(:func:`hospital_setups`), kept by this process for the whole experiment:
hospitals are virtual (:mod:`fedray.federation.residency`), built from the
same objects in whichever actor runs their turn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import ray

from fedray.audit import inserted_record_slots
from fedray.audit.plan import (AuditPlan, audit_slot_counts, driver_attachments, hospital_attachments,
                               plan_insertions, plan_records, slot_counts, training_shards)
from fedray.config import Config, replace
from fedray.data.deal import Dealt, deal_data
from fedray.data.input_map import input_map_from_state
from fedray.data.types import Records
from fedray.errors import FedrayError
from fedray.federation.driver import Driver
from fedray.federation.cluster import cluster_line
from fedray.federation import wrap_up
from fedray.federation.driver_proxy import DriverProxy, RayDriver
from fedray.federation.hospital import HospitalError
from fedray.federation.pool import ActorPool, actor_resources, hospital_actor_count, process_pool, resident_hospitals
from fedray.federation.proxy import HospitalsProxy, InProcessHospitals, RayHospitals
from fedray.federation.residency import together_groups
from fedray.federation.runtime import get_in_one_line, overdue_line
from fedray.models import model_family
from fedray.privacy.preprocessing import feature_centre, fit_input_map
from fedray.privacy.randomness import new_release_key
from fedray.privacy.mechanisms import (Mechanism, PlanContext, check_mechanism, claims_dp, mechanism_class,
                                       plan_privacy)
from fedray.results.summary import RunSummary
from fedray.results.timing import Stopwatch
from fedray.training import build_training_model
from fedray.training.feature_norm import frozen_features, release_feature_sums
from fedray.training.prototype_head import release_centre, release_prototype_sums, released_prototypes
from fedray.training.together import check_train_together


log = logging.getLogger(__name__)


@dataclass
class ExperimentResult:
    rounds: list[dict]
    summary: RunSummary
    final_params: list[dict] = field(repr=False)
    best_params: list[dict] = field(repr=False)  # the model(s) after the best-validation round
    dealt: Dealt = field(repr=False)


def _as_payload(data: Records) -> dict:
    """Plain numpy arrays: Ray stores them once and actors read them zero-copy."""
    return {"inputs": np.ascontiguousarray(np.asarray(data.inputs)), "labels": np.asarray(data.labels)}


def validate_model(cfg: Config, plan: Mechanism, *, num_classes: int, num_features: int | None, data_kind: str) -> int:
    """Check the model against the data and build it once in the caller's process, before any actor starts;
    its state's bytes (0 for a tree, which has no torch model)."""
    name = cfg.model.name
    family = model_family(name)
    if (data_kind == "image") != (family == "image"):
        wants = "images" if family == "image" else "table rows"
        raise FedrayError(f"model {name} takes {wants} but data {cfg.data.name} holds {data_kind}s: "
                          f"pick a {'table' if data_kind == 'table' else 'image'} model (conf/model/)")
    model = None if family == "tree" else build_training_model(cfg, plan, num_classes=num_classes,
                                                                 num_features=num_features)
    check_train_together(cfg, model)
    if model is None:
        return 0
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def check_federation_fits(cfg: Config, *, model_bytes: int, shards: list[Records]) -> None:
    """Refuse a federation this machine's memory cannot hold, where its processes are this machine's."""
    if cfg.cluster.name not in ("local", "inprocess"):
        return
    import os

    from fedray.federation.memory_plan import check_federation_memory, machine_memory_bytes

    actors = 1 if cfg.cluster.name == "inprocess" else \
        hospital_actor_count(cfg, cluster_cpus=cfg.cluster.num_cpus or os.cpu_count())
    cohort = range(cfg.fl.clients_per_round or cfg.fl.num_hospitals)
    group = len(together_groups(list(cohort), cfg.fl.train_together, actors)[0])  # built at once while it trains
    check_federation_memory(cfg, model_bytes=model_bytes, actors=actors,
                            resident=max(resident_hospitals(cfg, actors), group),
                            shard_bytes=[_payload_bytes(shard) for shard in shards],
                            memory_bytes=machine_memory_bytes())


def _payload_bytes(records: Records) -> int:
    return sum(np.asarray(value).nbytes for value in _as_payload(records).values())


@dataclass
class Prepared:
    """Everything decided before Ray is touched: bad input fails here, in the caller's process."""

    cfg: Config  # resolved for the data (a tree model runs one round)
    dealt: Dealt
    privacy: Mechanism  # the resolved, frozen privacy plan every party receives
    num_classes: int
    num_features: int | None  # a table's column count; None for images
    # One secret per hospital for its one-time releases (Laplace rows, DP trees): a restarted
    # hospital must re-create the same release, never draw a second one. Never given to the driver.
    release_keys: list[int | None]
    # What each hospital trains on: its shard and the records the auditor inserted there.
    training_shards: list[Records]
    # Each hospital's public record slots (its records and the audit's slots, filled or not): the plan's counts.
    slot_counts: tuple[int, ...]
    # What the audit inserts and its secret choices (None: no audit). Never given to the driver whole.
    audit: AuditPlan | None = None


@dataclass
class ExperimentState:
    """An experiment stopped after round ``round``: what a checkpoint stores to continue it.

    The input map, its private-statistics entries and the hospitals' release
    keys are kept rather than recomputed: a second noised release of the same
    records would spend the budget again. The release keys are secrets of the
    hospitals: a checkpoint is as sensitive as the data it was made from. So
    is the audit's plan, kept so that its secret choices are never redrawn.
    """

    round: int
    rounds: list[dict]
    driver: dict
    input_map_state: dict
    preprocessing: list[dict]
    release_keys: list[int | None]
    seconds: float  # wall time spent before the checkpoint
    audit: AuditPlan | None = None


def release_statistics(cfg: Config, dealt, *, num_classes: int, total_slots: int) -> None:
    """The hospitals' releases of frozen-feature statistics, in order: the centre, then the prototypes' class sums
    on the centred map. A resumed run has them already: releasing again would spend the budget again."""
    centre = cfg.train.feature_norm in ("centre", "centre_l2") and feature_centre(dealt.preprocessing) is None
    prototypes = cfg.train.head_init == "prototypes" and released_prototypes(dealt.preprocessing) is None
    if not centre and not prototypes:
        return
    what = f"train.feature_norm={cfg.train.feature_norm}" if centre else "train.head_init=prototypes"
    features = frozen_features(cfg, dealt.train_shards, dealt.input_map, num_classes=num_classes, what=what)
    private, honest = claims_dp(cfg), cfg.fl.num_hospitals - getattr(cfg.privacy, "colluders", 0)
    if centre and cfg.train.feature_norm == "centre_l2":
        dealt.preprocessing.extend(release_centre(cfg, features, private=private, honest=honest))
    elif centre:
        dealt.preprocessing.extend(release_feature_sums(cfg, features, private=private))
    if prototypes:
        z = mechanism_class(cfg.privacy.name).masked_release_noise(cfg, dealt.preprocessing,
                                                                   total_slots=total_slots) if private else None
        labels = [np.asarray(shard.labels) for shard in dealt.train_shards]
        dealt.preprocessing.extend(release_prototype_sums(cfg, features, labels, dealt.preprocessing,
                                                          num_classes=num_classes, noise_multiplier=z,
                                                          honest=honest))


def prepare_experiment(cfg: Config, *, resume: ExperimentState | None = None) -> Prepared:
    check_mechanism(cfg)
    fitted = None if resume is None else (input_map_from_state(resume.input_map_state), resume.preprocessing)
    # A resumed run reuses its map: refitting would release the noised statistics a second time.
    dealt = deal_data(cfg, fit_input_map=lambda shards: fitted or fit_input_map(
        cfg, shards, extra_slots=inserted_record_slots(cfg.audit)))
    train = dealt.splits.train
    num_classes = len(train.class_names)
    num_features = int(train.inputs.shape[1]) if train.kind == "table" else None
    release_statistics(cfg, dealt, num_classes=num_classes,
                       total_slots=sum(map(len, dealt.train_shards)) + inserted_record_slots(cfg.audit))
    cfg = resolve_for_data(cfg)
    audit = resume.audit if resume is not None else plan_records(cfg, dealt)
    shards, slots = training_shards(dealt, audit), tuple(slot_counts(dealt, audit))
    privacy = plan_privacy(cfg, PlanContext(
        slot_counts=slots, audit_slots=tuple(audit_slot_counts(dealt, audit)), ranges_public=train.ranges_public,
        preprocessing=tuple(dealt.preprocessing), num_features=num_features, num_classes=num_classes,
        sites=dealt.hospital_sites))
    model_bytes = validate_model(cfg, privacy, num_classes=num_classes, num_features=num_features,
                                 data_kind=train.kind)
    check_federation_fits(cfg, model_bytes=model_bytes, shards=shards)
    if resume is None:
        audit = plan_insertions(cfg, privacy, audit, dealt=dealt, num_classes=num_classes,
                                num_features=num_features)
    release_keys = resume.release_keys if resume is not None else \
        [None if cfg.privacy.reproducible_noise else new_release_key() for _ in dealt.train_shards]
    return Prepared(cfg, dealt, privacy, num_classes, num_features, release_keys, shards, slots, audit)


def resolve_for_data(cfg: Config) -> Config:
    """A tree model is fitted once (a second fit would spend the privacy budget again), and a mechanism that trains
    nothing has nothing to repeat: exactly one round."""
    if model_family(cfg.model.name) == "tree" and cfg.fl.rounds != 1:
        log.info("model %s is fitted once: running 1 round instead of fl.rounds=%s", cfg.model.name, cfg.fl.rounds)
        return replace(cfg, **{"fl.rounds": 1})
    if not mechanism_class(cfg.privacy.name).trains and cfg.fl.rounds != 1:
        log.info("privacy=%s trains nothing: running 1 round instead of fl.rounds=%s", cfg.privacy.name,
                 cfg.fl.rounds)
        return replace(cfg, **{"fl.rounds": 1})
    return cfg


def hospital_setups(prep: Prepared, hospital_res: dict, *, store: Callable = lambda payload: payload) -> list[dict]:
    """Each hospital's set-up (:func:`~fedray.federation.residency.hospital_kwargs`): its own shards and secrets,
    and what every hospital shares, stored once (``store``: ``ray.put`` over Ray)."""
    cfg = prep.cfg
    shared = store(dict(cfg=cfg, plan=prep.privacy, input_map_state=prep.dealt.input_map.state_dict(),
                        num_classes=prep.num_classes, num_features=prep.num_features, resources=hospital_res))
    return [
        dict(shared=shared, hospital_id=k, train_shard=store(_as_payload(train)), val_shard=store(_as_payload(val)),
             release_key=prep.release_keys[k], attachments=hospital_attachments(prep.audit, k))
        for k, (train, val) in enumerate(zip(prep.training_shards, prep.dealt.val_shards))
    ]


def driver_kwargs(prep: Prepared, hospitals: HospitalsProxy, driver_res: dict) -> dict:
    return dict(
        cfg=prep.cfg, plan=prep.privacy, hospitals=hospitals,
        val_set=_as_payload(prep.dealt.splits.val), test_set=_as_payload(prep.dealt.splits.test),
        input_map_state=prep.dealt.input_map.state_dict(), num_classes=prep.num_classes,
        num_features=prep.num_features, max_samples=max(len(s) for s in prep.training_shards),
        resources=driver_res, **driver_attachments(prep.audit),
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
    pool: ActorPool | None = None,
    kill_hospital: tuple[int, int] | None = None,
) -> ExperimentResult:
    """Run one experiment on the connected Ray cluster and return its rounds and summary.

    With ``placement_group``, the driver takes bundle ``bundle_offset`` and
    hospital k bundle ``bundle_offset + 1 + k``. ``resume`` continues a
    checkpointed experiment after its last round. With ``on_checkpoint``,
    every ``tune.checkpoint_every``-th round before the last is handed to it
    with the :class:`ExperimentState` to save, instead of to ``on_round``.
    The parties run in ``pool``'s actors (default: this process's pool).
    ``kill_hospital=(k, r)`` is a test hook, out of the config's reach (no CLI
    or sweep sets it): hospital k's actor is killed during round r, once, to
    test Ray's restart and the round's retry.
    """
    clock = Stopwatch(before_resume=resume.seconds if resume else 0.0)
    prep = prepared or prepare_experiment(cfg, resume=resume)
    cfg = prep.cfg
    cluster = ray.cluster_resources()
    gpus_present = cluster.get("GPU", 0) > 0
    driver_res, hospital_res = actor_resources(cfg.resources, gpus_present=gpus_present)
    # A trial's placement group fixed its hospital actors (one bundle each) when the sweep planned it.
    actors = placement_group.bundle_count - bundle_offset - 1 if placement_group is not None else \
        hospital_actor_count(cfg, gpus_present=gpus_present, cluster_cpus=cluster.get("CPU"),
                             cluster_gpus=cluster.get("GPU"))

    pool = pool or process_pool()
    driver_host, hosts = pool.hosts(count=actors, driver_res=driver_res,
                                    hospital_res=hospital_res, max_restarts=cfg.fl.max_restarts,
                                    placement_group=placement_group, bundle_offset=bundle_offset)
    deadline = cfg.cluster.round_timeout_s
    try:
        pool.wait_placed(cfg.cluster.placement_timeout_s)
        hospitals = RayHospitals(hosts, hospital_setups(prep, hospital_res, store=ray.put), plan=prep.privacy,
                                 capacity=resident_hospitals(cfg, len(hosts)),
                                 max_round_retries=cfg.fl.max_round_retries, together=cfg.fl.train_together,
                                 kill_hospital=kill_hospital)
        _hospital_errors_as_one_line(driver_host.start.remote(Driver, driver_kwargs(prep, hospitals, driver_res)),
                                     seconds=deadline, what="building the driver")

        driver = RayDriver(driver_host, seconds=deadline)
        rounds, feature_cache = _run_rounds(prep, driver, clock=clock, resume=resume, on_round=on_round,
                                            on_checkpoint=on_checkpoint)
        placement = {"driver": ray.get(driver_host.where.remote()), "hospitals": driver.hospital_placement()}
        collected = wrap_up.collect(prep, driver)
        pool.release()
        clock.lap("wrap_up")
        # The auditor runs in the driver's actor once the driver is gone: the only process that sees members.
        audit = wrap_up.audit(prep, collected, driver_res, run=lambda task, kwargs: _hospital_errors_as_one_line(
            driver_host.run.remote(task, kwargs), seconds=deadline, what="the privacy audit"))
        clock.lap("audit")
    except BaseException:
        pool.close()  # never hand a half-finished party to the next experiment
        raise
    summary = wrap_up.summarise(prep, rounds, collected, clock, driver_res, hospital_res,
                                audit=audit, feature_cache=feature_cache, placement=placement,
                                resumed_after_round=resume.round if resume else None,
                                device=f"Ray: {cluster_line()}")
    return ExperimentResult(rounds=rounds, summary=summary, final_params=collected.final_params,
                            best_params=collected.best_params, dealt=prep.dealt)


def run_in_process(cfg: Config, *, prepared: Prepared | None = None,
                   on_round: Callable[[dict], None] | None = None, resume: None = None,
                   on_checkpoint: None = None) -> ExperimentResult:
    """Run one experiment with the driver, every hospital and the auditor in this process (no Ray).

    The same round loop, proxy checks, ledger and summary as :func:`run_experiment`, through
    :class:`~fedray.federation.proxy.InProcessHospitals`; the summary says the hospitals shared one process.
    For ``cluster=inprocess``, tests and quick iterations: no restarts, no placement, no checkpoints
    (``resume`` and ``on_checkpoint`` exist for :func:`~fedray.federation.study.run_study`'s call and must be None).
    """
    import torch

    if resume is not None or on_checkpoint is not None:
        raise ValueError("an in-process experiment is neither checkpointed nor resumed")
    clock, threads = Stopwatch(), torch.get_num_threads()  # each party pins torch's threads
    try:
        prep = prepared or prepare_experiment(cfg)
        cfg = prep.cfg
        # The parties take turns in this process, so each may use every thread it has (torch's count: the cores,
        # or what OMP_NUM_THREADS / torch.set_num_threads chose), where a Ray actor gets only its share.
        driver_res, hospital_res = ({**request, "num_cpus": float(threads)}
                                    for request in actor_resources(cfg.resources, gpus_present=False))
        hospitals = InProcessHospitals(hospital_setups(prep, hospital_res), plan=prep.privacy,
                                       capacity=resident_hospitals(cfg, 1), together=cfg.fl.train_together)
        driver = Driver(**driver_kwargs(prep, hospitals, driver_res))  # in process, the driver is its own proxy
        rounds, feature_cache = _run_rounds(prep, driver, clock=clock, on_round=on_round)
        collected = wrap_up.collect(prep, driver)
        clock.lap("wrap_up")
        audit = wrap_up.audit(prep, collected, driver_res, run=lambda task, kwargs: task(**kwargs))
        clock.lap("audit")
    finally:
        torch.set_num_threads(threads)
    device = f"in process: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'}"
    summary = wrap_up.summarise(prep, rounds, collected, clock, driver_res, hospital_res,
                                audit=audit, feature_cache=feature_cache, resumed_after_round=None, device=device,
                                placement={"driver": "in process",
                                           "hospitals": "in process (one process for all hospitals)"})
    return ExperimentResult(rounds=rounds, summary=summary, final_params=collected.final_params,
                            best_params=collected.best_params, dealt=prep.dealt)


def _run_rounds(prep: Prepared, driver: DriverProxy, *, clock: Stopwatch, resume: ExperimentState | None = None,
                on_round: Callable[[dict], None] | None = None,
                on_checkpoint: Callable[[dict, ExperimentState], None] | None = None) -> tuple[list[dict], dict]:
    """The round loop, whatever carries the calls: the evaluation and checkpoint cadence live here alone."""
    cfg = prep.cfg
    rounds = list(resume.rounds) if resume else []
    if resume:
        driver.restore(resume.driver)
    total = cfg.fl.rounds
    feature_cache = driver.feature_cache()
    clock.lap("setup")
    first = len(rounds) + 1
    for r in range(first, total + 1):
        evaluate = r % cfg.fl.eval_every == 0 or r == total
        record = driver.run_round(r, evaluate)
        record["total_rounds"] = total
        if feature_cache and r == first:
            record["feature_cache"] = cache_line(feature_cache)
        rounds.append(record)
        if on_checkpoint is not None and r < total and r % cfg.tune.checkpoint_every == 0:
            on_checkpoint(record, ExperimentState(
                round=r, rounds=list(rounds), driver=driver.snapshot(),
                input_map_state=prep.dealt.input_map.state_dict(), preprocessing=prep.dealt.preprocessing,
                release_keys=prep.release_keys, seconds=time.perf_counter() - clock.started,
                audit=prep.audit))
        elif on_round is not None:
            on_round(record)
    clock.lap("rounds")
    return rounds, feature_cache


def cache_line(feature_cache: dict) -> str:
    """One line for the progress output: what was cached and the wall time it took (the slowest party's)."""
    parties = [feature_cache["driver"], *feature_cache["hospitals"]]
    seconds = max(p["seconds"] for p in parties)
    where = "read from the feature cache" if all(p["from_disk"] for p in parties) else "computed"
    counted = [p["records"] for p in parties if "records" in p]  # under DP a hospital does not send its count
    images = f"{sum(counted)} images" if len(counted) == len(parties) else \
        f"the hospitals' images and {feature_cache['driver']['records']} held-out images"
    return (f"frozen features of {images} ({feature_cache['hospitals'][0]['views']} views at the hospitals) "
            f"{where} in {seconds:.1f} s")


def _hospital_errors_as_one_line(ref, *, seconds: float, what: str):
    """A user-fixable error inside the driver or a hospital (each names the hospital) as one FedrayError;
    ``what`` the refs do, named when they overrun ``seconds``."""
    return get_in_one_line(ref, causes=(FedrayError, HospitalError), seconds=seconds,
                           overdue=lambda: overdue_line(what, seconds))
