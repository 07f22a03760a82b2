"""Turn ``privacy.*`` config into a per-hospital plan before any actor starts.

Record-level DP-SGD (``privacy=dpsgd``): hospital k with n_k records trains
with Poisson sampling rate q_k = B / n_k (B = ``train.batch_size``, the
expected batch size) for T_k = rounds × local_epochs × round(1/q_k) steps.
Its noise multiplier σ_k is calibrated once, for the whole run, so that the
accountant's ε(σ_k, q_k, T_k, δ) ≤ target ε. The guarantee is per hospital
(each patient is in exactly one hospital); a run reports the maximum ε over
hospitals.

ε = ∞ is the non-private baseline: σ = 0 and the trainer bypasses Opacus
entirely (no clipping, no noise).

Two pure ε-DP mechanisms (δ = 0) serve the tabular track: ``laplace_input``
(every training row is released once through the Laplace mechanism at its
hospital: ε-local-DP, :mod:`fedray.privacy.laplace`) and ``dp_tree``
(diffprivlib's ε-DP trees, fitted once; the ε spent is read from
diffprivlib's own accountant). Not every model takes every mechanism:
:data:`PAIRS` lists the pairs that exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedray.config.schema import Config
from fedray.errors import FedrayError
from fedray.models import model_family
from fedray.privacy.randomness import REPRODUCIBLE_DESCRIPTION, SECRET_DESCRIPTION
from fedray.privacy.client_level import calibrate_client_noise, client_level_epsilon
from fedray.privacy.accounting import (
    LedgerEntry,
    calibrate_noise_multiplier,
    default_delta,
    epsilon_spent,
    summarise_ledger,
    validate_privacy_params,
)

MECHANISMS = ("none", "dpsgd", "dpfedavg", "laplace_input", "dp_tree")
# model family -> the privacy mechanisms it can be trained under
PAIRS = {
    "image": ("none", "dpsgd", "dpfedavg"),
    "table": ("none", "dpsgd", "dpfedavg", "laplace_input"),
    "tree": ("none", "dp_tree", "laplace_input"),
}
PAIR_NAMES = {"image": "image backbones", "table": "mlp, logreg", "tree": "decision_tree, random_forest"}
PURE_NOTES = {
    "laplace_input": "epsilon-local-DP per training record, label included: Laplace input perturbation of the "
                     "features and randomised response of the label at its hospital (delta = 0)",
    "dp_tree": "epsilon-DP per training record in each hospital's release: diffprivlib's DP trees, fitted once "
               "(delta = 0)",
}
CLIENT_LEVEL_NOTE = ("client-level DP: protects whether a whole hospital took part, not individual patients; "
                     "with {k} hospitals all taking part every round (q = 1), epsilon={eps:.3g} at delta={delta:g}")


@dataclass(frozen=True)
class PrivacyPlan:
    """The resolved privacy settings every hospital reads (``resolved_cfg``)."""

    resolved_cfg: dict

    @property
    def mechanism(self) -> str:
        return self.resolved_cfg["name"]

    def summary(self, hospital_states: list[dict]) -> dict:
        """The privacy ledger of a finished run, from the steps each hospital actually took.

        Every private ledger carries one ``noise`` line: secret noise, or noise
        reproducible from the config (a simulation, no guarantee).
        """
        cfg = self.resolved_cfg
        if self.mechanism == "none" or math.isinf(cfg["epsilon"]):
            return {"mechanism": self.mechanism, "target_epsilon": float("inf"), "epsilon": float("inf"),
                    "delta": cfg.get("delta"), "note": "non-private: no clipping, no noise"}
        if self.mechanism == "dpfedavg":
            return {**self._client_level_summary(), "noise": cfg["noise"]}
        if self.mechanism in PURE_NOTES:
            return {**self._pure_summary(hospital_states), "noise": cfg["noise"]}
        entries = []
        for k, (plan, state) in enumerate(zip(cfg["hospitals"], hospital_states)):
            steps = int(state.get("dp_steps", 0))
            training_delta = cfg["training_delta"]
            entries.append(LedgerEntry(
                hospital=k, noise_multiplier=plan["noise_multiplier"], sample_rate=plan["sample_rate"],
                steps=steps, delta=training_delta, accountant=cfg["accountant"], max_grad_norm=cfg["max_grad_norm"],
                epsilon=epsilon_spent(noise_multiplier=plan["noise_multiplier"], sample_rate=plan["sample_rate"],
                                      steps=steps, delta=training_delta, accountant=cfg["accountant"]),
            ))
        ledger = summarise_ledger(entries)
        preprocessing = cfg.get("preprocessing") or []
        before = max((e["epsilon"] for e in preprocessing), default=0.0)
        return {"mechanism": self.mechanism, "unit": "record", "target_epsilon": cfg["epsilon"],
                "epsilon": ledger["epsilon"] + before, "training_epsilon": ledger["epsilon"],
                "preprocessing": preprocessing, "noise": cfg["noise"],
                "delta": cfg["delta"], "delta_note": cfg["delta_note"], "accountant": cfg["accountant"],
                "max_noise_multiplier": max(e.noise_multiplier for e in entries), "hospitals": ledger["entries"]}


    def _pure_summary(self, hospital_states: list[dict]) -> dict:
        """Pure ε-DP: the ε each hospital spent (diffprivlib's accountant for trees; by construction for Laplace)."""
        cfg = self.resolved_cfg
        spent = [float(s.get("dp_epsilon_spent", cfg["epsilon"])) for s in hospital_states] or [cfg["epsilon"]]
        note = PURE_NOTES[self.mechanism]
        if cfg.get("ranges_public") is False:
            note += ("; the feature ranges were read from the data, not fixed a priori, so the guarantee "
                     "holds only if those ranges are treated as public")
        return {"mechanism": self.mechanism, "unit": "record", "target_epsilon": cfg["epsilon"],
                "epsilon": max(spent), "delta": 0.0, "accountant": "pure",
                "hospitals": [{"hospital": k, "epsilon": e} for k, e in enumerate(spent)], "note": note}

    def _client_level_summary(self) -> dict:
        cfg = self.resolved_cfg
        spent = client_level_epsilon(noise_multiplier=cfg["noise_multiplier"], rounds=cfg["rounds"],
                                     num_clients_per_round=cfg["hospitals"], total_clients=cfg["hospitals"],
                                     delta=cfg["delta"])
        return {"mechanism": "dpfedavg", "unit": "hospital", "target_epsilon": cfg["epsilon"], "epsilon": spent,
                "delta": cfg["delta"], "accountant": "rdp", "clip_norm": cfg["clip_norm"],
                "max_noise_multiplier": cfg["noise_multiplier"], "rounds": cfg["rounds"],
                "note": CLIENT_LEVEL_NOTE.format(k=cfg["hospitals"], eps=spent, delta=cfg["delta"])}


def check_mechanism(cfg: Config) -> None:
    """Refuse, before Ray starts, every combination that cannot give the guarantee it would report."""
    name = cfg.privacy.name
    check_pair(cfg.model.name, model_family(cfg.model.name), name)
    private = not math.isinf(float(getattr(cfg.privacy, "epsilon", math.inf)))
    if name == "dpfedavg" and private and cfg.mode != "federated":
        raise FedrayError(f"privacy=dpfedavg with mode={cfg.mode}: client-level DP is applied by the driver's "
                          "aggregation, which this mode never runs, so no guarantee would hold; use mode=federated, "
                          "or privacy=dpsgd for record-level DP in every mode")
    if name == "dpfedavg" and private and cfg.fl.num_hospitals < 2:
        raise FedrayError("privacy=dpfedavg needs fl.num_hospitals >= 2: it hides whether one hospital took part")


def released_metrics(plan: dict) -> frozenset[str] | None:
    """The metric keys a hospital may send the driver under ``plan``; None: everything (no DP claim).

    Under DP-SGD the step count is fixed before the run (round(1/q) steps an
    epoch) and ``dp_steps`` feeds the ledger, so neither depends on a record.
    Loss and accuracy on private batches, fit times and metrics on a hospital's
    own validation shard all do, and they would leave un-noised.
    """
    if plan["name"] == "none" or math.isinf(float(plan.get("epsilon", math.inf))):
        return None
    return RELEASED_UNDER_DP[plan["name"]]


RELEASED_UNDER_DP = {
    "dpsgd": frozenset({"local_steps", "dp_steps"}),
    "dpfedavg": frozenset({"local_steps"}),
    "laplace_input": frozenset({"local_steps"}),
    "dp_tree": frozenset({"dp_epsilon_spent"}),
}


def plan_client_level(cfg: dict, privacy: dict, num_hospitals: int) -> PrivacyPlan:
    """DP-FedAvg: noise z for the target ε over the rounds, every hospital taking part every round."""
    epsilon, delta, clip = float(privacy["epsilon"]), float(privacy["delta"]), float(privacy["clip_norm"])
    validate_privacy_params(epsilon=epsilon, delta=delta, max_grad_norm=clip, num_records=num_hospitals)
    rounds = int(cfg["fl"]["rounds"])
    z = calibrate_client_noise(target_epsilon=epsilon, delta=delta, rounds=rounds, sample_rate=1.0)
    return PrivacyPlan({**privacy, "epsilon": epsilon, "delta": delta, "clip_norm": clip, "noise_multiplier": z,
                        "rounds": rounds, "hospitals": num_hospitals, "accountant": privacy.get("accountant", "rdp")})


def check_pair(model_name: str, family: str, mechanism: str) -> None:
    """A model and mechanism pair that does not exist is a one-line error naming the pairs that do."""
    if mechanism not in MECHANISMS:
        raise FedrayError(f"unknown privacy mechanism {mechanism!r}: set privacy to one of {', '.join(MECHANISMS)}")
    if mechanism not in PAIRS[family]:
        pairs = "; ".join(f"{PAIR_NAMES[f]} x {'|'.join(m)}" for f, m in PAIRS.items())
        raise FedrayError(f"model {model_name} cannot be trained with privacy={mechanism}: the pairs that exist "
                          f"are {pairs}")


def _common(privacy) -> dict:
    return {"name": privacy.name, "reproducible_noise": privacy.reproducible_noise,
            "noise": REPRODUCIBLE_DESCRIPTION if privacy.reproducible_noise else SECRET_DESCRIPTION}


def plan_privacy(cfg: Config, *, shard_sizes: list[int], ranges_public: bool = True,
                 preprocessing: list[dict] = ()) -> PrivacyPlan:
    """The per-hospital plan of ``cfg.privacy`` for these shard sizes; every bad parameter fails here.

    ``preprocessing`` are the ledger entries of private statistics released
    before training (noised colour statistics): by basic composition their
    largest per-hospital (ε, δ) is taken off the training budget, so the
    ledger's total stays at the target.
    """
    check_mechanism(cfg)
    privacy = cfg.privacy
    name = privacy.name
    if name == "none":
        return PrivacyPlan({**_common(privacy), "epsilon": float("inf")})
    if name in PURE_NOTES:
        plan = {**_common(privacy), "epsilon": privacy.epsilon, "delta": 0.0, "ranges_public": ranges_public}
        if name == "laplace_input":
            plan["label_share"] = privacy.label_share
        return PrivacyPlan(plan)
    if name == "dpfedavg":
        return plan_client_level(cfg, len(shard_sizes))
    epsilon = privacy.epsilon
    total = sum(shard_sizes)
    delta = privacy.delta if privacy.delta is not None else default_delta(total)
    spent_before = (max((e["epsilon"] for e in preprocessing), default=0.0),
                    max((e["delta"] for e in preprocessing), default=0.0))
    delta_note = f"delta given in config; the hospitals hold N={total} training records in all"
    if privacy.delta is None:
        delta_note = f"default delta={delta:g} < 1/N={1 / total:.2g} for the N={total} training records of all hospitals"
    validate_privacy_params(epsilon=epsilon, delta=delta, max_grad_norm=privacy.max_grad_norm,
                            num_records=total)
    batch = cfg.train.batch_size
    hospitals = []
    for n in shard_sizes:
        if batch >= n:
            raise FedrayError(f"train.batch_size={batch} is not below a hospital's {n} records: "
                              "DP-SGD needs a sampling rate below 1; lower train.batch_size")
        q = batch / n
        steps = cfg.fl.rounds * cfg.fl.local_epochs * round(1 / q)
        sigma = 0.0 if math.isinf(epsilon) else calibrate_noise_multiplier(
            target_epsilon=epsilon - spent_before[0], delta=delta - spent_before[1], sample_rate=q, steps=steps,
            accountant=privacy.accountant)
        hospitals.append({"num_records": n, "sample_rate": q, "planned_steps": steps, "noise_multiplier": sigma})
    return PrivacyPlan({**_common(privacy), "epsilon": epsilon, "delta": delta, "delta_note": delta_note,
                        "accountant": privacy.accountant, "max_grad_norm": privacy.max_grad_norm,
                        "grad_sample_mode": privacy.grad_sample_mode, "hospitals": hospitals,
                        "preprocessing": list(preprocessing), "training_delta": delta - spent_before[1]})
