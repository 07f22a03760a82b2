"""The audit's columns of the sweep frontier (docs/frontier.md lists each with its unit), and its plotted bounds.

Every column is ``(name, Arrow type, path inside summary["audit"])``; a path
of None is derived by :func:`derived_values`. The sweep's frontier
(:mod:`fedray.sweep.frontier`) places them as one block, reads them from each
trial's summary and casts them; nothing there names an audit's parts.

- ``attack_*``: the strongest held-out membership attack (:mod:`fedray.audit.pools`),
  with its std over k folds;
- ``canary_input_*``: the black-box input canaries' one-run audit: Steinke et
  al.'s bound, the f-DP bound (``*_fdp``, :mod:`fedray.audit.fdp_bounds`) and
  each one's ceiling, the most its canaries could certify;
- ``canary_white_box_*``: the same for the gradient canaries or, under
  DP-FedAvg, the canary clients (``canary_white_box_kind`` says which), whose Gaussian ε
  estimate and interval are ``canary_gaussian_*``; this is the driver's
  (round) view;
- ``canary_step_*``: the gradient canaries' step-level view, the Poisson
  sample unknown, and ``canary_step_sampled_*`` with it known, against its own
  ε ``canary_step_sampled_epsilon`` (:mod:`fedray.audit.step_view`);
- ``audit_flags``: every bound or advantage the accountant's (ε, δ) forbids;
- ``audit_p_value``: the trial's canary audits as one test of the ε each is
  compared with (:func:`fedray.audit.family.trial_p_value`), which the sweep's
  report corrects over its trials (Holm).
"""

from __future__ import annotations

import pyarrow as pa

from fedray.audit.family import trial_p_value

_STRONGEST, _STRONGEST_STD, _CANARIES = ("strongest",), ("strongest_std",), ("canaries",)
# The one-run audit's report (fedray.audit.canaries.one_run_report): column suffix, type, key.
_ONE_RUN = [("m", pa.int64(), "m"), ("included", pa.int64(), "included"), ("k_plus", pa.int64(), "k_plus"),
            ("k_minus", pa.int64(), "k_minus"), ("correct", pa.int64(), "correct"),
            ("epsilon_lower_bound", pa.float64(), "epsilon_lower_bound"),
            ("epsilon_lower_bound_fdp", pa.float64(), "epsilon_lower_bound_fdp"),
            ("ceiling", pa.float64(), "ceiling"), ("ceiling_fdp", pa.float64(), "ceiling_fdp")]
_PLOTTED = ("epsilon_lower_bound", "epsilon_lower_bound_fdp")  # each canary audit's keys in BOUND_SERIES
WHITE_BOX_KINDS = ("gradient", "clients")  # gradient canaries (DP-SGD, non-private) or canary clients (DP-FedAvg)

COLUMNS: list[tuple[str, pa.DataType, tuple | None]] = [
    ("attack_name", pa.string(), (*_STRONGEST, "attack")),
    ("attack_auc", pa.float64(), (*_STRONGEST, "auc")),
    ("attack_advantage", pa.float64(), (*_STRONGEST, "advantage")),
    ("attack_tpr_at_1pct_fpr", pa.float64(), (*_STRONGEST, "tpr_at_1pct_fpr")),
    ("attack_tpr_at_0_1pct_fpr", pa.float64(), (*_STRONGEST, "tpr_at_0_1pct_fpr")),
    ("attack_epsilon_lower_bound", pa.float64(), (*_STRONGEST, "epsilon_lower_bound")),
    ("attack_n_members", pa.int64(), (*_STRONGEST, "n_members")),
    ("attack_n_nonmembers", pa.int64(), (*_STRONGEST, "n_nonmembers")),
    ("attack_auc_std", pa.float64(), (*_STRONGEST_STD, "auc")),
    ("attack_advantage_std", pa.float64(), (*_STRONGEST_STD, "advantage")),
    *((f"canary_input_{field}", type_, (*_CANARIES, "input", key)) for field, type_, key in _ONE_RUN),
    ("canary_white_box_kind", pa.string(), None),
    *((f"canary_white_box_{field}", type_, None) for field, type_, _ in _ONE_RUN),
    *((f"canary_step_{field}", type_, (*_CANARIES, "gradient_step", key)) for field, type_, key in _ONE_RUN),
    *((f"canary_step_sampled_{field}", type_, (*_CANARIES, "gradient_step_sampled", key))
      for field, type_, key in _ONE_RUN),
    ("canary_step_sampled_epsilon", pa.float64(), (*_CANARIES, "gradient_step_sampled", "published_sample_epsilon")),
    ("canary_gaussian_epsilon", pa.float64(), (*_CANARIES, "clients", "gaussian_estimate", "epsilon")),
    ("canary_gaussian_epsilon_low", pa.float64(), (*_CANARIES, "clients", "gaussian_estimate", "interval", 0)),
    ("canary_gaussian_epsilon_high", pa.float64(), (*_CANARIES, "clients", "gaussian_estimate", "interval", 1)),
    ("audit_flag_count", pa.int64(), None),
    ("audit_p_value", pa.float64(), None),
    ("audit_flags", pa.string(), None),
]

