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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedray.errors import FedrayError
from fedray.privacy.client_level import calibrate_client_noise, client_level_epsilon
from fedray.privacy.accounting import (
    LedgerEntry,
    calibrate_noise_multiplier,
    default_delta,
    epsilon_spent,
    summarise_ledger,
    validate_privacy_params,
)

MECHANISMS = ("none", "dpsgd", "dpfedavg")
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
        """The privacy ledger of a finished run, from the steps each hospital actually took."""
        cfg = self.resolved_cfg
        if self.mechanism == "dpfedavg" and not math.isinf(cfg["epsilon"]):
            return self._client_level_summary()
        if self.mechanism == "none" or math.isinf(cfg["epsilon"]):
            return {"mechanism": self.mechanism, "target_epsilon": float("inf"), "epsilon": float("inf"),
                    "delta": cfg.get("delta"), "note": "non-private: no clipping, no noise"}
        entries = []
        for k, (plan, state) in enumerate(zip(cfg["hospitals"], hospital_states)):
            steps = int(state.get("dp_steps", 0))
            entries.append(LedgerEntry(
                hospital=k, noise_multiplier=plan["noise_multiplier"], sample_rate=plan["sample_rate"],
                steps=steps, delta=cfg["delta"], accountant=cfg["accountant"], max_grad_norm=cfg["max_grad_norm"],
                epsilon=epsilon_spent(noise_multiplier=plan["noise_multiplier"], sample_rate=plan["sample_rate"],
                                      steps=steps, delta=cfg["delta"], accountant=cfg["accountant"]),
            ))
        ledger = summarise_ledger(entries)
        return {"mechanism": self.mechanism, "target_epsilon": cfg["epsilon"], "epsilon": ledger["epsilon"],
                "delta": cfg["delta"], "delta_note": cfg["delta_note"], "accountant": cfg["accountant"],
                "max_noise_multiplier": max(e.noise_multiplier for e in entries), "hospitals": ledger["entries"]}


    def _client_level_summary(self) -> dict:
        cfg = self.resolved_cfg
        spent = client_level_epsilon(noise_multiplier=cfg["noise_multiplier"], rounds=cfg["rounds"],
                                     num_clients_per_round=cfg["hospitals"], total_clients=cfg["hospitals"],
                                     delta=cfg["delta"])
        return {"mechanism": "dpfedavg", "unit": "hospital", "target_epsilon": cfg["epsilon"], "epsilon": spent,
                "delta": cfg["delta"], "accountant": cfg["accountant"], "clip_norm": cfg["clip_norm"],
                "max_noise_multiplier": cfg["noise_multiplier"], "rounds": cfg["rounds"],
                "note": CLIENT_LEVEL_NOTE.format(k=cfg["hospitals"], eps=spent, delta=cfg["delta"])}


def plan_client_level(cfg: dict, privacy: dict, num_hospitals: int) -> PrivacyPlan:
    """DP-FedAvg: noise z for the target ε over the rounds, every hospital taking part every round."""
    epsilon, delta, clip = float(privacy["epsilon"]), float(privacy["delta"]), float(privacy["clip_norm"])
    validate_privacy_params(epsilon=epsilon, delta=delta, max_grad_norm=clip, min_hospital_size=num_hospitals)
    rounds = int(cfg["fl"]["rounds"])
    z = calibrate_client_noise(target_epsilon=epsilon, delta=delta, rounds=rounds, sample_rate=1.0)
    return PrivacyPlan({**privacy, "epsilon": epsilon, "delta": delta, "clip_norm": clip, "noise_multiplier": z,
                        "rounds": rounds, "hospitals": num_hospitals, "accountant": privacy.get("accountant", "rdp")})


def plan_privacy(cfg: dict, *, shard_sizes: list[int]) -> PrivacyPlan:
    privacy = dict(cfg.get("privacy") or {"name": "none"})
    name = privacy.get("name", "none")
    if name not in MECHANISMS:
        raise FedrayError(f"unknown privacy mechanism {name!r}: set privacy to one of {', '.join(MECHANISMS)}")
    if name == "none":
        return PrivacyPlan({"name": "none", "epsilon": float("inf")})
    if name == "dpfedavg":
        return plan_client_level(cfg, privacy, len(shard_sizes))
    epsilon = float(privacy["epsilon"])
    n_min = min(shard_sizes)
    delta = privacy.get("delta")
    delta_note = f"delta given in config; smallest hospital has n={n_min}"
    if delta is None:
        delta = default_delta(n_min)
        delta_note = f"default delta={delta:g} < 1/n={1 / n_min:.2g} for the smallest hospital (n={n_min})"
    delta = float(delta)
    validate_privacy_params(epsilon=epsilon, delta=delta, max_grad_norm=float(privacy["max_grad_norm"]),
                            min_hospital_size=n_min)
    batch = int(cfg["train"]["batch_size"])
    hospitals = []
    for n in shard_sizes:
        if batch >= n:
            raise FedrayError(f"train.batch_size={batch} is not below a hospital's {n} records: "
                              "DP-SGD needs a sampling rate below 1; lower train.batch_size")
        q = batch / n
        steps = int(cfg["fl"]["rounds"]) * int(cfg["fl"]["local_epochs"]) * round(1 / q)
        sigma = 0.0 if math.isinf(epsilon) else calibrate_noise_multiplier(
            target_epsilon=epsilon, delta=delta, sample_rate=q, steps=steps,
            accountant=privacy.get("accountant", "rdp"))
        hospitals.append({"num_records": n, "sample_rate": q, "planned_steps": steps, "noise_multiplier": sigma})
    resolved = {**privacy, "name": name, "epsilon": epsilon, "delta": delta, "delta_note": delta_note,
                "accountant": privacy.get("accountant", "rdp"), "max_grad_norm": float(privacy["max_grad_norm"]),
                "hospitals": hospitals}
    return PrivacyPlan(resolved)
