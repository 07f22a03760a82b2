"""One object per privacy mechanism, in one registry (as Opacus' ``accountants/registry.py`` keeps accountants).

A :class:`Mechanism` knows, for ``privacy=<name>``:

- ``families``: the model families it can train (a pair that does not exist is refused);
- :meth:`~Mechanism.refuse`: the other combinations that could not give its guarantee;
- :meth:`~Mechanism.plan`: the resolved per-hospital plan every process reads (a plain dict);
- ``released``: what a hospital may send the driver under it (:func:`released_metrics`);
- :meth:`~Mechanism.ledger`: its entry in the run's privacy ledger;
- ``unit`` and ``trust``: what one ε protects, and who must be trusted.

The mechanisms:

- ``dpsgd``, record-level DP-SGD. Hospital k with n_k records trains with
  Poisson sampling rate q_k = B / n_k (B = ``train.batch_size``) for
  T_k = rounds × local_epochs × round(1/q_k) steps; its noise multiplier σ_k is
  calibrated once so that the accountant's ε(σ_k, q_k, T_k, δ) ≤ the target
  minus what preprocessing statistics spent. Each patient is in exactly one
  hospital: the run reports the maximum ε over hospitals.
- ``dpfedavg``, client-level DP at the driver (:mod:`fedray.privacy.client_level`).
- ``laplace_input``, ε-local-DP per record: Laplace features and
  randomised-response labels (:mod:`fedray.privacy.laplace`).
- ``dp_tree``, diffprivlib's ε-DP trees, fitted once (the ε spent is read from
  diffprivlib's own accountant).
- ``none``.

ε = ∞ is each mechanism's non-private baseline: no clipping, no noise, and the
ledger says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedray.config.schema import Config
from fedray.errors import FedrayError
from fedray.models import TORCH_TABLE_MODELS, TREE_MODELS, model_family
from fedray.privacy.accounting import (
    LedgerEntry,
    calibrate_noise_multiplier,
    default_delta,
    epsilon_spent,
    summarise_ledger,
    validate_privacy_params,
)
from fedray.privacy.client_level import calibrate_client_noise, client_level_epsilon
from fedray.privacy.randomness import REPRODUCIBLE_DESCRIPTION, SECRET_DESCRIPTION

FAMILY_NAMES = {"image": "image backbones", "table": ", ".join(TORCH_TABLE_MODELS), "tree": ", ".join(TREE_MODELS)}
NON_PRIVATE_NOTE = "non-private: no clipping, no noise"
AGGREGATION = {False: "plain: the driver sees each hospital's update",
               True: "secure: the driver sees only masked updates and their sum"}


class Mechanism:
    """The defaults of a mechanism object; each mechanism overrides what differs."""

    name: str = ""
    families: tuple[str, ...] = ()
    unit: str | None = None
    trust: str = ""
    released: frozenset[str] = frozenset()

    def refuse(self, cfg: Config) -> None:
        """Raise FedrayError for a combination under which this mechanism's guarantee would not hold."""

    def plan(self, cfg: Config, *, shard_sizes: list[int], ranges_public: bool, preprocessing: list[dict]) -> dict:
        return {**_common(cfg), "epsilon": cfg.privacy.epsilon}

    def ledger(self, plan: dict, hospital_states: list[dict]) -> dict:
        raise NotImplementedError


class NoMechanism(Mechanism):
    name = "none"
    families = ("image", "table", "tree")
    trust = "everyone: no claim"

    def plan(self, cfg, *, shard_sizes, ranges_public, preprocessing):
        return {**_common(cfg), "epsilon": math.inf}


