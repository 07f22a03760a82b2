r"""Canaries for auditing one run: what the auditor inserts, where, and how the adversary scores them (pure numpy).

The game is Steinke, Nasr & Jagielski's (NeurIPS 2023, Algorithm 1): the
auditor makes :math:`m` canaries, includes each independently with probability
½, runs the ordinary training, and the adversary, who knows all :math:`m`
canaries but not which were included, scores each from what it observes.
:func:`fedray.audit.canary_bounds.one_run_audit` turns the scores into an ε
lower bound, and :func:`fedray.audit.fdp_bounds.fdp_one_run_audit` into the
tighter one that assumes a Gaussian trade-off curve. Three kinds:

* **Input canaries** (black-box). Records the auditor makes: images of uniform
  uint8 noise, or table rows drawn uniformly within the public feature ranges,
  each with a uniformly random label (out of distribution and mislabelled:
  only memorisation fits them). An included one is appended to the training
  shard of its hospital, so it passes through the run's mechanism like any
  record. Score: :math:`-\ell`, the loss of its label under the final model.
* **Gradient canaries** (white-box, "Dirac" canaries of Nasr et al., USENIX
  Security 2023). Canary :math:`j` is the gradient :math:`C s_j e_{c_j}`: norm
  :math:`C`, one trainable coordinate :math:`c_j` (distinct for every canary, so
  canaries never interfere), a random sign :math:`s_j`. An included one joins
  its hospital's per-record gradient sum whenever it is Poisson-sampled at the
  records' rate (``fedray.audit.gradient_canaries``). The adversary sees
  each hospital's update :math:`\Delta_{h,r}` of every round :math:`r` and scores
  canary :math:`j` of hospital :math:`h_j` by :math:`\sum_r \langle -\Delta_{h_j,r}, s_j e_{c_j}\rangle`
  (:class:`WhiteBoxScores`): an SGD step moves against the gradient. Under
  secure aggregation only the aggregate is seen, and it takes its place.
  (Subtracting the other hospitals' mean update at :math:`c_j`, to cancel
  the drift the data causes, was measured and does not help: it adds their
  noise under DP and the drift is small without.)
* **Canary clients** (Andrew et al., ICLR 2024) under client-level DP-FedAvg.
  Canary client :math:`j` has a random unit direction :math:`u_j \in \mathbb R^d`
  over the model's floating-point entries; an included one submits the
  update :math:`S u_j` (norm exactly the clip norm :math:`S`) whenever it is
  sampled, like a hospital. Score: the cosine of the final model delta with
  :math:`u_j` (:meth:`CanaryClients.cosines`).

Randomness. The canaries themselves (pixels, rows, coordinates, signs,
directions) are public by design, drawn from the config seed
(:func:`design_generator`). Inclusion is the auditor's secret: it is drawn once
per run from the auditor's :class:`~fedray.privacy.randomness.NoiseSource`
(128 bits of OS entropy, or the config seed only under
``privacy.reproducible_noise``), never from the seed.

Placement. Canaries are counted in total and dealt round-robin over the
hospitals that hold consented training records (:func:`deal_round_robin`);
they never enter a validation, test or audit pool.

Assumption for the bound: the mechanism is :math:`(\varepsilon,\delta)`-DP
with respect to each canary. It holds for input canaries (records) under every
record-level mechanism, for gradient canaries under DP-SGD (clipped at
:math:`C` already, sampled and noised like a record) and without DP, and for
canary clients under DP-FedAvg; nowhere else are they inserted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedray.errors import FedrayError
from fedray.privacy.randomness import NoiseSource, Purpose

Params = dict[str, np.ndarray]

INPUT, GRADIENT, CLIENT = 0, 1, 2  # the stream index of each kind (design and inclusion)
_DESIGN_TAG = 0xCA4A21


def design_generator(seed: int, kind: int) -> np.random.Generator:
    """The public generator of one kind's canaries: a function of the config seed, never of the inclusion."""
    return np.random.default_rng([seed, _DESIGN_TAG, kind])


