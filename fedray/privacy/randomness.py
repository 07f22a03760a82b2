r"""The one place where the randomness of fedray's DP mechanisms comes from.

Why it must be secret. A mechanism releases :math:`M(D) = f(D) + Z`; its
guarantee is about an adversary who cannot predict :math:`Z`. Whoever can
regenerate :math:`Z` subtracts it and reads :math:`f(D)` exactly. The config,
and so its seed, is held by the driver, the auditor and every reader of the
run directory, so no DP noise, Poisson sample or randomised response may be
derivable from it in a run that claims a guarantee.

Two modes, one :class:`NoiseSource` per party (hospital :math:`k`, the driver,
the auditor):

* :meth:`NoiseSource.secret` (the default): every request draws 128 fresh bits
  from the operating system (``secrets.randbits``). Nothing depends on the
  config, and a retried round never replays a stream it has already used.
* :meth:`NoiseSource.reproducible` (``privacy.reproducible_noise: true``, for
  tests and simulations): every stream is a function of (config seed, party,
  round, purpose, index), so a run whose hospital was killed mid-round equals
  the clean run draw for draw. Such a run claims no guarantee against anyone
  holding the config: :attr:`NoiseSource.description` says so for the ledger.

Streams. A stream is named by (party, round, purpose, index) and seeded with
``SeedSequence(e, spawn_key=(domain, kind, role, k, round, purpose, index))``,
where ``e`` is 128 OS bits (secret) or the config seed (reproducible), and
kind separates per-round streams from one-time releases. Keys all have one
length: ``SeedSequence`` pads short inputs with zeros, so ``[s, 1, 2]`` and
``[s, 1, 2, 0]`` would name the same stream. Distinct keys give streams that
are independent for all practical purposes (the design of NumPy's spawning).
``index`` separates several draws of one (round, purpose), e.g. the auditor's
``i``-th reference model; it is not an attempt counter, which would break the
replay of reproducible mode.

One-time releases. Laplace input perturbation, label randomised response and
a DP tree release a hospital's records once per run. A restarted hospital must
re-create that release identically; a second, independent draw would release
the records twice (the budget doubles). So a release is keyed not per request
but by a per-hospital ``release_key``: 128 OS bits that the launcher draws once
per run (:func:`new_release_key`) and hands to that hospital alone, again on
every restart. It must never reach the driver, the auditor, the config, a
checkpoint, a log or the ledger (the ``repr`` hides it). Reproducible mode keys
releases by the config seed.

Not DP randomness (derived from the config seed in every mode, public by
design): model initialisation, splits and partitions, audit pools, and batch
order and flips (``fedray.training.local.round_generator``). A DP analysis holds
conditional on any data-independent randomness the adversary knows: clipping
bounds a record's gradient whatever flip it got, and noisy rows are
post-processed whatever their order. The batch *membership* of DP-SGD is
different: amplification by Poisson subsampling assumes nobody knows who was
sampled, so those masks are :attr:`Purpose.POISSON_SAMPLING`, secret. Keeping
shuffling on the config seed keeps non-private baselines bit-identical.

Generators. NumPy streams use ``Philox`` (Philox4x64-10, Salmon et al. 2011),
keyed with 128 bits: PCG64, NumPy's default, has had its seed recovered from
raw outputs (Bouillaguet, Martinez & Sauvage 2020) and MT19937's state is
linear in its outputs. No such attack on Philox is known, though it is not a
vetted cryptographic generator. torch generators take a 64-bit seed
(``manual_seed``; on CUDA this is the only way to seed them), so a torch stream
carries 64 secret bits, hashed from 128 by ``SeedSequence``; torch's CPU
generator is MT19937. Streams on different device types differ for one seed.

Why not Opacus' ``secure_mode``. ``PrivacyEngine(secure_mode=True)`` needs
``torchcsprng``, whose last release (0.2.1, March 2021) is built for torch 1.8;
there is none for torch 2.x and it does not install here. fedray does not use
``PrivacyEngine`` anyway: it hands ``DPOptimizer`` a ``torch.Generator``, and this
module seeds it from OS entropy. (``DPOptimizer(secure_mode=True)`` alone needs
no torchcsprng: it sums four Gaussians per draw against the floating-point
attack below, at four times the sampling cost.)

Floating point, honestly. Every sampler here (``torch.normal``, NumPy's
``normal`` and ``laplace``) is a floating-point approximation. Mironov (2012)
showed that the low-order bits of textbook floating-point Laplace noise can
reveal the input, breaking the guarantee, and Jin et al. (2021) did the same
for Gaussian samplers including Opacus'. The guarantees fedray states are
those of the ideal real-valued mechanisms; the remedies (snapping, the
discrete Gaussian of Canonne, Kamath & Steinke 2020) are not implemented.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from fedray.errors import FedrayError

# Spawn-key domain tag ("noise"), so that no other use of the config seed in
# fedray (which never sets a spawn key of this shape) can name one of our streams.
_DOMAIN = 0x6E6F697365
_PER_ROUND, _RELEASE = 0, 1
_ENTROPY_BITS = 128

SECRET_DESCRIPTION = "noise secret (OS entropy)"
REPRODUCIBLE_DESCRIPTION = "noise reproducible from the config: simulation only, no guarantee against anyone holding it"


class Role(enum.IntEnum):
    """Who draws. The values are part of every stream's key: never renumber them."""

    HOSPITAL = 0
    DRIVER = 1
    AUDITOR = 2


