"""How tight can a one-run audit of this DP-SGD schedule be? The ideal step-level audit, simulated, beside the ε.

For each target ε the config's privacy plan is resolved as a run resolves it
(each hospital's q, planned steps T and σ). The simulation then plays the
audit's game on the exact mechanism, free of everything a real run adds
(the records' own gradients at the canaries' coordinates, momentum, the
model's drift): ``--canaries`` canaries dealt round-robin to the hospitals,
each included with probability ½, each Poisson-sampled at its hospital's q
in each of its T steps, each step read as 1[included and sampled] + N(0, σ²).
It scores them as :mod:`fedray.audit.step_view` does (the likelihood-ratio
score with the sample unknown, the sum over sampled steps with it known) and
runs the same one-run bounds on the same grid. ``--runs`` simulated runs give
the median and range of what an ideal adversary of each view certifies: a
real run's step-view bound near that median is as tight as a one-run audit
with this many canaries can be; the gap between it and the accountant's ε is
the one-run method's, not the run's.

    python benchmarks/audit_tightness.py                        # the laptop sweep's schedule, ε = 1 and 10
    python benchmarks/audit_tightness.py --epsilons 10 --canaries 10000 --runs 5
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np

from _common import compose, markdown_table


def schedules(overrides: list[str], epsilon: float) -> tuple[list[tuple[float, int, float]], float]:
    """(q, T, σ) of every hospital under ``overrides`` at target ``epsilon``, as the run's plan resolves them, and δ."""
    from fedray.federation.experiment import prepare_experiment

    with tempfile.TemporaryDirectory() as tmp:
        prep = prepare_experiment(compose([*overrides, "privacy=dpsgd", f"privacy.epsilon={epsilon}"], tmp))
    return [(h.sample_rate, h.planned_steps, h.noise_multiplier) for h in prep.privacy.hospitals], prep.privacy.delta


def ideal_run(plan, m: int, rng: np.random.Generator):
    """One simulated run: (included, sample-blind scores, sample-known scores, Σ 1/σ² of each canary's steps)."""
    from fedray.audit.step_view import step_log_likelihood_ratio

    included = rng.random(m) < 0.5
    blind, known, mu_squared = np.zeros(m), np.zeros(m), np.zeros(m)
    for h, (q, steps, sigma) in enumerate(plan):
        mine = np.arange(h, m, len(plan))
        sampled = rng.random((len(mine), steps)) < q
        x = (sampled & included[mine, None]) + sigma * rng.standard_normal((len(mine), steps))
        blind[mine] = step_log_likelihood_ratio(x, q, sigma).sum(axis=1)
        known[mine] = np.where(sampled, x, 0.0).sum(axis=1)
        mu_squared[mine] = sampled.sum(axis=1) / sigma ** 2
    return included, blind, known, mu_squared


def main() -> None:
    from fedray.audit.canaries import one_run_report
    from fedray.audit.step_view import published_sample_epsilon

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilons", default="1,10")
    parser.add_argument("--canaries", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args, overrides = parser.parse_known_args()
    overrides = overrides or ["+sweep=privacy_tradeoff"]
    rng = np.random.default_rng(args.seed)
    rows = []
    for epsilon in map(float, args.epsilons.split(",")):
        plan, delta = schedules(overrides, epsilon)
        found = {"blind": [], "blind_fdp": [], "known_fdp": [], "published": []}
        for _ in range(args.runs):
            included, blind, known, mu_squared = ideal_run(plan, args.canaries, rng)
            common = dict(delta=delta, confidence=0.95, accountant_epsilon=epsilon)
            unknown_sample = one_run_report(blind, included, **common)
            found["blind"].append(unknown_sample["epsilon_lower_bound"])
            found["blind_fdp"].append(unknown_sample["epsilon_lower_bound_fdp"])
            found["known_fdp"].append(one_run_report(known, included, **common)["epsilon_lower_bound_fdp"])
            found["published"].append(published_sample_epsilon(mu_squared, delta))
        q, steps, sigma = plan[0]
        spread = {key: f"{np.median(v):.2f} ({min(v):.2f}–{max(v):.2f})" for key, v in found.items()}
        rows.append([f"{epsilon:g}", f"{q:.3f}", str(steps), f"{sigma:.3f}", str(args.canaries), spread["blind"],
                     spread["blind_fdp"], spread["known_fdp"], spread["published"]])
    print(markdown_table(["target ε", "q (hospital 0)", "T", "σ", "canaries",
                          "ideal step view: Steinke ε ≥", "ideal step view: f-DP ε ≥",
                          "sample known: f-DP ε ≥", "ε with the sample published"], rows))
    print(f"median (range) over {args.runs} simulated runs each; overrides: {' '.join(overrides)}")


if __name__ == "__main__":
    main()
