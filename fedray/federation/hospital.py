"""A hospital: the party that holds only its own patients' records (images or table rows).

It is built with its two shards (training, validation), in a Ray actor
(:class:`~fedray.federation.pool.Host`, which fetches the shards from the
object store) or in process. Each round it receives the global parameters,
trains locally, and returns a :class:`~fedray.strategies.ClientResult`; the
driver reaches it only through :mod:`fedray.federation.proxy`.

What leaves the hospital is decided by the privacy plan's declared releases
(``plan.hospital_releases(k)``, :mod:`fedray.privacy.mechanisms`): without a
DP claim, parameters, sample count, training metrics and metrics on its own
validation shard; under a DP mechanism only what its releases cover (noised
parameters, or parameters trained on privatised records, the public count
and record-independent counters). The proxy checks every message against the
same allowlist.

Other parties may hand it ``attachments`` (:class:`fedray.training.hooks.Attachment`):
each builds a gradient hook on its trainer, drawing from the hospital's own
randomness; an audit hands it only what it inserted at this hospital.

DP randomness comes from the hospital's own
:class:`~fedray.privacy.randomness.NoiseSource`: secret by default, with a
``release_key`` the launcher created from OS entropy for one-time releases,
which it hands to this hospital alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fedray.config import Config
from fedray.data.input_map import input_map_from_state
from fedray.errors import FedrayError
from fedray.metrics import classification_metrics
from fedray.privacy.bias_calibration import CALIBRATION_FIELD, prediction_sum
from fedray.privacy.secure_round import SecureRound
from fedray.privacy.randomness import NoiseSource, Purpose, hospital as hospital_party
from fedray.privacy.secure_aggregation import ClientMasker, SecureAggregationSession
from fedray.privacy.mechanisms import Mechanism
from fedray.strategies import ClientResult
from fedray.training import build_trainer
from fedray.training.device import configure_process
from fedray.training.hooks import Attachment
from fedray.training.together import fit_together

Params = dict[str, np.ndarray]


class HospitalError(Exception):
    """A hospital's own failure (bad hyper-parameters, a diverged loss), reported in one line with its id."""