def draw_inclusion(m: int, auditor: NoiseSource, kind: int) -> np.ndarray:
    """Bool [m]: each canary included independently with probability ½, from the auditor's own stream.

    A secret source draws fresh bits on every call: call once per run and keep the result.
    """
    return auditor.numpy_generator(0, Purpose.INSERTION, kind).random(m) < 0.5


def consenting_hospitals(shard_sizes: list[int]) -> list[int]:
    """The hospitals that hold consented training records (every record in a shard has consent): canary hosts."""
    hosts = [k for k, n in enumerate(shard_sizes) if n > 0]
    if not hosts:
        raise FedrayError("no hospital holds a consented training record: there is nowhere to insert canaries")
    return hosts


def deal_round_robin(m: int, hospitals: list[int]) -> np.ndarray:
    """int [m]: canary j goes to ``hospitals[j % len(hospitals)]``."""
    return np.asarray(hospitals, dtype=np.int64)[np.arange(m) % len(hospitals)]


def input_canary_arrays(*, m: int, image_shape: tuple[int, ...] | None, feature_ranges: np.ndarray | None,
                        num_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels) of ``m`` auditor-made records with uniformly random labels.

    Images (``image_shape`` = (3, S, S)): uniform uint8 noise. Rows (``feature_ranges`` [D, 2], the public
    ranges): float32, each feature uniform within its range.
    """
    labels = rng.integers(0, num_classes, size=m).astype(np.int64)
    if image_shape is not None:
        return rng.integers(0, 256, size=(m, *image_shape), dtype=np.uint8), labels
    low, high = np.asarray(feature_ranges, dtype=np.float64).T
    return (low + rng.random((m, len(low))) * (high - low)).astype(np.float32), labels


def input_canary_scores(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Black-box scores, higher = "trained on": minus each canary's loss on its own (random) label."""
    from fedray.audit.membership import per_example_losses  # scipy: the auditor's, not the parties'

    return -per_example_losses(probs, labels)


@dataclass(frozen=True)
class DiracCanaries:
    """Gradient canaries: canary j is ``norm * signs[j]`` at entry ``flat_index[j]`` of parameter ``names[j]``."""

    names: tuple[str, ...]
    flat_index: np.ndarray
    signs: np.ndarray
    norm: float

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx: np.ndarray) -> DiracCanaries:
        return DiracCanaries(tuple(self.names[i] for i in idx), self.flat_index[idx], self.signs[idx], self.norm)


def dirac_canaries(trainable: list[tuple[str, int]], m: int, norm: float, rng: np.random.Generator) -> DiracCanaries:
    """min(m, d) canaries on distinct coordinates drawn uniformly from the ``d`` trainable entries [(name, size)]."""
    sizes = np.array([size for _, size in trainable], dtype=np.int64)
    if sizes.sum() == 0:
        raise FedrayError("the model has no trainable parameter to hold a gradient canary")
    coordinates = np.sort(rng.choice(int(sizes.sum()), size=min(m, int(sizes.sum())), replace=False))
    owner = np.searchsorted(np.cumsum(sizes), coordinates, side="right")
    flat_index = coordinates - np.r_[0, np.cumsum(sizes)][owner]
    signs = rng.choice(np.array([-1.0, 1.0]), size=len(coordinates))
    return DiracCanaries(tuple(trainable[i][0] for i in owner), flat_index.astype(np.int64), signs, float(norm))


def _entries(params: Params, canaries: DiracCanaries) -> np.ndarray:
    """The canaries' coordinates read from ``params`` (float64 [len(canaries)])."""
    return np.array([np.asarray(params[name]).reshape(-1)[i] for name, i in zip(canaries.names, canaries.flat_index)],
                    dtype=np.float64)


