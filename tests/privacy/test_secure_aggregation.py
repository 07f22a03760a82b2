"""Secure aggregation (fedray.privacy.secure_aggregation): exact cancellation, codec error, what the driver sees.

The keys are real X25519 key pairs drawn from the OS, so the masks differ on
every run. The uniformity check therefore holds its false-alarm rate to 1e-6
for the whole test (Bonferroni over the hospitals; a p-value is uniform when
the payload is), which an unmasked payload still fails by hundreds of orders
of magnitude. The DP check uses fixed test generators, so its noise is
reproducible.
"""

import numpy as np
import pytest
from scipy import stats

from fedray.privacy.secure_aggregation import (
    ClientMasker,
    FixedPointCodec,
    SecureAggregationSession,
    add_noise_share,
    clipped_update_bound,
    derive_pair_key,
    flatten_params,
    split_weighted_sum,
    unflatten,
    weighted_fedavg_bound,
    weighted_payload,
)

NUM_CLIENTS = 5


def run_protocol(session: SecureAggregationSession, vectors: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """One attempt as hospitals and driver run it: keys -> relay -> agree -> mask; returns what the driver holds."""
    maskers = {k: ClientMasker(session, k) for k in session.participants}
    relayed = {k: m.public_key for k, m in maskers.items()}  # the driver's relay
    for masker in maskers.values():
        masker.agree(relayed)
    return {k: maskers[k].mask(vectors[k]) for k in session.participants}


def clipped_updates(rng: np.random.Generator, length: int, clip_norm: float = 1.0) -> dict[int, np.ndarray]:
    updates = {}
    for k in range(NUM_CLIENTS):
        raw = rng.normal(size=length) * rng.uniform(0.1, 3.0)
        updates[k] = raw * min(1.0, clip_norm / np.linalg.norm(raw))
    return updates


def session_for(length: int, bound: float, **kwargs) -> SecureAggregationSession:
    return SecureAggregationSession(participants=tuple(range(NUM_CLIENTS)), round_idx=kwargs.pop("round_idx", 3),
                                    attempt=kwargs.pop("attempt", 0), vector_length=length, value_bound=bound,
                                    **kwargs)


def float_sum_tolerance(codec: FixedPointCodec) -> float:
    """The documented N/(2s), plus float64 rounding of summing N values of size <= B."""
    return codec.max_sum_error + 4 * NUM_CLIENTS * np.finfo(np.float64).eps * codec.value_bound


@pytest.mark.parametrize("scale", [None, 2.0**10])
def test_masks_cancel_exactly_and_decoded_sum_is_within_the_documented_error(scale):
    updates = clipped_updates(np.random.default_rng(0), 3000)
    session = session_for(3000, clipped_update_bound(1.0), scale=scale)
    masked = run_protocol(session, updates)

    ring_sum_masked = np.sum(np.stack(list(masked.values())), axis=0, dtype=np.uint64)
    ring_sum_plain = np.sum(np.stack([session.codec.encode(u) for u in updates.values()]), axis=0, dtype=np.uint64)
    assert np.array_equal(ring_sum_masked, ring_sum_plain)

    error = np.abs(session.unmask_sum(masked) - np.sum(list(updates.values()), axis=0))
    assert error.max() <= float_sum_tolerance(session.codec)
    if scale is not None:  # a coarse grid: the rounding error is real, and the bound holds
        assert error.max() > 0.1 * session.codec.max_sum_error


def test_weighted_fedavg_recovers_weighted_sum_and_total_count():
    rng = np.random.default_rng(1)
    params = {k: rng.uniform(-2.0, 2.0, size=500) for k in range(NUM_CLIENTS)}
    counts = {0: 120, 1: 7, 2: 3000, 3: 455, 4: 1}
    bound = weighted_fedavg_bound(max_abs_value=2.0, max_samples=5000)
    session = session_for(501, bound)
    masked = run_protocol(session, {k: weighted_payload(params[k], counts[k]) for k in params})

    weighted_sum, total_samples = split_weighted_sum(session.unmask_sum(masked))
    assert total_samples == sum(counts.values())
    expected = sum(counts[k] * params[k] for k in params)
    np.testing.assert_allclose(weighted_sum, expected, rtol=0, atol=float_sum_tolerance(session.codec))
    np.testing.assert_allclose(weighted_sum / total_samples, expected / sum(counts.values()), rtol=1e-12)


def test_each_masked_payload_looks_uniform_and_uncorrelated_with_its_update():
    length = 20_000
    ramp = np.linspace(-0.9, 0.9, length)  # a highly structured update: its plain encoding is the ramp itself
    updates = {k: ramp * (k + 1) / NUM_CLIENTS for k in range(NUM_CLIENTS)}
    session = session_for(length, 1.0)
    masked = run_protocol(session, updates)
    per_hospital_alarm = 1e-6 / NUM_CLIENTS

    def byte_uniformity_pvalue(payload: np.ndarray) -> float:
        return stats.chisquare(np.bincount(payload.view(np.uint8), minlength=256)).pvalue

    for k, payload in masked.items():
        assert byte_uniformity_pvalue(payload) > per_hospital_alarm, f"hospital {k}'s bytes are not uniform"
        as_signed = payload.view(np.int64).astype(np.float64)
        assert abs(stats.pearsonr(as_signed, updates[k]).statistic) < 0.05
        plain = session.codec.encode(updates[k]).view(np.int64).astype(np.float64)
        assert stats.pearsonr(plain, updates[k]).statistic > 0.999  # what the driver would see without masks
        assert byte_uniformity_pvalue(session.codec.encode(updates[k])) < per_hospital_alarm


def test_fresh_keys_per_round_and_attempt_give_different_masks():
    secret = bytes(range(32))
    keys = dict(public_key_a=b"A" * 32, public_key_b=b"B" * 32)
    base = derive_pair_key(secret, session_id=b"s" * 16, round_idx=1, attempt=0, client_a=0, client_b=1, **keys)
    assert base == derive_pair_key(secret, session_id=b"s" * 16, round_idx=1, attempt=0, client_a=1, client_b=0,
                                   public_key_a=keys["public_key_b"], public_key_b=keys["public_key_a"])
    for change in [dict(round_idx=2), dict(attempt=1), dict(session_id=b"t" * 16)]:
        args = dict(session_id=b"s" * 16, round_idx=1, attempt=0) | change
        assert derive_pair_key(secret, client_a=0, client_b=1, **args, **keys) != base

    update = {k: np.full(1000, 0.25) for k in range(NUM_CLIENTS)}
    session = session_for(1000, 1.0)
    payloads = [run_protocol(s, update)[0] for s in
                (session, session, session.next_attempt(), session_for(1000, 1.0, round_idx=4))]
    for i in range(len(payloads)):
        for j in range(i):
            assert np.mean(payloads[i] == payloads[j]) < 0.01


def test_a_masker_masks_only_once():
    session = session_for(10, 1.0)
    maskers = [ClientMasker(session, k) for k in range(NUM_CLIENTS)]
    for m in maskers:
        m.agree({k: maskers[k].public_key for k in range(NUM_CLIENTS)})
    maskers[0].mask(np.zeros(10))
    with pytest.raises(RuntimeError, match="next_attempt"):
        maskers[0].mask(np.ones(10))


def test_overflow_and_out_of_bound_values_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="fixed-point overflow.*2\\^63"):
        FixedPointCodec(value_bound=1.0, num_clients=NUM_CLIENTS, scale=2.0**61)
    with pytest.raises(ValueError, match="fixed-point overflow"):
        session_for(10, 1.0, scale=2.0**61)
    codec = FixedPointCodec.for_bound(1.0, NUM_CLIENTS)
    assert NUM_CLIENTS * (codec.value_bound * codec.scale + 0.5) < 2.0**63 <= NUM_CLIENTS * 2 * codec.scale
    with pytest.raises(ValueError, match="exceeds the declared bound"):
        codec.encode(np.array([0.5, -1.5]))
    with pytest.raises(ValueError, match="NaN"):
        codec.encode(np.array([np.nan]))


