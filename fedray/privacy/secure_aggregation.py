r"""Secure aggregation by pairwise additive masking (Bonawitz et al., CCS 2017), so the driver sees only sums.

Pure numpy + ``cryptography``; no Ray. A driver and N hospitals run one
*attempt* of one round as follows (:class:`SecureAggregationSession`,
:class:`ClientMasker`):

1. each hospital i draws a fresh X25519 key pair :math:`(a_i, A_i)` and
   sends :math:`A_i` to the driver, which relays the full map :math:`\{j: A_j\}`
   back to everyone (public keys are public; the driver is the only channel);
2. every pair i < j agrees on :math:`c_{ij} = \mathrm{X25519}(a_i, A_j) = \mathrm{X25519}(a_j, A_i)`
   and derives a ChaCha20 key
   :math:`k_{ij} = \mathrm{HKDF\text{-}SHA256}(c_{ij};\ \mathrm{salt}=\text{session id},\
   \mathrm{info}=\text{label}\,\|\,\text{round}\,\|\,\text{attempt}\,\|\,i\,\|\,j\,\|\,A_i\,\|\,A_j)`;
   the ChaCha20 keystream of :math:`k_{ij}` (zero nonce: the key is used once),
   read as little-endian 64-bit words, is the mask :math:`m_{ij} \in R^L`,
   uniform on the ring :math:`R = \mathbb Z_{2^{64}}`;
3. hospital i sends :math:`y_i = E(x_i) + \sum_{j>i} m_{ij} - \sum_{j<i} m_{ji} \pmod{2^{64}}`;
4. the driver adds the :math:`y_i`: every :math:`m_{ij}` enters once with + and
   once with -, so :math:`\sum_i y_i = \sum_i E(x_i)` exactly, and decodes.

**Fixed point.** :math:`E(x) = \mathrm{rint}(s x) \bmod 2^{64}` (two's complement)
for :math:`|x_\ell| \le B`. With N clients the integer sum satisfies
:math:`|\sum_i \mathrm{rint}(s x_{i\ell})| \le N(Bs + \tfrac12) < 2^{63}`, which the codec
demands, so the signed representative of the ring sum *is* the integer sum:
no wrap-around. Decoding divides by s; the error per coordinate of the sum is
at most :math:`N/(2s)` (N roundings of at most half a step), plus float64's own
half-ulp rounding of the result. s must be a power of two, which makes
:math:`s x` exact in float64; the default is the largest that satisfies the bound.
B comes from the caller: the clip norm S for clipped updates
(:math:`|x_\ell| \le \lVert x\rVert_2 \le S`, :func:`clipped_update_bound`), or
:math:`n_{\max}\cdot\max|w|` for sample-weighted FedAvg (:func:`weighted_fedavg_bound`);
with no declared bound there is none to give, and values beyond B are refused.

**Weighted FedAvg.** Hospital k masks :math:`(n_k x_k, n_k)` (the count is one
more ring element, :func:`weighted_payload`); the driver obtains
:math:`\sum_k n_k x_k` and :math:`\sum_k n_k` (:func:`split_weighted_sum`) and divides.

**What the driver learns.** The sum (and in the weighted case the total sample
count :math:`\sum_k n_k`), everything computable from them, and metadata: who
answered, when, and the vector length. Each :math:`y_i` alone is
computationally indistinguishable from uniform on :math:`R^L` for N >= 2,
because it contains at least one mask that the driver cannot compute from
public keys (CDH for X25519, HKDF and ChaCha20 as PRFs). Hospitals learn the sum
too (it is the next global model), so with N = 2 each learns the other's
update: inherent to any exact sum.

**Threat model and assumptions.** Honest-but-curious driver that relays keys
faithfully; honest-but-curious hospitals. A driver colluding with t hospitals
learns only the sum of the other N - t inputs. Out of scope: (a) an *active*
driver that substitutes public keys, which lets it share every pair key and
unmask everyone; defending needs authenticated keys (signatures under a PKI,
Bonawitz et al.'s active variant); (b) malicious hospitals sending values
beyond B or arbitrary ring elements (poisoning, wrapping the sum): no range
proofs; (c) timing and size side channels. Results other than the masked
vector (metrics, sample counts sent in the clear) are not protected here.

**Dropouts.** There is no Shamir secret sharing of keys and no self-mask, so a
hospital that never delivers leaves its pair masks in the sum: the attempt
cannot be decoded and :meth:`SecureAggregationSession.unmask_sum` refuses it.
fedray's policy is to retry the dead hospital; a permanently dead one aborts the round.

**Retries.** A retry is a new attempt for *all* participants
(:meth:`SecureAggregationSession.next_attempt`): fresh key pairs, and the
attempt counter in the HKDF info, so no mask is ever reused (the masks pair
with the dead hospital's old key anyway). Why: two messages under one mask,
:math:`y = E(v) + m` and :math:`y' = E(v') + m`, give :math:`y - y' = E(v) - E(v')`
in the clear; for a retrained update that is the update difference, and for one
update noised twice it is the noise difference, which with the sum shrinks
the noise the DP guarantee counts on. A :class:`ClientMasker` therefore masks once.
Each attempt should draw fresh noise; should a driver ever decode two attempts
of one round, each is a separate release for the accountant.

**Distributed DP (DP-FedAvg).** Hospital k adds
:math:`e_k \sim \mathcal N(0, (zS)^2/N \cdot I)` to its clipped update before
encoding (:func:`add_noise_share`); :math:`\sum_k e_k \sim \mathcal N(0, z^2S^2 I)`,
the noise central DP-FedAvg adds, but no party ever holds an un-noised sum.
Caveats: (1) the noise is a continuous Gaussian sampled in float64, then
rounded to the grid; rounding is post-processing and cannot weaken the
float mechanism, but the float mechanism is not the ideal Gaussian: low-order
bits of floating-point samples can leak the input (Mironov, CCS 2012), and a
grid 1/s finer than float spacing hides none of them. Kairouz, Liu and Steinke
(ICML 2021) avoid this with the *distributed discrete Gaussian* on integers
(random rotation, conditional randomized rounding, modular clipping, and an
accountant for sums of discrete Gaussians); that is not implemented here.
(2) A driver colluding with t hospitals subtracts their shares, leaving
variance :math:`(N-t)/N \cdot z^2S^2`. (3) The noise is unbounded: the value bound
adds :data:`NOISE_TAIL_SIGMAS` share deviations (a larger draw has probability
< 1e-88 per coordinate) and encoding refuses, never wraps, beyond it.
(4) Noise comes from a caller-supplied ``numpy.random.Generator``; by default
one seeded from OS entropy, secret but not a CSPRNG. A seeded generator makes
the noise known to whoever knows the seed: for tests only.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SIGNED_LIMIT = 2**63
NOISE_TAIL_SIGMAS = 20.0
# float32 clipping can overshoot the clip norm by one float32 rounding; this covers it.
CLIP_ROUNDOFF = 1e-6
KDF_LABEL = b"fedray/secure-aggregation/v1"
PUBLIC_KEY_BYTES = 32
# ChaCha20's 32-bit block counter allows 2^32 blocks of 64 bytes per key: 2^35 ring elements.
MAX_VECTOR_LENGTH = 2**35
PRG_CHUNK_ELEMENTS = 2**18  # keystream produced 2 MiB at a time, so masking never holds a second full vector

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class FixedPointCodec:
    """Encodes floats in [-B, B] into Z_{2^64} at scale s so that the sum of N encodings cannot overflow."""

    value_bound: float
    num_clients: int
    scale: float

    def __post_init__(self):
        if not (self.value_bound > 0 and math.isfinite(self.value_bound)):
            raise ValueError(f"value_bound={self.value_bound} must be a positive finite bound on |value|")
        if self.num_clients < 1:
            raise ValueError(f"num_clients={self.num_clients} must be at least 1")
        if not (self.scale > 0 and math.isfinite(self.scale) and math.frexp(self.scale)[0] == 0.5):
            raise ValueError(f"scale={self.scale} must be a positive power of two, so that s*x is exact in float64")
        worst_sum = self.num_clients * (Fraction(self.value_bound) * Fraction(self.scale) + Fraction(1, 2))
        if worst_sum >= SIGNED_LIMIT:
            raise ValueError(
                f"fixed-point overflow: {self.num_clients} clients x (bound {self.value_bound} x scale "
                f"{self.scale} + 1/2) = {float(worst_sum):.3g} >= 2^63, so the ring sum could wrap; "
                f"lower the scale or the bound (FixedPointCodec.for_bound picks the largest safe scale)")

    @classmethod
    def for_bound(cls, value_bound: float, num_clients: int) -> FixedPointCodec:
        """The codec with the largest power-of-two scale s such that N(Bs + 1/2) < 2^63."""
        if not (value_bound > 0 and math.isfinite(value_bound)) or num_clients < 1:
            raise ValueError(f"need a positive finite value_bound and num_clients >= 1, "
                             f"got {value_bound} and {num_clients}")
        exponent = math.floor(math.log2((SIGNED_LIMIT / num_clients) / value_bound))
        while num_clients * (Fraction(value_bound) * Fraction(2) ** exponent + Fraction(1, 2)) >= SIGNED_LIMIT:
            exponent -= 1  # log2 in float can land one too high near a power of two
        return cls(value_bound=value_bound, num_clients=num_clients, scale=math.ldexp(1.0, exponent))

    @property
    def max_sum_error(self) -> float:
        """Worst rounding error per coordinate of a decoded sum of N encodings: N/(2s)."""
        return self.num_clients / (2 * self.scale)

    def encode(self, vector: np.ndarray) -> np.ndarray:
        """rint(s x) as uint64 (two's complement); ValueError if any |x| > B or x is not finite."""
        values = np.asarray(vector, dtype=np.float64)
        # max and min rather than abs: no temporary the size of the vector; NaN propagates through both
        largest = max(float(np.max(values)), -float(np.min(values))) if values.size else 0.0
        if not math.isfinite(largest):
            raise ValueError("cannot encode NaN or infinite values: check the update before aggregation")
        if largest > self.value_bound:
            raise ValueError(
                f"value {largest:.6g} exceeds the declared bound {self.value_bound:.6g}: the sum of "
                f"{self.num_clients} encodings could overflow the ring; clip the update or declare a larger bound")
        scaled = values * self.scale  # exact: s is a power of two
        return np.rint(scaled, out=scaled).astype(np.int64).view(np.uint64)

    def decode_sum(self, ring_sum: np.ndarray) -> np.ndarray:
        """The float64 sum from the ring sum of N encodings (its signed representative over s)."""
        decoded = np.asarray(ring_sum, dtype=np.uint64).view(np.int64).astype(np.float64)
        decoded /= self.scale
        return decoded


def clipped_update_bound(clip_norm: float, *, noise_multiplier: float = 0.0, num_clients: int = 1) -> float:
    """Bound B on |coordinate| of an update clipped to L2 norm S, plus NOISE_TAIL_SIGMAS shares of noise."""
    share_std = noise_multiplier * clip_norm / math.sqrt(num_clients)
    return clip_norm * (1 + CLIP_ROUNDOFF) + NOISE_TAIL_SIGMAS * share_std


def weighted_fedavg_bound(*, max_abs_value: float, max_samples: int) -> float:
    """Bound B for weighted payloads (n_k x_k, n_k) given declared max |x| and max n_k."""
    return max_samples * max(max_abs_value, 1.0)


def weighted_payload(vector: np.ndarray, num_samples: int) -> np.ndarray:
    """(n_k x_k, n_k): the vector a hospital masks for sample-weighted FedAvg."""
    return np.append(num_samples * np.asarray(vector, dtype=np.float64), float(num_samples))


def split_weighted_sum(total: np.ndarray) -> tuple[np.ndarray, float]:
    """(Σ n_k x_k, Σ n_k) from the decoded sum of weighted payloads; the mean is their quotient."""
    return total[:-1], float(total[-1])


def add_noise_share(update: np.ndarray, *, clip_norm: float, noise_multiplier: float, num_clients: int,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """``update`` + N(0, (zS)^2/N): one hospital's share of DP-FedAvg's noise N(0, z^2 S^2) on the sum.

    ``rng=None`` draws from a generator seeded from OS entropy (secret); a
    seeded generator makes the noise reproducible, and known to its owner.
    """
    generator = rng if rng is not None else np.random.default_rng()
    share_std = noise_multiplier * clip_norm / math.sqrt(num_clients)
    values = np.asarray(update, dtype=np.float64)
    return values + generator.normal(0.0, share_std, size=values.shape)


@dataclass(frozen=True)
class ParamSpec:
    """Where one named tensor sits in the flat vector."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


def flatten_params(params: Mapping[str, np.ndarray],
                   spec: Sequence[ParamSpec] | None = None) -> tuple[np.ndarray, tuple[ParamSpec, ...]]:
    """One float64 vector of ``params`` in ``spec``'s order (default: the mapping's order), and the spec.

    Every hospital must flatten in the same order: pass the driver's spec.
    """
    if spec is None:
        spec = tuple(ParamSpec(name, tuple(np.shape(v)), np.asarray(v).dtype) for name, v in params.items())
    if set(params) != {entry.name for entry in spec}:
        raise ValueError(f"parameter names {sorted(params)} do not match the spec {[e.name for e in spec]}")
    for entry in spec:
        if tuple(np.shape(params[entry.name])) != entry.shape:
            raise ValueError(f"{entry.name} has shape {np.shape(params[entry.name])}, the spec says {entry.shape}")
    parts = [np.asarray(params[entry.name], dtype=np.float64).ravel() for entry in spec]
    return (np.concatenate(parts) if parts else np.zeros(0)), tuple(spec)


def unflatten(vector: np.ndarray, spec: Sequence[ParamSpec]) -> Params:
    """Inverse of :func:`flatten_params`; integer tensors are rounded, as in weighted_average."""
    sizes = [math.prod(entry.shape) for entry in spec]
    if len(vector) != sum(sizes):
        raise ValueError(f"vector has {len(vector)} entries, the spec describes {sum(sizes)}")
    out: Params = {}
    for entry, chunk in zip(spec, np.split(np.asarray(vector), np.cumsum(sizes)[:-1])):
        values = chunk.reshape(entry.shape)
        out[entry.name] = (np.rint(values) if np.issubdtype(entry.dtype, np.integer) else values).astype(entry.dtype)
    return out


def derive_pair_key(shared_secret: bytes, *, session_id: bytes, round_idx: int, attempt: int,
                    client_a: int, client_b: int, public_key_a: bytes, public_key_b: bytes) -> bytes:
    """HKDF-SHA256 key of pair {a, b}, bound to session, round, attempt, sorted ids and their public keys."""
    (low, low_key), (high, high_key) = sorted([(client_a, public_key_a), (client_b, public_key_b)])
    info = KDF_LABEL + struct.pack(">QQqq", round_idx, attempt, low, high) + low_key + high_key
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=session_id, info=info).derive(shared_secret)


def _apply_mask(target: np.ndarray, pair_key: bytes, *, add: bool) -> None:
    """target ± (ChaCha20 keystream of pair_key as little-endian uint64), in place, mod 2^64."""
    keystream = Cipher(algorithms.ChaCha20(pair_key, bytes(16)), mode=None).encryptor()
    zeros = bytes(8 * min(PRG_CHUNK_ELEMENTS, len(target)))
    for start in range(0, len(target), PRG_CHUNK_ELEMENTS):
        stop = min(start + PRG_CHUNK_ELEMENTS, len(target))
        words = np.frombuffer(keystream.update(zeros[: 8 * (stop - start)]), dtype="<u8")
        if add:
            target[start:stop] += words
        else:
            target[start:stop] -= words


@dataclass(frozen=True)
class SecureAggregationSession:
    """Public parameters of one attempt of one round; the driver creates it and sends it to every hospital.

    ``session_id`` (random by default; the driver may keep one per run and
    pass it on) salts the KDF so that runs never share masks; ``value_bound`` (B) and ``scale`` (default: the largest safe one)
    fix the codec. Picklable, so it travels to Ray actors as it is.
    """

    participants: tuple[int, ...]
    round_idx: int
    attempt: int
    vector_length: int
    value_bound: float
    session_id: bytes = field(default_factory=lambda: os.urandom(16))
    scale: float | None = None
    sum_of_one: bool = False  # a lone participant may 'sum' (no masks): only for payloads noised in full

    def __post_init__(self):
        fewest = 1 if self.sum_of_one else 2
        if len(set(self.participants)) != len(self.participants) or len(self.participants) < fewest:
            raise ValueError(f"participants {self.participants} must be at least {fewest} distinct ids: "
                             f"with one, the 'sum' is that hospital's update")
        if min(self.participants) < 0 or self.round_idx < 0 or self.attempt < 0:
            raise ValueError("participant ids, round_idx and attempt must be non-negative")
        if not 0 < self.vector_length <= MAX_VECTOR_LENGTH:
            raise ValueError(f"vector_length={self.vector_length} must be in [1, 2^35] (ChaCha20 stream limit)")
        _ = self.codec  # building the codec checks for overflow: fail here, not at the first mask

    @property
    def num_clients(self) -> int:
        return len(self.participants)

    @property
    def codec(self) -> FixedPointCodec:
        if self.scale is None:
            return FixedPointCodec.for_bound(self.value_bound, self.num_clients)
        return FixedPointCodec(value_bound=self.value_bound, num_clients=self.num_clients, scale=self.scale)

    def next_attempt(self) -> SecureAggregationSession:
        """The session of a retry: same round, attempt + 1, so every hospital re-keys and re-masks."""
        return replace(self, attempt=self.attempt + 1)

    def unmask_sum(self, masked: Mapping[int, np.ndarray]) -> np.ndarray:
        """Σ_i x_i (float64) from every participant's masked vector; the masks cancel in the ring sum."""
        missing = sorted(set(self.participants) - set(masked))
        if missing or len(masked) != self.num_clients:
            raise ValueError(
                f"round {self.round_idx} attempt {self.attempt}: masked vectors from {sorted(masked)}, expected "
                f"{sorted(self.participants)}; missing {missing}. Without every participant the pairwise masks "
                f"do not cancel (no dropout recovery): retry with session.next_attempt()")
        ring_sum = np.zeros(self.vector_length, dtype=np.uint64)
        for client, vector in masked.items():
            if vector.dtype != np.uint64 or vector.shape != (self.vector_length,):
                raise ValueError(f"client {client} sent {vector.dtype} of shape {vector.shape}, "
                                 f"expected uint64 of shape ({self.vector_length},)")
            ring_sum += vector  # uint64 addition wraps: arithmetic mod 2^64
        return self.codec.decode_sum(ring_sum)


class ClientMasker:
    """One hospital's side of one attempt: a fresh X25519 key pair, pair keys, and a single masked vector."""

    def __init__(self, session: SecureAggregationSession, client_id: int):
        if client_id not in session.participants:
            raise ValueError(f"client {client_id} is not among the participants {session.participants}")
        self.session = session
        self.client_id = client_id
        self._private_key: X25519PrivateKey | None = X25519PrivateKey.generate()
        self.public_key: bytes = self._private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._pair_keys: dict[int, bytes] | None = None
        self._masked_once = False

    def agree(self, public_keys: Mapping[int, bytes]) -> None:
        """Derive the pair key with every other participant from the relayed map {client id: public key}."""
        if self._private_key is None:
            raise RuntimeError("keys already agreed for this attempt: create a new ClientMasker to re-key")
        if set(public_keys) != set(self.session.participants):
            raise ValueError(f"public keys for {sorted(public_keys)}, expected {sorted(self.session.participants)}")
        if public_keys[self.client_id] != self.public_key:
            raise ValueError(f"the relayed key of client {self.client_id} is not its own: the relay is broken")
        if len(set(public_keys.values())) != len(public_keys):
            raise ValueError("two participants relayed the same public key: keys must be fresh per client")
        pair_keys = {}
        for peer, peer_key in public_keys.items():
            if peer == self.client_id:
                continue
            if len(peer_key) != PUBLIC_KEY_BYTES:
                raise ValueError(f"public key of client {peer} has {len(peer_key)} bytes, expected 32")
            shared = self._private_key.exchange(X25519PublicKey.from_public_bytes(peer_key))
            pair_keys[peer] = derive_pair_key(
                shared, session_id=self.session.session_id, round_idx=self.session.round_idx,
                attempt=self.session.attempt, client_a=self.client_id, client_b=peer,
                public_key_a=self.public_key, public_key_b=peer_key)
        self._pair_keys = pair_keys
        self._private_key = None  # nothing needs it any more; one fewer secret to hold

    def mask(self, vector: np.ndarray) -> np.ndarray:
        """E(x) + Σ_{j>i} m_ij - Σ_{j<i} m_ji (mod 2^64): the only thing this hospital sends. Once per attempt."""
        if self._pair_keys is None:
            raise RuntimeError("call agree(public_keys) before mask()")
        if self._masked_once:
            raise RuntimeError("this attempt's masks are spent: two vectors under one mask reveal their "
                               "difference; retry with session.next_attempt() and a new ClientMasker")
        if np.shape(vector) != (self.session.vector_length,):
            raise ValueError(f"vector has shape {np.shape(vector)}, "
                             f"the session expects ({self.session.vector_length},)")
        masked = self.session.codec.encode(vector)
        self._masked_once = True  # from here on this attempt's masks count as used
        for peer, pair_key in sorted(self._pair_keys.items()):
            _apply_mask(masked, pair_key, add=self.client_id < peer)
        return masked