class WhiteBoxScores:
    """The driver's running scores of every gradient canary (it never learns which were included): a round observer
    (:mod:`fedray.federation.observers`) whose report is the scores."""

    name = "gradient"

    def __init__(self, canaries: DiracCanaries, hospitals: np.ndarray):
        self.canaries = canaries
        self.hospitals = np.asarray(hospitals)
        self.scores = np.zeros(len(canaries))

    def observe_updates(self, starts: dict[int, Params], trained: dict[int, Params]) -> None:
        """One round's per-hospital models (``trained[h]``, from ``starts[h]``); a hospital absent this round adds 0."""
        for h in trained:
            own = self.hospitals == h
            delta = _entries(trained[h], self.canaries) - _entries(starts[h], self.canaries)
            # Not in place: arrays shipped through Ray's object store arrive read-only.
            self.scores = self.scores + np.where(own, -self.canaries.signs * delta, 0.0)

    def observe_sum(self, start: Params, aggregate: Params) -> None:
        """One round of secure aggregation: only the aggregate model is seen."""
        self.scores = self.scores - self.canaries.signs * (_entries(aggregate, self.canaries)
                                                           - _entries(start, self.canaries))

    def observe_reports(self, reports: dict[int, dict]) -> None:
        """Nothing: the round view is the updates alone."""

    def report(self, initial: Params, final: Params) -> np.ndarray:
        return self.scores

    def state_dict(self) -> list[float]:
        return self.scores.tolist()

    def load_state_dict(self, state: list[float]) -> None:
        self.scores = np.array(state, dtype=np.float64)


def floating_names(params: Params) -> list[str]:
    """The entries DP-FedAvg clips and noises (every floating-point tensor), in a fixed order."""
    return sorted(name for name, value in params.items() if np.issubdtype(np.asarray(value).dtype, np.floating))


def flatten(params: Params, names: list[str]) -> np.ndarray:
    return np.concatenate([np.asarray(params[name], dtype=np.float64).reshape(-1) for name in names])


class CanaryClients:
    """Andrew et al.'s canary clients: unit directions over ``names`` (regenerated from the seed, never stored)."""

    def __init__(self, *, names: list[str], shapes: dict[str, tuple[int, ...]], seed: int, count: int,
                 clip_norm: float):
        self.names, self.shapes, self.seed, self.count, self.clip_norm = names, shapes, seed, count, clip_norm
        self.dim = int(sum(int(np.prod(shapes[n])) for n in names))

    def direction(self, j: int) -> np.ndarray:
        """Canary j's unit direction in R^d (the same on every call)."""
        u = np.random.default_rng([self.seed, _DESIGN_TAG, CLIENT, j]).standard_normal(self.dim, dtype=np.float32)
        return u / np.linalg.norm(u.astype(np.float64))

    def round_update(self, taking_part: np.ndarray) -> Params:
        """The sum of the updates ``clip_norm * u_j`` of the canary clients ``taking_part`` (indices), as params."""
        total = np.zeros(self.dim)
        for j in taking_part:
            total += self.clip_norm * self.direction(int(j))
        out, at = {}, 0
        for name in self.names:
            size = int(np.prod(self.shapes[name]))
            out[name] = total[at:at + size].reshape(self.shapes[name])
            at += size
        return out

    def cosines(self, model_delta: Params) -> np.ndarray:
        """Cosine of the run's model delta with every canary direction (float64 [count])."""
        delta = flatten(model_delta, self.names)
        norm = np.linalg.norm(delta)
        if norm == 0:
            raise FedrayError("the model delta is all zeros, so its cosine with the canary clients is undefined")
        return np.array([delta @ self.direction(j) for j in range(self.count)]) / norm