class DpSgd(Mechanism):
    name = "dpsgd"
    families = ("image", "table")
    unit = "record"
    trust = "nobody for the records' DP: each hospital runs its own DP-SGD"
    released = frozenset({"local_steps", "dp_steps"})

    def plan(self, cfg, *, shard_sizes, ranges_public, preprocessing):
        privacy = cfg.privacy
        epsilon, total = privacy.epsilon, sum(shard_sizes)
        delta = privacy.delta if privacy.delta is not None else default_delta(total)
        delta_note = (f"delta given in config; the hospitals hold N={total} training records in all"
                      if privacy.delta is not None else
                      f"default delta={delta:g} < 1/N={1 / total:.2g} for the N={total} training records of all "
                      "hospitals")
        validate_privacy_params(epsilon=epsilon, delta=delta, max_grad_norm=privacy.max_grad_norm,
                                num_records=total)
        spent_epsilon = max((e["epsilon"] for e in preprocessing), default=0.0)
        spent_delta = max((e["delta"] for e in preprocessing), default=0.0)
        batch = cfg.train.batch_size
        hospitals = []
        for n in shard_sizes:
            if batch >= n:
                raise FedrayError(f"train.batch_size={batch} is not below a hospital's {n} records: "
                                  "DP-SGD needs a sampling rate below 1; lower train.batch_size")
            q = batch / n
            steps = cfg.fl.rounds * cfg.fl.local_epochs * round(1 / q)
            sigma = 0.0 if math.isinf(epsilon) else calibrate_noise_multiplier(
                target_epsilon=epsilon - spent_epsilon, delta=delta - spent_delta, sample_rate=q, steps=steps,
                accountant=privacy.accountant)
            hospitals.append({"num_records": n, "sample_rate": q, "planned_steps": steps, "noise_multiplier": sigma})
        return {**_common(cfg), "epsilon": epsilon, "delta": delta, "delta_note": delta_note,
                "accountant": privacy.accountant, "max_grad_norm": privacy.max_grad_norm,
                "grad_sample_mode": privacy.grad_sample_mode, "hospitals": hospitals,
                "preprocessing": list(preprocessing), "training_delta": delta - spent_delta}

    def ledger(self, plan, hospital_states):
        entries = []
        for k, (hospital, state) in enumerate(zip(plan["hospitals"], hospital_states)):
            steps = int(state.get("dp_steps", 0))
            entries.append(LedgerEntry(
                hospital=k, noise_multiplier=hospital["noise_multiplier"], sample_rate=hospital["sample_rate"],
                steps=steps, delta=plan["training_delta"], accountant=plan["accountant"],
                max_grad_norm=plan["max_grad_norm"],
                epsilon=epsilon_spent(noise_multiplier=hospital["noise_multiplier"],
                                      sample_rate=hospital["sample_rate"], steps=steps, delta=plan["training_delta"],
                                      accountant=plan["accountant"]),
            ))
        ledger = summarise_ledger(entries)
        before = max((e["epsilon"] for e in plan["preprocessing"]), default=0.0)
        return {"epsilon": ledger["epsilon"] + before, "training_epsilon": ledger["epsilon"],
                "preprocessing": plan["preprocessing"], "delta": plan["delta"], "delta_note": plan["delta_note"],
                "accountant": plan["accountant"], "max_noise_multiplier": max(e.noise_multiplier for e in entries),
                "hospitals": ledger["entries"]}


class DpFedAvg(Mechanism):
    name = "dpfedavg"
    families = ("image", "table")
    unit = "hospital"
    trust = "the driver: it sees each hospital's un-noised update and adds the noise (central DP)"
    released = frozenset({"local_steps"})
    note = ("client-level DP: protects whether a whole hospital took part, not individual patients; "
            "with {k} hospitals each taking part with probability q = {q:.3g} every round, epsilon={eps:.3g} at "
            "delta={delta:g}")

    def refuse(self, cfg):
        if math.isinf(cfg.privacy.epsilon):
            return
        if cfg.mode != "federated":
            raise FedrayError(f"privacy=dpfedavg with mode={cfg.mode}: client-level DP is applied by the driver's "
                              "aggregation, which this mode never runs, so no guarantee would hold; use "
                              "mode=federated, or privacy=dpsgd for record-level DP in every mode")
        if cfg.fl.num_hospitals < 2:
            raise FedrayError("privacy=dpfedavg needs fl.num_hospitals >= 2: it hides whether one hospital took part")

    def plan(self, cfg, *, shard_sizes, ranges_public, preprocessing):
        privacy, hospitals = cfg.privacy, len(shard_sizes)
        per_round = cfg.fl.clients_per_round or hospitals
        validate_privacy_params(epsilon=privacy.epsilon, delta=privacy.delta, max_grad_norm=privacy.clip_norm,
                                num_records=hospitals)
        z = 0.0 if math.isinf(privacy.epsilon) else calibrate_client_noise(
            target_epsilon=privacy.epsilon, delta=privacy.delta, rounds=cfg.fl.rounds,
            sample_rate=per_round / hospitals)
        return {**_common(cfg), "epsilon": privacy.epsilon, "delta": privacy.delta, "clip_norm": privacy.clip_norm,
                "noise_multiplier": z, "rounds": cfg.fl.rounds, "num_hospitals": hospitals,
                "clients_per_round": per_round, "preprocessing": list(preprocessing)}

    def ledger(self, plan, hospital_states):
        spent = client_level_epsilon(noise_multiplier=plan["noise_multiplier"], rounds=plan["rounds"],
                                     num_clients_per_round=plan["clients_per_round"],
                                     total_clients=plan["num_hospitals"], delta=plan["delta"])
        return {"epsilon": spent, "delta": plan["delta"], "accountant": "rdp", "clip_norm": plan["clip_norm"],
                "max_noise_multiplier": plan["noise_multiplier"], "rounds": plan["rounds"],
                "preprocessing": plan["preprocessing"],
                "clients_per_round": plan["clients_per_round"],
                "note": self.note.format(k=plan["num_hospitals"], q=plan["clients_per_round"] / plan["num_hospitals"],
                                         eps=spent, delta=plan["delta"])}