@dataclass(frozen=True)
class Party:
    """One party of a run: ``hospital(k)``, :data:`DRIVER` or :data:`AUDITOR`."""

    role: Role
    index: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", Role(self.role))
        if self.index < 0:
            raise FedrayError(f"party index {self.index} must be >= 0")

    def __str__(self) -> str:
        return f"hospital {self.index}" if self.role is Role.HOSPITAL else self.role.name.lower()


def hospital(k: int) -> Party:
    """The party of hospital ``k`` (0-based)."""
    return Party(Role.HOSPITAL, k)


DRIVER = Party(Role.DRIVER)
AUDITOR = Party(Role.AUDITOR)


class Purpose(enum.IntEnum):
    """What a stream is for. The values are part of every stream's key: never renumber them."""

    DPSGD_NOISE = 1  # Gaussian noise on DP-SGD's clipped gradient sum (hospital, per round)
    POISSON_SAMPLING = 2  # DP-SGD's Poisson batch masks (hospital, per round)
    DPFEDAVG_NOISE = 3  # Gaussian noise on the clipped updates' sum (driver, per round)
    LAPLACE_FEATURES = 4  # Laplace input perturbation of feature values (hospital, one-time release)
    LABEL_RESPONSE = 5  # randomised response of labels (hospital, one-time release)
    DP_TREE = 6  # diffprivlib's tree structure and leaf labels (hospital, one-time release)
    STAT_NOISE = 7  # noise on DP preprocessing statistics, e.g. colour whitening (hospital)
    SECAGG_NOISE = 8  # a hospital's share of distributed noise under secure aggregation
    INSERTION = 9  # what a privacy audit inserts into the run, and where (auditor, and the hospital holding it)
    CLIENT_SAMPLING = 10  # which hospitals take part in a round (driver, per round)
    BIAS_CALIBRATION = 11  # noise on a hospital's summed predictions (hospital, per calibration round)


def new_release_key() -> int:
    """128 fresh OS bits: one hospital's release key, drawn once per run by the launcher."""
    return secrets.randbits(_ENTROPY_BITS)


def _os_entropy() -> int:
    """The fresh entropy of one secret per-round stream (a separate name, so tests can hold it fixed)."""
    return secrets.randbits(_ENTROPY_BITS)


