"""Noise calibration cost: compositions and seconds to find σ for a target ε, Brent on log σ against bisection.

Every DP-SGD or DP-FedAvg plan calibrates its noise multiplier before any
actor starts (the CLI, each sweep trial's planning, every test that plans a
DP run), and each candidate σ is one dp-accounting RDP composition of the
Poisson-subsampled Gaussian at fedray's 163 orders (90 of them fractional,
the slow series). ``fedray.privacy.ledger.calibrate_noise`` runs Brent's
method on log σ and stops once ε is within the tolerance; the baseline is
the bisection on σ it replaced (same bracket [0.05, 10^4], same stopping
rule: ε ≤ target and within 1 % of it, at most 0.01). Compositions are not
memoised between the two (each schedule's σ are new to both), and the
column ``ε`` shows both meet the target.

    python benchmarks/calibration.py
"""

from __future__ import annotations

import time

import dp_accounting

from _common import markdown_table
from fedray.privacy.ledger import calibrate_noise, compose_epsilon

DELTA = 1e-5
# (target ε, sample rate q, steps T): the laptop sweep's hospitals (84 records, batch 16, 5 rounds x 2 epochs),
# a large hospital over many rounds, one full-batch DP-FedAvg-like schedule, and ε from 0.1 to 10.
SCHEDULES = [(0.1, 0.19, 50), (1.0, 0.19, 50), (10.0, 0.19, 50), (1.0, 0.01, 2000), (4.0, 1.0, 20)]


def bisection(epsilon_of, *, target: float, low: float = 0.05, high: float = 1e4) -> float:
    """The calibration fedray used before: bisection on σ (the baseline, as it was)."""
    tolerance = min(0.01, 0.01 * target)
    if epsilon_of(high) > target:
        raise ValueError(f"epsilon={target} is unreachable")
    while epsilon_of(low) <= target:
        low /= 2
    while True:
        mid = (low + high) / 2
        eps = epsilon_of(mid)
        if eps > target:
            low = mid
        elif target - eps <= tolerance:
            return mid
        else:
            high = mid


def measure(method, target: float, q: float, steps: int) -> tuple[int, float, float]:
    """(compositions, seconds, ε reached); each σ composed afresh (no memo hits: a fresh tiny offset per call)."""
    calls = []

    def epsilon_of(sigma: float) -> float:
        calls.append(sigma)
        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma * (1 + 1e-12 * len(calls)))),
            steps)
        return compose_epsilon([event], delta=DELTA)

    started = time.perf_counter()
    sigma = method(epsilon_of, target=target)
    seconds = time.perf_counter() - started
    return len(calls), seconds, epsilon_of(sigma)


def main() -> None:
    rows = []
    for target, q, steps in SCHEDULES:
        brent = measure(calibrate_noise, target, q, steps)
        bisect = measure(bisection, target, q, steps)
        rows.append([f"{target:g}", q, steps, bisect[0], brent[0], f"{bisect[1]:.2f}", f"{brent[1]:.2f}",
                     f"{bisect[1] / brent[1]:.1f}x", f"{bisect[2]:.4f} / {brent[2]:.4f}"])
    print(markdown_table(["target ε", "q", "steps", "bisection: compositions", "Brent: compositions",
                          "bisection s", "Brent s", "speed-up", "ε reached (bisection / Brent)"], rows))


if __name__ == "__main__":
    main()