class PureLocal(Mechanism):
    """The pure ε-DP (δ = 0) mechanisms of the tabular track, released once per hospital."""

    unit = "record"
    description = ""

    def plan(self, cfg, *, shard_sizes, ranges_public, preprocessing):
        return {**_common(cfg), "epsilon": cfg.privacy.epsilon, "delta": 0.0, "ranges_public": ranges_public}

    def ledger(self, plan, hospital_states):
        spent = [float(s.get("dp_epsilon_spent", plan["epsilon"])) for s in hospital_states] or [plan["epsilon"]]
        note = self.description
        if plan.get("ranges_public") is False:
            note += ("; the feature ranges were read from the data, not fixed a priori, so the guarantee "
                     "holds only if those ranges are treated as public")
        return {"epsilon": max(spent), "delta": 0.0, "accountant": "pure",
                "hospitals": [{"hospital": k, "epsilon": e} for k, e in enumerate(spent)], "note": note}


class LaplaceInput(PureLocal):
    name = "laplace_input"
    families = ("table", "tree")
    unit = "record (local DP)"
    trust = "nobody: rows and labels are privatised at the hospital before training"
    released = frozenset({"local_steps"})
    description = ("epsilon-local-DP per training record, label included: Laplace input perturbation of the "
                   "features and randomised response of the label at its hospital (delta = 0)")

    def plan(self, cfg, *, shard_sizes, ranges_public, preprocessing):
        return {**super().plan(cfg, shard_sizes=shard_sizes, ranges_public=ranges_public,
                               preprocessing=preprocessing), "label_share": cfg.privacy.label_share}


class DpTree(PureLocal):
    name = "dp_tree"
    families = ("tree",)
    trust = "nobody: each hospital releases epsilon-DP trees"
    released = frozenset({"dp_epsilon_spent"})
    description = ("epsilon-DP per training record in each hospital's release: diffprivlib's DP trees, fitted "
                   "once (delta = 0)")


REGISTRY: dict[str, Mechanism] = {m.name: m for m in (NoMechanism(), DpSgd(), DpFedAvg(), LaplaceInput(), DpTree())}


