"""The privacy layer: DP-SGD accounting and wiring, client-level DP-FedAvg, Laplace, membership audits.

Pure torch/numpy/Opacus/dp_accounting; no Ray. See docs/privacy.md for what
each guarantee protects and what voids it.
"""

from fedray.privacy.accounting import (
    LedgerEntry,
    calibrate_noise_multiplier,
    default_delta,
    epsilon_spent,
    independent_epsilon,
    summarise_ledger,
    validate_privacy_params,
)
from fedray.privacy.client_level import calibrate_client_noise, client_level_epsilon, clip_update, noisy_mean
from fedray.privacy.compat import (
    PrivateParts,
    choose_grad_sample_mode,
    make_dp_compatible,
    private_step,
    wrap_private,
)
from fedray.privacy.laplace import laplace_mechanism, perturb_features
from fedray.privacy.membership import (
    AttackReport,
    calibrated_scores,
    evaluate_attack,
    loss_threshold_scores,
    per_example_losses,
)

__all__ = [
    "AttackReport",
    "LedgerEntry",
    "PrivateParts",
    "calibrate_client_noise",
    "calibrate_noise_multiplier",
    "calibrated_scores",
    "choose_grad_sample_mode",
    "client_level_epsilon",
    "clip_update",
    "default_delta",
    "epsilon_spent",
    "evaluate_attack",
    "independent_epsilon",
    "laplace_mechanism",
    "loss_threshold_scores",
    "make_dp_compatible",
    "noisy_mean",
    "per_example_losses",
    "perturb_features",
    "private_step",
    "summarise_ledger",
    "validate_privacy_params",
    "wrap_private",
]
