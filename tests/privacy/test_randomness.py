"""DP randomness: secret streams nobody holding the config can regenerate; reproducible streams only on request."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fedray.errors import FedrayError
from fedray.privacy import randomness
from fedray.privacy.randomness import (
    AUDITOR, DRIVER, REPRODUCIBLE_DESCRIPTION, SECRET_DESCRIPTION, NoiseSource, Purpose, hospital, new_release_key,
)

PARTIES = [hospital(0), hospital(1), DRIVER, AUDITOR]


def _draws(generator: np.random.Generator) -> tuple:
    return tuple(generator.integers(0, 2**63, size=4))


def test_every_reproducible_stream_differs_across_parties_rounds_purposes_and_indices():
    seen = {}
    for party, round_idx, purpose, index in itertools.product(PARTIES, range(3), Purpose, range(2)):
        seen[(party, round_idx, purpose, index)] = _draws(
            NoiseSource.reproducible(7, party).numpy_generator(round_idx, purpose, index))
    for party, purpose in itertools.product(PARTIES, Purpose):
        seen[(party, "release", purpose)] = _draws(NoiseSource.reproducible(7, party).release_generator(purpose))
    assert len(set(seen.values())) == len(seen)


def test_reproducible_streams_replay_exactly_as_after_a_restart():
    first, restarted = NoiseSource.reproducible(3, hospital(2)), NoiseSource.reproducible(3, hospital(2))
    assert _draws(first.numpy_generator(4, Purpose.DPSGD_NOISE)) == _draws(
        restarted.numpy_generator(4, Purpose.DPSGD_NOISE))
    a = torch.randn(5, generator=first.torch_generator(4, Purpose.POISSON_SAMPLING))
    b = torch.randn(5, generator=restarted.torch_generator(4, Purpose.POISSON_SAMPLING))
    assert torch.equal(a, b)
    assert _draws(first.release_generator(Purpose.LAPLACE_FEATURES)) == _draws(
        restarted.release_generator(Purpose.LAPLACE_FEATURES))
    other_seed = NoiseSource.reproducible(4, hospital(2))
    assert _draws(first.numpy_generator(4, Purpose.DPSGD_NOISE)) != _draws(
        other_seed.numpy_generator(4, Purpose.DPSGD_NOISE))


def test_secret_streams_are_fresh_on_every_request_and_differ_between_sources():
    source, other = NoiseSource.secret(hospital(0)), NoiseSource.secret(hospital(0))
    assert _draws(source.numpy_generator(1, Purpose.DPSGD_NOISE)) != _draws(
        source.numpy_generator(1, Purpose.DPSGD_NOISE))
    assert _draws(source.numpy_generator(1, Purpose.DPSGD_NOISE)) != _draws(
        other.numpy_generator(1, Purpose.DPSGD_NOISE))
    a = torch.rand(4, generator=source.torch_generator(1, Purpose.POISSON_SAMPLING))
    b = torch.rand(4, generator=source.torch_generator(1, Purpose.POISSON_SAMPLING))
    assert not torch.equal(a, b)


def test_nothing_in_secret_mode_depends_on_the_config_seed(monkeypatch):
    monkeypatch.setattr(randomness, "_os_entropy", lambda: 12345)  # the OS's bits held fixed: only the seed varies
    secret_cfg = {"name": "dpsgd", "reproducible_noise": False}
    a = NoiseSource.from_config(secret_cfg, seed=0, party=hospital(1))
    b = NoiseSource.from_config(secret_cfg, seed=987654, party=hospital(1))
    assert not a.is_reproducible and a.seed is None
    assert _draws(a.numpy_generator(2, Purpose.DPSGD_NOISE)) == _draws(b.numpy_generator(2, Purpose.DPSGD_NOISE))
    assert torch.equal(torch.rand(3, generator=a.torch_generator(2, Purpose.DPSGD_NOISE)),
                       torch.rand(3, generator=b.torch_generator(2, Purpose.DPSGD_NOISE)))


def test_from_config_is_secret_unless_reproducible_noise_is_asked_for():
    assert not NoiseSource.from_config(None, seed=1, party=DRIVER).is_reproducible
    assert not NoiseSource.from_config({"name": "dpsgd"}, seed=1, party=DRIVER).is_reproducible
    reproducible = NoiseSource.from_config({"reproducible_noise": True}, seed=1, party=DRIVER)
    assert reproducible.is_reproducible and reproducible.seed == 1
    section = SimpleNamespace(name="dpsgd", reproducible_noise=True)  # an attribute-style config section
    assert NoiseSource.from_config(section, seed=2, party=DRIVER).seed == 2


def test_a_secret_release_depends_on_the_hospitals_release_key_alone():
    key = new_release_key()
    first = NoiseSource.secret(hospital(0), release_key=key)
    restarted = NoiseSource.secret(hospital(0), release_key=key)
    labels = _draws(first.release_generator(Purpose.LABEL_RESPONSE))
    assert labels == _draws(restarted.release_generator(Purpose.LABEL_RESPONSE))
    assert labels != _draws(first.release_generator(Purpose.LAPLACE_FEATURES))
    assert labels != _draws(NoiseSource.secret(hospital(1), release_key=key).release_generator(Purpose.LABEL_RESPONSE))
    assert labels != _draws(NoiseSource.secret(hospital(0), release_key=new_release_key())
                            .release_generator(Purpose.LABEL_RESPONSE))
    tree = first.release_random_state(Purpose.DP_TREE, index=3)
    assert isinstance(tree, np.random.RandomState)
    assert tree.randint(2**31) == restarted.release_random_state(Purpose.DP_TREE, index=3).randint(2**31)


def test_a_secret_release_without_a_key_is_refused():
    with pytest.raises(FedrayError, match="release key"):
        NoiseSource.secret(hospital(0)).release_generator(Purpose.LAPLACE_FEATURES)


def test_the_release_key_stays_out_of_the_repr_and_release_keys_are_128_bit():
    key = new_release_key()
    assert str(key) not in repr(NoiseSource.secret(hospital(0), release_key=key))
    assert max(new_release_key() for _ in range(64)).bit_length() > 120


def test_descriptions_for_the_ledger():
    assert NoiseSource.secret(DRIVER).description == SECRET_DESCRIPTION == "noise secret (OS entropy)"
    assert NoiseSource.reproducible(0, DRIVER).description == REPRODUCIBLE_DESCRIPTION
    assert "no guarantee" in REPRODUCIBLE_DESCRIPTION


def test_invalid_sources_and_keys_are_user_errors():
    with pytest.raises(FedrayError):
        NoiseSource(party=DRIVER, seed=1, release_key=2)
    with pytest.raises(FedrayError):
        NoiseSource.reproducible(-1, DRIVER)
    with pytest.raises(FedrayError):
        NoiseSource.reproducible(0, DRIVER).numpy_generator(-1, Purpose.INSERTION)
    with pytest.raises(ValueError):
        NoiseSource.reproducible(0, DRIVER).numpy_generator(0, 99)
    with pytest.raises(FedrayError):
        hospital(-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_generators_are_seeded_and_reproducible():
    source = NoiseSource.reproducible(5, hospital(0))
    a = torch.randn(8, device="cuda", generator=source.torch_generator(1, Purpose.DPSGD_NOISE, "cuda"))
    b = torch.randn(8, device="cuda", generator=source.torch_generator(1, Purpose.DPSGD_NOISE, "cuda"))
    assert torch.equal(a, b)
    secret = NoiseSource.secret(hospital(0))
    c = torch.randn(8, device="cuda", generator=secret.torch_generator(1, Purpose.DPSGD_NOISE, "cuda"))
    d = torch.randn(8, device="cuda", generator=secret.torch_generator(1, Purpose.DPSGD_NOISE, "cuda"))
    assert not torch.equal(c, d)