def mechanism(name: str) -> Mechanism:
    if name not in REGISTRY:
        raise FedrayError(f"unknown privacy mechanism {name!r}: set privacy to one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


@dataclass(frozen=True)
class PrivacyPlan:
    """The resolved privacy settings every hospital reads (``resolved_cfg``) and the run's ledger."""

    resolved_cfg: dict

    @property
    def mechanism(self) -> str:
        return self.resolved_cfg["name"]

    def summary(self, hospital_states: list[dict]) -> dict:
        """The privacy ledger of a finished run, from the steps each hospital actually took.

        Every private ledger carries one ``noise`` line: secret noise, or noise
        reproducible from the config (a simulation, no guarantee).
        """
        plan = self.resolved_cfg
        if self.mechanism == "none" or math.isinf(plan["epsilon"]):
            return {"mechanism": self.mechanism, "target_epsilon": math.inf, "epsilon": math.inf,
                    "delta": plan.get("delta"), "note": NON_PRIVATE_NOTE,
                    "aggregation": AGGREGATION[bool(plan.get("secure_aggregation"))]}
        owner = mechanism(self.mechanism)
        trust = owner.trust
        if plan.get("secure_aggregation") and self.mechanism == "dpfedavg":
            trust = ("nobody: distributed DP; each hospital adds its share of the noise before secure "
                     "aggregation, so the driver never sees an un-noised update")
        return {"mechanism": self.mechanism, "unit": owner.unit, "target_epsilon": plan["epsilon"],
                **owner.ledger(plan, hospital_states), "trust": trust, "noise": plan["noise"],
                "aggregation": AGGREGATION[bool(plan.get("secure_aggregation"))]}


def check_pair(model_name: str, family: str, name: str) -> None:
    """A model and mechanism pair that does not exist is a one-line error naming the pairs that do."""
    if family not in mechanism(name).families:
        pairs = "; ".join(f"{names} x {'|'.join(m.name for m in REGISTRY.values() if f in m.families)}"
                          for f, names in FAMILY_NAMES.items())
        raise FedrayError(f"model {model_name} cannot be trained with privacy={name}: the pairs that exist "
                          f"are {pairs}")


def check_mechanism(cfg: Config) -> None:
    """Refuse, before Ray starts, every combination that cannot give the guarantee it would report."""
    family = model_family(cfg.model.name)
    check_pair(cfg.model.name, family, cfg.privacy.name)
    mechanism(cfg.privacy.name).refuse(cfg)
    sampled = cfg.fl.clients_per_round is not None and cfg.fl.clients_per_round < cfg.fl.num_hospitals
    if cfg.fl.clients_per_round is not None and cfg.fl.clients_per_round > cfg.fl.num_hospitals:
        raise FedrayError(f"fl.clients_per_round={cfg.fl.clients_per_round} is more than the "
                          f"{cfg.fl.num_hospitals} hospitals: use at most fl.clients_per_round={cfg.fl.num_hospitals}")
    if sampled and (cfg.mode != "federated" or family == "tree"):
        raise FedrayError(f"fl.clients_per_round with mode={cfg.mode} and model={cfg.model.name}: client sampling "
                          "needs mode=federated and a model trained in rounds; set fl.clients_per_round=null")
    if sampled and cfg.fl.secure_aggregation:
        raise FedrayError("fl.clients_per_round with fl.secure_aggregation=true: the masked sum needs every "
                          "hospital of the round fixed before keys are agreed; set fl.clients_per_round=null")
    if cfg.fl.secure_aggregation and (cfg.mode != "federated" or family == "tree" or cfg.fl.num_hospitals < 2):
        raise FedrayError(f"fl.secure_aggregation=true with mode={cfg.mode}, model={cfg.model.name} and "
                          f"{cfg.fl.num_hospitals} hospital(s): masked sums need mode=federated, at least two "
                          "hospitals and a model whose parameters add up (not a tree); set fl.secure_aggregation=false")


def plan_privacy(cfg: Config, *, shard_sizes: list[int], ranges_public: bool = True,
                 preprocessing: list[dict] = ()) -> PrivacyPlan:
    """The per-hospital plan of ``cfg.privacy`` for these shard sizes; every bad parameter fails here.

    ``preprocessing`` are the ledger entries of private statistics released
    before training (noised colour statistics): by basic composition their
    largest per-hospital (ε, δ) is taken off the training budget, so the
    ledger's total stays at the target.
    """
    check_mechanism(cfg)
    return PrivacyPlan(mechanism(cfg.privacy.name).plan(cfg, shard_sizes=shard_sizes, ranges_public=ranges_public,
                                                        preprocessing=list(preprocessing)))


def released_metrics(plan: dict) -> frozenset[str] | None:
    """The metric keys a hospital may send the driver under ``plan``; None: everything (no DP claim).

    Under DP-SGD the step count is fixed before the run (round(1/q) steps an
    epoch) and ``dp_steps`` feeds the ledger, so neither depends on a record.
    Loss and accuracy on private batches, fit times and metrics on a hospital's
    own validation shard all do, and they would leave un-noised.
    """
    if plan.get("secure_aggregation"):  # only masked sums leave a hospital, and record-independent counters
        return frozenset({"local_steps", "dp_steps"})
    if plan["name"] == "none" or math.isinf(float(plan.get("epsilon", math.inf))):
        return None
    return mechanism(plan["name"]).released


def _common(cfg: Config) -> dict:
    privacy = cfg.privacy
    return {"name": privacy.name, "reproducible_noise": privacy.reproducible_noise,
            "noise": REPRODUCIBLE_DESCRIPTION if privacy.reproducible_noise else SECRET_DESCRIPTION,
            "secure_aggregation": cfg.fl.secure_aggregation}