def test_the_driver_refuses_to_decode_without_every_hospital():
    session = session_for(10, 1.0)
    masked = run_protocol(session, {k: np.zeros(10) for k in range(NUM_CLIENTS)})
    del masked[2]
    with pytest.raises(ValueError, match=r"missing \[2\].*next_attempt"):
        session.unmask_sum(masked)


def test_agree_rejects_a_broken_relay():
    session = session_for(10, 1.0)
    maskers = [ClientMasker(session, k) for k in range(NUM_CLIENTS)]
    relayed = {k: m.public_key for k, m in enumerate(maskers)}
    with pytest.raises(ValueError, match="not its own"):
        maskers[0].agree(relayed | {0: maskers[1].public_key})
    with pytest.raises(ValueError, match="expected"):
        maskers[0].agree({k: v for k, v in relayed.items() if k != 3})


def test_distributed_noise_sums_to_the_central_dp_fedavg_noise():
    clip_norm, noise_multiplier, length = 0.5, 1.3, 40_000
    updates = clipped_updates(np.random.default_rng(2), length, clip_norm)
    noisy = {k: add_noise_share(u, clip_norm=clip_norm, noise_multiplier=noise_multiplier, num_clients=NUM_CLIENTS,
                                rng=np.random.default_rng([1234, k]))
             for k, u in updates.items()}
    share_std = np.std(noisy[0] - updates[0])
    assert share_std == pytest.approx(noise_multiplier * clip_norm / np.sqrt(NUM_CLIENTS), rel=0.03)

    bound = clipped_update_bound(clip_norm, noise_multiplier=noise_multiplier, num_clients=NUM_CLIENTS)
    session = session_for(length, bound)
    noise = session.unmask_sum(run_protocol(session, noisy)) - np.sum(list(updates.values()), axis=0)
    assert np.std(noise) == pytest.approx(noise_multiplier * clip_norm, rel=0.03)
    assert abs(np.mean(noise)) < 4 * noise_multiplier * clip_norm / np.sqrt(length)


def test_flatten_and_unflatten_round_trip_in_the_drivers_order():
    params = {"conv.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "bn.count": np.array(7, dtype=np.int64)}
    vector, spec = flatten_params(params)
    assert vector.dtype == np.float64 and vector.shape == (7,)
    reordered = {"bn.count": params["bn.count"], "conv.weight": params["conv.weight"]}
    assert np.array_equal(flatten_params(reordered, spec)[0], vector)
    restored = unflatten(vector, spec)
    assert all(restored[n].dtype == params[n].dtype and np.array_equal(restored[n], params[n]) for n in params)
    with pytest.raises(ValueError, match="shape"):
        flatten_params({"conv.weight": np.zeros(6), "bn.count": np.array(1)}, spec)
