"""The driver: the party that owns the global model and runs the federated rounds.

Each round the driver

1. sends the current global parameters to the round's hospitals,
2. collects each hospital's :class:`~fedray.strategies.ClientResult`,
3. aggregates them with the strategy (FedAvg),
4. every ``fl.eval_every`` rounds and on the last, evaluates the new global
   model on the held-out validation and test sets, and asks each hospital of
   the round for metrics on its own validation shard (Flower's evaluation
   round: with client sampling, the round's participants).

It receives only what each hospital's privacy plan releases (parameters,
sample counts and, without DP, metrics: ``plan.hospital_releases``, checked
by the proxy), and its round records carry only what the plan's output
releases cover (under DP-FedAvg with client sampling, not who took part).
The validation and test records it evaluates on are the consortium's held-out evaluation sets, handed
to it at construction; no hospital training record ever reaches it.

Its ``observers`` (:mod:`fedray.federation.observers`) see each round what
it received: every hospital's update, or under secure aggregation only the
sum; their reports come back through :meth:`Driver.observer_reports`. Its
``insertions`` (:class:`~fedray.strategies.base.ClientInsertion`) join a
client-level mechanism's clipped sum (``plan.wrap_strategy``). An audit uses
both; the driver knows neither's purpose.

It keeps the global model of the best-validation round beside the last one,
so a run can export both. A hospital's own error (a bad learning rate, a
diverged loss) arrives here as a ``HospitalError`` and leaves as one
:class:`~fedray.errors.FedrayError` line naming the hospital.

It reaches the hospitals only through a
:class:`~fedray.federation.proxy.HospitalsProxy`: in process, or over Ray,
where the proxy owns transport, restarts, retries and fault injection. The
driver itself runs in a pooled Ray actor (:mod:`fedray.federation.pool`) or,
in tests, in the caller's process.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from fedray.config import Config
from fedray.data.input_map import input_map_from_state
from fedray.federation.observers import RoundObserver
from fedray.federation.proxy import HospitalsProxy
from fedray.privacy.bias_calibration import calibrated_bias
from fedray.privacy.secure_round import SecureRound
from fedray.metrics import classification_metrics
from fedray.privacy.randomness import DRIVER, NoiseSource, Purpose
from fedray.privacy.secure_aggregation import SecureAggregationSession
from fedray.privacy.mechanisms import Mechanism
from fedray.models import frozen_state_names, last_layer_bias, model_family
from fedray.strategies import ClientInsertion, build_strategy
from fedray.strategies.sampling import sample_clients
from fedray.training import build_evaluator
from fedray.training.feature_norm import trained_layer
from fedray.training.prototype_head import choose_shrinkage, shrinkage_choices
from fedray.training.device import configure_process

Params = dict[str, np.ndarray]

log = logging.getLogger(__name__)


class Driver:
    """Owns the global model, the strategy and the hospitals of one experiment."""

    def __init__(
        self,
        *,
        cfg: Config,
        plan: Mechanism,
        hospitals: HospitalsProxy,
        val_set: dict,
        test_set: dict,
        input_map_state: dict,
        num_classes: int,
        num_features: int | None,
        max_samples: int,
        resources: dict,
        observers: tuple[RoundObserver, ...] = (),
        insertions: tuple[ClientInsertion, ...] = (),
    ):
        self.cfg = cfg
        self.mode = cfg.mode
        self.hospitals = hospitals
        self.device = configure_process(num_cpus=resources["num_cpus"], num_gpus=resources["num_gpus"], seed=cfg.seed)
        self.evaluator = build_evaluator(cfg, plan, num_classes=num_classes, num_features=num_features,
                                         device=self.device, input_map=input_map_from_state(input_map_state))
        noise = NoiseSource.reproducible(cfg.seed, DRIVER) if cfg.privacy.reproducible_noise \
            else NoiseSource.secret(DRIVER)
        self.noise = noise
        self.strategy = plan.wrap_strategy(build_strategy(cfg.strategy, trees=model_family(cfg.model.name) == "tree"),
                                           noise=noise, insertions=insertions)
        self.observers = tuple(observers)
        self.clients_per_round = cfg.fl.clients_per_round
        self.hospitals_release_metrics = not plan.hospital_releases(0).claim
        self.outputs = plan.output_releases()
        self.calibration_noise = plan.calibration_noise  # each hospital's, in its summed predictions (None: exact)
        self.val_set, self.test_set = (
            {"inputs": self.evaluator.encode(d["inputs"]), "labels": d["labels"]} for d in (val_set, test_set)
        )
        self.choices: dict = {}  # config values settled on validation before the first round, as overrides
        if cfg.train.head_init == "prototypes" and len(shrinkage_choices(cfg)) > 1:  # the head the run starts from
            shrinkage = choose_shrinkage(
                trained_layer(self.evaluator.model, cfg, family="image"), cfg, plan.preprocessing,
                lambda: self._metrics(self.evaluator.export(), self.val_set)["balanced_accuracy"])
            self.choices["train.prototype_shrinkage"] = [shrinkage]
            log.info("prototype head: shrinkage %g chosen on validation", shrinkage)
        self.global_params: Params = self.evaluator.export()
        self.initial_params = self.global_params  # the seeded initial model: observers may report the run's delta
        # (validation balanced accuracy, model(s), round): the one place the best round is chosen.
        self.best_val: tuple[float, list[Params], int | None] = (-np.inf, [self.global_params], None)
        # frozen tensors are the same at every hospital and never change: only what training changes is masked
        frozen = frozen_state_names(self.evaluator.full_model) if cfg.fl.secure_aggregation else set()
        self.secure = _secure_round(cfg, plan, {name: value for name, value in self.global_params.items()
                                                if name not in frozen}, max_samples=max_samples)
        # Under mode=local every hospital keeps its own model; the driver only evaluates them.
        self.local_params: list[Params] = [self.global_params] * len(hospitals)
        self.participants: list[int] = list(range(len(hospitals)))  # the last round's hospitals

    # -- one round ----------------------------------------------------------------
    def run_round(self, round_idx: int, evaluate: bool = True) -> dict:
        start = time.perf_counter()
        if self.secure is not None:
            return self._finish_round(round_idx, start, self._secure_round(round_idx), [], evaluate)
        starts = self.local_params if self.mode == "local" else [self.global_params] * len(self.hospitals)
        self.participants = self.sample_participants(round_idx)
        results = self.hospitals.fit(starts, round_idx, self.participants)
        for observer in self.observers:  # every hospital's update and what its attachments reported, as received
            observer.observe_updates({r.hospital: starts[r.hospital] for r in results},
                                     {r.hospital: r.params for r in results})
            observer.observe_reports({r.hospital: r.observations for r in results if r.observations})
        if self.mode == "local":
            self.local_params = [r.params for r in results]
        elif results or self.strategy.aggregates_empty_rounds:
            self.global_params = self.strategy.aggregate(round_idx, self.global_params, results)
        clients = [{key: value for key, value in {"hospital": r.hospital, "num_samples": r.num_samples,
                                                  **r.metrics}.items()
                    if value is not None and self.outputs.covers(f"rounds.clients.{key}")} for r in results]
        clients = [c for c in clients if c]
        return self._finish_round(round_idx, start, self.global_params, clients, evaluate)

    def _finish_round(self, round_idx: int, start: float, global_params: Params, clients: list[dict],
                      evaluate: bool) -> dict:
        self.global_params = global_params
        if round_idx == self.cfg.fl.rounds and self.cfg.train.bias_calibration_rounds:
            self.global_params = self._calibrate_bias(self.global_params)
        record = {"round": round_idx, "fit_seconds": time.perf_counter() - start, "clients": clients}
        if evaluate:  # fl.eval_every: best-validation selection sees only evaluated rounds
            record.update(self._evaluate())
            if record["val"]["balanced_accuracy"] > self.best_val[0]:  # chosen on validation, never on test
                self.best_val = (record["val"]["balanced_accuracy"], self.final_params(), round_idx)
        record["round_seconds"] = time.perf_counter() - start
        record["restarts"] = self.hospitals.restarts
        return record

    def sample_participants(self, round_idx: int) -> list[int]:
        """The hospitals of this round: all, or each independently with probability q = m/K (Poisson sampling).

        The draw is the driver's DP randomness (amplification by sampling holds
        only if nobody can predict it): secret unless ``reproducible_noise``.
        """
        return sample_clients(len(self.hospitals), self.clients_per_round,
                              self.noise.numpy_generator(round_idx, Purpose.CLIENT_SAMPLING))

    def _secure_round(self, round_idx: int) -> Params:
        """One masked round over the round's cohort (every hospital, or the sampled ones): their masked payloads,
        the unmasked sum, the next global model (:mod:`fedray.privacy.secure_round`)."""
        self.participants = cohort = self.sample_participants(round_idx)
        secure = self.secure.for_cohort(len(cohort))
        if len(cohort) < secure.min_cohort:  # nobody, or a lone hospital whose 'sum' would be its update
            self.participants = []
            empty = self.strategy.aggregates_empty_rounds  # DP-FedAvg: the noise alone, as in the clear
            return self.strategy.aggregate(round_idx, self.global_params, []) if empty else self.global_params
        session = SecureAggregationSession(participants=tuple(cohort), round_idx=round_idx, attempt=0,
                                           vector_length=secure.vector_length, value_bound=secure.value_bound,
                                           sum_of_one=secure.min_cohort == 1)
        session, masked = self.hospitals.masked_payloads(self.global_params, round_idx, session, secure)
        # sampled cohorts: the driver's top-up makes the sum carry the same noise whoever was drawn (secure_round)
        total = secure.top_up(session.unmask_sum(masked), len(cohort),
                              self.noise.numpy_generator(round_idx, Purpose.DPFEDAVG_NOISE))
        mean = secure.apply(self.global_params, total, participants=len(cohort))
        for observer in self.observers:  # under secure aggregation only the sum is seen
            observer.observe_sum(self.global_params, mean)
        delta = {name: mean[name] - value for name, value in self.global_params.items()
                 if np.issubdtype(value.dtype, np.floating)}
        # the strategy aggregates by a mean (fedray.strategies.check_strategy refused any other before Ray started);
        # DP-FedAvg's noise is already in the sum, so it hands the mean update to its server optimizer
        return self.strategy.apply_update(self.global_params, delta)

    def _calibrate_bias(self, params: Params) -> Params:
        """After the last round: the last layer's biases moved, ``train.bias_calibration_rounds`` times, so the
        hospitals' summed predictions give every class the same share (:mod:`fedray.privacy.bias_calibration`)."""
        name = last_layer_bias(self.evaluator.full_model)
        for calibration_round in range(self.cfg.train.bias_calibration_rounds):
            sums = self.hospitals.calibration_sums(params, calibration_round)
            params = {**params, name: calibrated_bias(params[name], sums, noise_multiplier=self.calibration_noise)}
        return params

    # -- evaluation ---------------------------------------------------------------
    def _evaluate(self) -> dict:
        models = self.final_params() if self.mode == "local" else [self.global_params] * len(self.hospitals)
        per_hospital = self.hospitals.start_evaluate({k: models[k] for k in self.participants}) \
            if self.hospitals_release_metrics else list
        if self.mode == "local":
            tests = [self._metrics(p, self.test_set) for p in self.local_params]
            vals = [self._metrics(p, self.val_set) for p in self.local_params]
            return {"val": _mean_metrics(vals), "test": _mean_metrics(tests),
                    "test_per_hospital": tests, "hospital_val": per_hospital()}
        val, test = self._metrics(self.global_params, self.val_set), self._metrics(self.global_params, self.test_set)
        return {"val": val, "test": test, "hospital_val": per_hospital()}

    def _metrics(self, params: Params, data: dict) -> dict:
        self.evaluator.load(params)
        return classification_metrics(data["labels"], self.evaluator.predict_proba(data["inputs"]))

    # -- results ------------------------------------------------------------------
    def final_params(self) -> list[Params]:
        """The global model, or under mode=local each hospital's own model."""
        return self.local_params if self.mode == "local" else [self.global_params]

    def snapshot(self) -> dict:
        """Everything a resumed run needs from the driver after the last round: models, ledger, strategy state."""
        state_dict = getattr(self.strategy, "state_dict", None)  # a server optimizer's moments
        return {"global_params": self.global_params, "local_params": self.local_params, "best_val": self.best_val,
                "privacy_states": self.hospitals.privacy_states(), "restarts": self.hospitals.restarts,
                "strategy": state_dict() if state_dict else None,
                "observers": [observer.state_dict() for observer in self.observers]}

    def restore(self, snapshot: dict) -> None:
        """Continue from :meth:`snapshot`; each hospital's accountant resumes at the steps it had taken."""
        self.global_params, self.local_params = snapshot["global_params"], snapshot["local_params"]
        self.best_val, self.hospitals.restarts = snapshot["best_val"], snapshot["restarts"]
        if snapshot["strategy"] is not None:
            self.strategy.load_state_dict(snapshot["strategy"])
        for observer, state in zip(self.observers, snapshot["observers"], strict=True):
            observer.load_state_dict(state)
        self.hospitals.restore_privacy_states(snapshot["privacy_states"])

    def exported_params(self) -> tuple[list[Params], list[Params]]:
        """(the final model(s), the model(s) after the round with the best validation balanced accuracy)."""
        return self.final_params(), self.best_val[1]

    def best_round(self) -> int | None:
        """The evaluated round with the best validation balanced accuracy (None before any evaluation)."""
        return self.best_val[2]

    def validation_choices(self) -> dict:
        """The config values this driver chose on validation besides the round, as dotted overrides (the
        prototype head's shrinkage); {} when it chose none."""
        return self.choices

    def feature_cache(self) -> dict:
        """What caching frozen features cost the driver (validation and test sets) and each hospital, or {}."""
        report = getattr(getattr(self.evaluator, "encoder", None), "report", None)
        if report is None:
            return {}
        return {"driver": dataclasses.asdict(report),
                "hospitals": self.hospitals.feature_cache()}

    def observer_reports(self) -> dict:
        """Each observer's report on the run so far, under its name (the final global model against the initial)."""
        return {observer.name: observer.report(self.initial_params, self.global_params) for observer in self.observers}

    def hospital_privacy_states(self) -> list[dict]:
        return self.hospitals.privacy_states()

    def hospital_placement(self) -> list[dict]:
        """Where each hospital runs: node and placement group ids."""
        return self.hospitals.placement()


def _mean_metrics(runs: list[dict]) -> dict:
    """Mean of each scalar metric over hospitals' models (mode=local)."""
    keys = [k for k, v in runs[0].items() if isinstance(v, float)]
    return {k: float(np.mean([r[k] for r in runs])) for k in keys}


def _secure_round(cfg: Config, plan: Mechanism, global_params: Params, *, max_samples: int) -> SecureRound | None:
    """The masked aggregation of ``fl.secure_aggregation=true``, as the mechanism shapes it (DP-FedAvg: noised)."""
    if not cfg.fl.secure_aggregation:
        return None
    return plan.secure_round(global_params, weighted=cfg.strategy.weighting == "samples", max_abs=cfg.fl.secure_max_abs,
                             max_samples=max_samples)