class Hospital:
    """One hospital's training and validation data, model and (optionally) DP accountant."""

    def __init__(
        self,
        *,
        hospital_id: int,
        train_shard: dict,
        val_shard: dict,
        cfg: Config,
        plan: Mechanism,
        input_map_state: dict,
        num_classes: int,
        num_features: int | None,
        resources: dict,
        release_key: int | None,
        attachments: tuple[Attachment, ...] = (),
    ):
        self.hospital_id = hospital_id
        self.device = configure_process(
            num_cpus=resources["num_cpus"], num_gpus=resources["num_gpus"], seed=cfg.seed + hospital_id
        )
        party = hospital_party(hospital_id)
        noise = (NoiseSource.reproducible(cfg.seed, party) if cfg.privacy.reproducible_noise
                 else NoiseSource.secret(party, release_key=release_key))
        self.plan = plan
        self.releases = plan.hospital_releases(hospital_id)
        self.noise = noise
        self.pending: tuple | None = None  # secure aggregation: (round, start params, trained params) not yet masked
        self.masker: ClientMasker | None = None
        self.trainer = self._guard(lambda: build_trainer(
            cfg=cfg, plan=plan, num_classes=num_classes, num_features=num_features,
            inputs=train_shard["inputs"], labels=train_shard["labels"],
            input_map=input_map_from_state(input_map_state), device=self.device, hospital=hospital_id, noise=noise,
        ), "setting up")
        for attachment in attachments:
            self.trainer.gradient_hooks.append(self._guard(lambda: attachment.attach(self.trainer, noise), "setting up"))
        self.val_inputs = self.trainer.encode(val_shard["inputs"])
        self.val_labels = val_shard["labels"]
        self.local_epochs = cfg.fl.local_epochs

    def fit(self, params: Params, round_idx: int) -> ClientResult:
        new_params, metrics = self._guard(
            lambda: self.trainer.fit(params, epochs=self.local_epochs, round_idx=round_idx), f"round {round_idx}")
        return self._result(new_params, metrics, round_idx)

    @staticmethod
    def fit_together(hospitals: list[Hospital], starts: list[Params], round_idx: int) -> list[ClientResult]:
        """Each hospital's :meth:`fit` from its start parameters, trained in lockstep in this process
        (:mod:`fedray.training.together`): the same results to float tolerance, each released as ``fit`` would."""
        first = hospitals[0]
        trained = first._guard(lambda: fit_together([h.trainer for h in hospitals], starts,
                                                    epochs=first.local_epochs, round_idx=round_idx),
                               f"round {round_idx}, training together with hospitals "
                               f"{', '.join(str(h.hospital_id) for h in hospitals[1:])}")
        return [h._result(params, metrics, round_idx) for h, (params, metrics) in zip(hospitals, trained)]

    @staticmethod
    def evaluate_together(hospitals: list[Hospital], params: list[Params]) -> list[dict]:
        """Each hospital's :meth:`evaluate` of its model, in one turn (no Ray task per hospital)."""
        return [h.evaluate(p) for h, p in zip(hospitals, params)]

    def _result(self, new_params: Params, metrics: dict, round_idx: int) -> ClientResult:
        """This round's message: the trained parameters and what the releases cover of the metrics and reports."""
        if not all(np.isfinite(v).all() for v in new_params.values() if np.issubdtype(v.dtype, np.floating)):
            raise HospitalError(f"hospital {self.hospital_id}: training diverged in round {round_idx} (non-finite "
                                "parameters): lower train.lr")
        metrics = {k: v for k, v in metrics.items() if self.releases.covers(f"metrics.{k}")}
        reports = (hook.round_report() for hook in self.trainer.gradient_hooks)
        return ClientResult(hospital=self.hospital_id, params=new_params, metrics=metrics,
                            num_samples=self.plan.declared_count(self.hospital_id, self.trainer.num_samples),
                            observations=dict(report for report in reports if report is not None))

    def secure_fit(self, params: Params, round_idx: int, session: SecureAggregationSession) -> bytes:
        """Secure aggregation, step 1: train (once per round; a new attempt reuses the update) and key a fresh masker.

        Returns this attempt's public X25519 key, which the driver relays to every hospital.
        """
        if self.pending is None or self.pending[0] != round_idx:
            new_params, _ = self._guard(
                lambda: self.trainer.fit(params, epochs=self.local_epochs, round_idx=round_idx), f"round {round_idx}")
            self.pending = (round_idx, params, new_params)
        self.masker = ClientMasker(session, self.hospital_id)
        return self.masker.public_key

    def secure_mask(self, public_keys: dict[int, bytes], secure: SecureRound) -> np.ndarray:
        """Secure aggregation, step 2: agree on the pair keys and return the masked payload (uniform on the ring).

        The DP noise share is keyed by the round, not the attempt: a fresh mask
        hides each attempt's payload, and reusing the noise keeps a
        reproducible run identical to one with a retried attempt.
        """
        round_idx, start, trained = self.pending
        payload = secure.payload(start, trained, self.plan.declared_count(self.hospital_id, self.trainer.num_samples),
                                 rng=self.noise.numpy_generator(round_idx, Purpose.SECAGG_NOISE))
        self.masker.agree(public_keys)
        masked = self._guard(lambda: self.masker.mask(payload), f"masking round {round_idx}")
        self.masker = None
        return masked

    def calibration_sum(self, params: Params, calibration_round: int) -> dict:
        """Bias calibration: the summed class probabilities of ``params`` on this hospital's training records,
        noised under a DP claim by its own secret stream (:mod:`fedray.privacy.bias_calibration`)."""
        z = self.plan.calibration_noise
        rng = None if z is None else self.noise.numpy_generator(calibration_round, Purpose.BIAS_CALIBRATION)

        def summed() -> np.ndarray:
            self.trainer.load(params)
            return prediction_sum(self.trainer.training_proba(), noise_multiplier=z, rng=rng)
        return {CALIBRATION_FIELD: self._guard(summed, f"bias calibration round {calibration_round}")}

    def evaluate(self, params: Params) -> dict:
        """Metrics of ``params`` on this hospital's own validation shard; nothing under a DP mechanism."""
        if len(self.val_labels) == 0 or self.releases.claim:
            return {}
        self.trainer.load(params)
        probs = self.trainer.predict_proba(self.val_inputs)
        return classification_metrics(self.val_labels, probs)

    def _guard(self, work, stage: str):
        try:
            return work()
        except FedrayError as err:
            raise HospitalError(f"hospital {self.hospital_id}, {stage}: {err}") from None
        except (ValueError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise HospitalError(f"hospital {self.hospital_id}, {stage}: {first}") from None

    def feature_cache(self) -> dict | None:
        """What caching frozen features cost this hospital (its training and validation shards), or None."""
        report = getattr(getattr(self.trainer, "encoder", None), "report", None)
        if report is None:
            return None
        return {k: v for k, v in dataclasses.asdict(report).items() if self.releases.covers(f"feature_cache.{k}")}

    def privacy_state(self) -> dict:
        return self.trainer.privacy_state()

    def restore_privacy_state(self, state: dict) -> None:
        """After a restart, resume the accountant so spent privacy is never forgotten."""
        self.trainer.restore_privacy_state(state)