@dataclass(frozen=True)
class NoiseSource:
    """The DP randomness of one party, secret (``seed=None``) or reproducible from ``seed``.

    Build it with :meth:`secret`, :meth:`reproducible` or :meth:`from_config`.
    Per-round streams: :meth:`numpy_generator`, :meth:`torch_generator`,
    :meth:`seed_sequence`. One-time releases: :meth:`release_generator`,
    :meth:`release_random_state`, :meth:`release_seed_sequence`.
    """

    party: Party
    seed: int | None = None
    release_key: int | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.seed is not None and self.release_key is not None:
            raise FedrayError("a reproducible noise source keys its releases by the seed: give no release_key")
        for name, value in (("seed", self.seed), ("release_key", self.release_key)):
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 0):
                raise FedrayError(f"{name}={value!r}: must be a non-negative integer")

    @classmethod
    def secret(cls, party: Party, *, release_key: int | None = None) -> NoiseSource:
        """Streams from OS entropy; ``release_key`` (:func:`new_release_key`) only for a party that releases once."""
        return cls(party=party, release_key=release_key)

    @classmethod
    def reproducible(cls, seed: int, party: Party) -> NoiseSource:
        """Streams that are a function of (``seed``, party, round, purpose, index): simulations only."""
        return cls(party=party, seed=int(seed))

    @classmethod
    def from_config(cls, privacy_cfg, *, seed: int, party: Party, release_key: int | None = None) -> NoiseSource:
        """Reproducible from ``seed`` iff ``privacy.reproducible_noise`` is true; otherwise secret.

        ``privacy_cfg`` is the privacy section, a mapping or an object with a
        ``reproducible_noise`` attribute (None: secret). In secret mode ``seed``
        is not used at all.
        """
        if isinstance(privacy_cfg, Mapping):
            reproducible = privacy_cfg.get("reproducible_noise", False)
        else:
            reproducible = getattr(privacy_cfg, "reproducible_noise", False)
        if reproducible:
            return cls.reproducible(seed, party)
        return cls.secret(party, release_key=release_key)

    @property
    def is_reproducible(self) -> bool:
        return self.seed is not None

    @property
    def description(self) -> str:
        """One line for the privacy ledger."""
        return REPRODUCIBLE_DESCRIPTION if self.is_reproducible else SECRET_DESCRIPTION

    # -- per-round streams ----------------------------------------------------------
    def seed_sequence(self, round_idx: int, purpose: Purpose, index: int = 0) -> np.random.SeedSequence:
        """The stream of (round, purpose, index): fresh each call if secret, fixed if reproducible."""
        entropy = self.seed if self.is_reproducible else _os_entropy()
        return self._sequence(entropy, _PER_ROUND, round_idx, purpose, index)

    def numpy_generator(self, round_idx: int, purpose: Purpose, index: int = 0) -> np.random.Generator:
        """A Philox-backed NumPy generator for (round, purpose, index)."""
        return np.random.Generator(np.random.Philox(self.seed_sequence(round_idx, purpose, index)))

    def torch_generator(self, round_idx: int, purpose: Purpose, device: torch.device | str = "cpu",
                        index: int = 0) -> torch.Generator:
        """A ``torch.Generator`` on ``device`` for (round, purpose, index), seeded with 64 bits of its stream."""
        return torch_generator_from(self.seed_sequence(round_idx, purpose, index), device)

    # -- one-time releases ---------------------------------------------------------
    def release_seed_sequence(self, purpose: Purpose, index: int = 0) -> np.random.SeedSequence:
        """The stream of this party's one-time release for ``purpose``: identical on every call and restart."""
        purpose = Purpose(purpose)
        if self.is_reproducible:
            entropy = self.seed
        elif self.release_key is None:
            raise FedrayError(
                f"{self.party} makes a one-time {purpose.name} release but has no release key: the launcher "
                "must draw one per hospital with new_release_key() and pass it to NoiseSource.secret"
            )
        else:
            entropy = self.release_key
        return self._sequence(entropy, _RELEASE, 0, purpose, index)

    def release_generator(self, purpose: Purpose, index: int = 0) -> np.random.Generator:
        """A Philox-backed NumPy generator for the one-time release (Laplace rows, randomised labels)."""
        return np.random.Generator(np.random.Philox(self.release_seed_sequence(purpose, index)))

    def release_random_state(self, purpose: Purpose, index: int = 0) -> np.random.RandomState:
        """A legacy ``RandomState`` on the release's Philox stream, for libraries that take one (diffprivlib).

        diffprivlib's ``RandomForestClassifier`` does not draw from it directly:
        it reseeds each tree with a 31-bit integer drawn from it (scikit-learn's
        ``_set_random_states``), and a released tree's thresholds let anyone
        search all 2^31 seeds. Fit a forest tree by tree, tree ``t`` with
        ``index=t``, so that every tree draws from its own 128-bit-keyed stream.
        """
        return np.random.RandomState(np.random.Philox(self.release_seed_sequence(purpose, index)))

    def _sequence(self, entropy: int, kind: int, round_idx: int, purpose: Purpose,
                  index: int) -> np.random.SeedSequence:
        if round_idx < 0 or index < 0:
            raise FedrayError(f"round {round_idx} and index {index} must be >= 0")
        key = (_DOMAIN, kind, int(self.party.role), self.party.index, int(round_idx), int(Purpose(purpose)), int(index))
        return np.random.SeedSequence(entropy, spawn_key=key)


def torch_generator_from(sequence: np.random.SeedSequence, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with 64 bits of ``sequence`` (CUDA generators take no more)."""
    seed64 = int(sequence.generate_state(1, np.uint64)[0])
    return torch.Generator(device=device).manual_seed(seed64)


__all__ = [
    "AUDITOR", "DRIVER", "REPRODUCIBLE_DESCRIPTION", "SECRET_DESCRIPTION", "NoiseSource", "Party", "Purpose",
    "Role", "hospital", "new_release_key", "torch_generator_from",
]