@dataclass(frozen=True)
class IncludedCanaryClients:
    """The canary clients the auditor included (``included``: indices), each taking part with probability q a round.

    At the driver it is both a client insertion of DP-FedAvg's sum (:class:`fedray.strategies.base.ClientInsertion`)
    and a round observer whose report is the cosine of the run's model delta with every canary client.
    """

    clients: CanaryClients
    included: np.ndarray
    sample_rate: float
    name = "clients"

    def round_update(self, rng: np.random.Generator) -> Params:
        """This round's summed canary updates: every included client draws its participation from ``rng``."""
        return self.clients.round_update(self.included[rng.random(len(self.included)) < self.sample_rate])

    def observe_updates(self, starts: dict[int, Params], updates: dict[int, Params]) -> None:
        """Nothing to keep: the score is the final model's delta."""

    def observe_sum(self, start: Params, mean: Params) -> None:
        """Nothing to keep: the score is the final model's delta."""

    def observe_reports(self, reports: dict[int, dict]) -> None:
        """Nothing to keep: the score is the final model's delta."""

    def report(self, initial: Params, final: Params) -> np.ndarray:
        return self.clients.cosines({name: final[name] - initial[name] for name in self.clients.names})

    def state_dict(self) -> None:
        return None

    def load_state_dict(self, state: None) -> None:
        """Stateless: the directions are regenerated from the seed."""


def one_run_report(scores: np.ndarray, included: np.ndarray, *, delta: float, confidence: float,
                   accountant_epsilon: float, epsilon_source: str = "the accountant's", **extra) -> dict:
    """Steinke et al.'s bound on these canaries with its guess counts, the f-DP bound beside it (``*_fdp``: its own
    grid point, its μ), both ceilings, ``included`` (how many the run trained on), ``p_value`` (of
    ``accountant_epsilon`` on the same grid, :func:`~fedray.audit.canary_bounds.one_run_audit_p_value`; None for an infinite ε), ``extra``
    fields and any flag.

    A Steinke bound above the accountant's ε is a contradiction of the guarantee at ``confidence``: flagged as a
    violation. ``accountant_epsilon`` is the ε of the mechanism these canaries see, which ``epsilon_source`` names
    when it is not the accountant's (the step view with its sample known, :mod:`fedray.audit.step_view`). The f-DP
    bound refutes only a Gaussian trade-off curve (:mod:`fedray.audit.fdp_bounds`), so it raises none; under pure
    DP (δ = 0) it has no finite ε and only its μ is given.
    """
    from fedray.audit.canary_bounds import (  # scipy, dp_accounting: the auditor's
        one_run_audit, one_run_audit_p_value, one_run_ceiling)
    from fedray.audit.fdp_bounds import fdp_ceiling, fdp_one_run_audit

    audit = one_run_audit(scores, included, delta=delta, confidence=confidence).as_dict()
    fdp = fdp_one_run_audit(scores, included, delta=delta, confidence=confidence)
    gaussian = delta > 0
    fdp_fields = {"epsilon_lower_bound_fdp": fdp.epsilon_lower_bound if gaussian else None,
                  "mu_lower_bound_fdp": fdp.mu_lower_bound, "k_plus_fdp": fdp.k_plus, "k_minus_fdp": fdp.k_minus,
                  "correct_fdp": fdp.correct, "ceiling": one_run_ceiling(audit["m"], delta, confidence),
                  "ceiling_fdp": fdp_ceiling(audit["m"], delta, confidence) if gaussian else None}
    p_value = None if np.isinf(accountant_epsilon) else \
        one_run_audit_p_value(scores, included, epsilon=accountant_epsilon, delta=delta)
    flags = []
    if audit["epsilon_lower_bound"] > accountant_epsilon:
        flags.append(f"violation: the one-run canary audit certifies epsilon >= {audit['epsilon_lower_bound']:.3g} "
                     f"at {confidence:.0%}, above {epsilon_source} epsilon = {accountant_epsilon:.3g}")
    return {**audit, **fdp_fields, "included": int(np.sum(included)), "p_value": p_value, **extra, "flags": flags}
