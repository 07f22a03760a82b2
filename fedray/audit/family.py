r"""A sweep's audits as one family: each trial's p-value, and Holm's step-down across the trials.

Each canary audit tests :math:`H`: "the run is (ε, δ)-DP with respect to each
canary" at the accountant's ε and gives a p-value
(:func:`fedray.audit.canary_bounds.one_run_audit_p_value`); its per-trial flag
is that p-value below :math:`\alpha = 1 - c` at the audit's confidence :math:`c`.
A trial with several canary audits (input and white-box) tests their
intersection: :func:`trial_p_value` is their Bonferroni minimum
:math:`\min(1, K \min_k p_k)`, valid whatever their dependence.

Over :math:`n` trials each flagged at level α, about :math:`n\alpha` flags are
expected by chance when every claim holds. Holm's step-down (Holm 1979,
"A simple sequentially rejective multiple test procedure") controls the
family-wise error instead: with the p-values sorted,
:math:`p_{(1)} \le \dots \le p_{(n)}`, it rejects :math:`H_{(1)}, \dots, H_{(i)}`
for the largest :math:`i` with :math:`p_{(j)} < \alpha / (n - j + 1)` for every
:math:`j \le i`. If the claims that hold are true, the chance that any of them
is rejected is at most α, under any dependence between the trials. The
inequality is strict, as in the per-trial flag (a bound above ε), so one trial
alone is rejected exactly when it is flagged.
"""

from __future__ import annotations

import numpy as np


def trial_p_value(canary_p_values: list[float | None]) -> float | None:
    """Bonferroni over one trial's canary audits: min(1, K * smallest); None if any is None or there are none.

    A None p-value (an infinite accountant ε, or a report written before p-values) leaves the trial untested.
    """
    if not canary_p_values or any(p is None for p in canary_p_values):
        return None
    return min(1.0, len(canary_p_values) * min(canary_p_values))


def holm_rejections(p_values, alpha: float) -> np.ndarray:
    """Bool per p-value: rejected by Holm's step-down at family-wise level ``alpha`` (module docstring).

    NaN p-values (untested trials) are outside the family: never rejected, and not counted in n.

    >>> holm_rejections([0.01, 0.04, 0.03, 0.005], 0.05).tolist()
    [True, False, False, True]
    """
    p_values = np.asarray(p_values, dtype=np.float64)
    tested = np.flatnonzero(~np.isnan(p_values))
    order = tested[np.argsort(p_values[tested], kind="stable")]
    thresholds = alpha / (len(order) - np.arange(len(order)))
    passed = p_values[order] < thresholds
    # Step-down: stop at the first p-value above its threshold.
    accepted_from = len(order) if passed.all() else int(np.argmin(passed))
    rejected = np.zeros(len(p_values), dtype=bool)
    rejected[order[:accepted_from]] = True
    return rejected
