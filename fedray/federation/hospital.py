"""A hospital: one long-lived Ray actor that holds only its own patients' records (images or table rows).

The actor is created with its shard as an ``ObjectRef`` argument: the shard is
put into Ray's object store once per experiment, and Ray hands it to the actor
(again, from the store, if the actor is restarted after a crash). Each round it
receives the global parameters (one shared object for all hospitals), trains
locally, and returns a :class:`~fedray.strategies.ClientResult`: parameters,
sample count and scalar metrics. Nothing else leaves the hospital.
"""

from __future__ import annotations

import numpy as np

from fedray.data.input_map import input_map_from_state
from fedray.federation.runtime import placement_of_this_actor
from fedray.metrics import classification_metrics
from fedray.strategies import ClientResult
from fedray.training import build_trainer
from fedray.training.device import configure_process
from fedray.training.local import as_device_tensor

Params = dict[str, np.ndarray]


class Hospital:
    """One hospital's training and validation data, model and (optionally) DP accountant."""

    def __init__(
        self,
        *,
        hospital_id: int,
        train_shard: dict,
        val_shard: dict,
        cfg: dict,
        input_map_state: dict,
        num_classes: int,
        resources: dict,
    ):
        self.hospital_id = hospital_id
        self.device = configure_process(
            num_cpus=resources["num_cpus"], num_gpus=resources["num_gpus"], seed=cfg["seed"] + hospital_id
        )
        self.trainer = build_trainer(
            cfg=cfg,
            num_classes=num_classes,
            inputs=train_shard["inputs"],
            labels=train_shard["labels"],
            input_map=input_map_from_state(input_map_state),
            device=self.device,
            hospital=hospital_id,
        )
        self.val_inputs = as_device_tensor(val_shard["inputs"], self.device)
        self.val_labels = val_shard["labels"]
        self.local_epochs = int(cfg["fl"]["local_epochs"])

    def fit(self, params: Params, round_idx: int) -> ClientResult:
        new_params, metrics = self.trainer.fit(params, epochs=self.local_epochs, round_idx=round_idx)
        return ClientResult(
            hospital=self.hospital_id, params=new_params, num_samples=self.trainer.num_samples, metrics=metrics
        )

    def evaluate(self, params: Params) -> dict:
        """Metrics of ``params`` on this hospital's own validation shard."""
        if len(self.val_labels) == 0:
            return {}
        self.trainer.load(params)
        probs = self.trainer.predict_proba(self.val_inputs)
        return classification_metrics(self.val_labels, probs)

    def privacy_state(self) -> dict:
        return self.trainer.privacy_state()

    def restore_privacy_state(self, state: dict) -> None:
        """After a restart, resume the accountant so spent privacy is never forgotten."""
        self.trainer.restore_privacy_state(state)

    def ping(self) -> int:
        return self.hospital_id

    def where(self) -> dict:
        return placement_of_this_actor()