# The frontier plot's right panel: each empirical ε lower bound against the ε spent (column, line style, label).
BOUND_SERIES = (("canary_step_epsilon_lower_bound", "-P", "white-box canaries, every step"),
                ("canary_step_epsilon_lower_bound_fdp", "-X", "white-box canaries, every step, f-DP (Gaussian curve)"),
                ("canary_white_box_epsilon_lower_bound", "-o", "white-box canaries"),
                ("canary_white_box_epsilon_lower_bound_fdp", "-D", "white-box canaries, f-DP (Gaussian curve)"),
                ("canary_input_epsilon_lower_bound", "--s", "input canaries"),
                ("canary_input_epsilon_lower_bound_fdp", "--v", "input canaries, f-DP (Gaussian curve)"),
                ("attack_epsilon_lower_bound", ":^", "membership attack (held-out)"))
# Drawn faintly on the same panel: the most each canary audit could certify, every guess right (as BOUND_SERIES).
CEILING_SERIES = (("canary_white_box_ceiling", ":_", "white-box canaries: the most they could show"),
                  ("canary_white_box_ceiling_fdp", "--_", "white-box canaries: the most they could show, f-DP"),
                  ("canary_input_ceiling", ":+", "input canaries: the most they could show"),
                  ("canary_input_ceiling_fdp", "--+", "input canaries: the most they could show, f-DP"))


# report.md's table of the white-box views (heading, column), in the order the report gives them, and its note.
VIEW_TABLE = (("round: ε ≥", "canary_white_box_epsilon_lower_bound"),
              ("round, f-DP: ε ≥", "canary_white_box_epsilon_lower_bound_fdp"),
              ("step: ε ≥", "canary_step_epsilon_lower_bound"),
              ("step, f-DP: ε ≥", "canary_step_epsilon_lower_bound_fdp"),
              ("most it can show", "canary_step_ceiling"), ("most it can show, f-DP", "canary_step_ceiling_fdp"),
              ("sample known, f-DP: ε ≥", "canary_step_sampled_epsilon_lower_bound_fdp"),
              ("ε with the sample published", "canary_step_sampled_epsilon"))
VIEW_NOTE = (
    "Each one-run bound of the gradient canaries at 95 % confidence, by what its adversary saw "
    "(`fedray/audit/step_view.py`). *Round*: the driver, each hospital's update of each round, a sum of many DP-SGD "
    "steps that hides which step held a canary (the deployment view). *Step*: every noised step at each hospital, "
    "scored by the subsampled Gaussian's likelihood ratio: the adversary DP-SGD's ε is for, compared with ε spent. "
    "*Sample known*: the same steps with the Poisson sample known, which removes amplification by sampling; it is "
    "compared only with the ε of DP-SGD with its sample published (its own column), never with ε spent. *Most it "
    "can show*: every guess right, with these canaries (Steinke et al. / f-DP). A bound near that ceiling is limited "
    "by the canaries; one far below it and below ε is what one run can see of this schedule "
    "(`python benchmarks/audit_tightness.py` simulates the ideal audit of it).")


def bound_values(audit: dict | None) -> dict:
    """The plotted lower bounds (:data:`BOUND_SERIES`) and the strongest attack's AUC, by their column names: what
    a tracker logs of the audit (:mod:`fedray.tracking`); a bound the audit did not compute is left out."""
    strongest = (audit or {}).get("strongest") or {}
    canaries = (audit or {}).get("canaries") or {}
    white_box, input_, step = derived_values(audit), canaries.get("input") or {}, canaries.get("gradient_step") or {}
    values = {"attack_auc": strongest.get("auc"), "attack_epsilon_lower_bound": strongest.get("epsilon_lower_bound"),
              **{f"canary_input_{key}": input_.get(key) for key in _PLOTTED},
              **{f"canary_step_{key}": step.get(key) for key in _PLOTTED},
              **{f"canary_white_box_{key}": white_box[f"canary_white_box_{key}"] for key in _PLOTTED}}
    return {name: value for name, value in values.items() if value is not None}


def derived_values(audit: dict | None) -> dict:
    """The columns without a path: the white-box audit that ran (gradient canaries or canary clients), the flags,
    the trial's p-value.

    A summary without an audit leaves them None.
    """
    canaries = (audit or {}).get("canaries") or {}
    kind = next((k for k in WHITE_BOX_KINDS if k in canaries), None)
    report = canaries.get(kind) or {}
    flags = (audit or {}).get("flags")
    return {"canary_white_box_kind": kind,
            **{f"canary_white_box_{field}": report.get(key) for field, _, key in _ONE_RUN},
            "audit_flag_count": None if flags is None else len(flags),
            "audit_p_value": trial_p_value([report.get("p_value") for kind, report in canaries.items()
                                            if kind != "notes"]),
            "audit_flags": None if flags is None else " | ".join(map(str, flags))}
