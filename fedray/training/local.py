"""Local training on one hospital's shard (pure torch, no Ray).

A :class:`LocalTrainer` holds one shard on its device for the whole run (images
stay uint8 until a batch is drawn, then are flipped and whitened; table rows are
scaled by their public ranges; then the batch is fed to the model), and trains
the model it is given for a number of local epochs.

Every round starts from the parameters passed in (the global model under
FedAvg) with a fresh optimizer state: momentum from a previous round's local
trajectory would otherwise leak into the next round's starting point. Without DP, the
batch order and augmentation of round r at hospital k are drawn from a
generator seeded with (seed, k, r), so a retried round reproduces the same
update. Under DP-SGD every random draw (Poisson batches, noise) comes from the
hospital's :class:`~fedray.privacy.randomness.NoiseSource` instead.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from fedray.config.schema import Train
from fedray.data.augment import Augment
from fedray.data.input_map import InputMap
from fedray.models import set_frozen_eval
from fedray.privacy.randomness import NoiseSource
from fedray.training.features import Features
from fedray.training.hooks import GradientHook
from fedray.training.proximal import ProximalTerm

Params = dict[str, np.ndarray]

EVAL_BATCH_SIZE = 256


def round_generator(seed: int, hospital: int, round_idx: int) -> torch.Generator:
    """A CPU generator private to (seed, hospital, round); reruns of a round draw the same."""
    mixed = np.random.SeedSequence([seed, hospital, round_idx]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(mixed))


def params_to_numpy(module: nn.Module) -> Params:
    """The module's state dict as CPU numpy arrays (zero-copy in Ray's object store)."""
    return {name: t.detach().cpu().numpy().copy() for name, t in module.state_dict().items()}


def load_numpy_params(module: nn.Module, params: Params) -> None:
    """Copy ``params`` into ``module``; the arrays may be read-only views into Ray's object store."""
    with warnings.catch_warnings():
        # load_state_dict copies into the module's own tensors and never writes to the source arrays.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        module.load_state_dict({name: torch.from_numpy(np.asarray(a)) for name, a in params.items()})


def as_device_tensor(array: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move an array to ``device`` once per actor lifetime.

    Arrays fetched from Ray's object store are read-only views; torch refuses
    to wrap those without a copy, so copy once here rather than per batch.
    """
    if isinstance(array, np.ndarray) and not array.flags.writeable:
        array = array.copy()
    return torch.as_tensor(array).to(device)


def scheduled_lr(train_cfg: Train, round_idx: int, rounds: int) -> float:
    """The hospitals' step size in round ``round_idx`` (1-based) of ``rounds``.

    ``train.lr_schedule=cosine`` decays ``train.lr`` to lr·(1 + cos(π(R−1)/R))/2 in the last round, so FedAvg's
    last model is a converged one rather than a snapshot of an oscillation. The schedule reads no record: it
    changes no privacy accounting.
    """
    if train_cfg.lr_schedule == "constant" or rounds <= 1:
        return train_cfg.lr
    return train_cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (round_idx - 1) / rounds))


def build_optimizer(parameters, train_cfg: Train, l2: float) -> torch.optim.Optimizer:
    """SGD or Adam with weight decay ``train.weight_decay + l2``: the L2 penalty's gradient, added after DP noise."""
    weight_decay = train_cfg.weight_decay + l2
    if train_cfg.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=train_cfg.lr, weight_decay=weight_decay)
    return torch.optim.SGD(parameters, lr=train_cfg.lr, momentum=train_cfg.momentum, weight_decay=weight_decay)


class Evaluator:
    """A model on ``device`` that loads parameters and predicts class probabilities (the driver's role).

    With cached features (:mod:`fedray.training.features`) ``model`` is only
    the head side of ``full_model``: parameters are still loaded and exported
    as ``full_model``'s state dict, and ``encoder`` turns raw images into the
    head's cached inputs.
    """

    def __init__(self, *, model: nn.Module, train_cfg: Train, input_map: InputMap, device: torch.device,
                 full_model: nn.Module | None = None, encoder: Callable[[np.ndarray], Features] | None = None):
        self.device = device
        self.train_cfg = train_cfg
        self.input_map = input_map
        self.encoder = encoder
        self.autocast = device.type == "cuda" and train_cfg.precision == "bf16"
        self.channels_last = device.type == "cuda" and train_cfg.channels_last and encoder is None
        self.model = model.to(device)
        self.full_model = model if full_model is None else full_model.to(device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def load(self, params: Params) -> None:
        load_numpy_params(self.full_model, params)

    def export(self) -> Params:
        return params_to_numpy(self.full_model)

    def encode(self, inputs: np.ndarray | torch.Tensor) -> torch.Tensor | Features:
        """An evaluation set as :meth:`predict_proba` reads it fastest: on the device, or as cached features."""
        return self.encoder(inputs) if self.encoder is not None else as_device_tensor(inputs, self.device)

    @torch.no_grad()
    def predict_proba(self, inputs: np.ndarray | torch.Tensor | Features) -> np.ndarray:
        """Softmax probabilities of the current model on raw ``inputs`` (uint8 images or rows) or :meth:`encode`'s."""
        self.model.eval()
        outputs = []
        encoded = inputs if isinstance(inputs, Features) else self.encode(inputs)
        values = encoded.values if isinstance(encoded, Features) else encoded
        for chunk in values.split(EVAL_BATCH_SIZE):
            x = self.input_map.apply(chunk.to(self.device))
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                logits = self.model(x)
            outputs.append(torch.softmax(logits.float(), dim=1).cpu())
        if not outputs:
            return np.zeros((0, 0), dtype=np.float32)
        return torch.cat(outputs).numpy()


def physical_passes(records: int, physical_batch_size: int) -> list[slice]:
    """The record ranges of one step's forward/backward passes (``train.physical_batch_size``): one for all (or for
    none) when the size is 0 or not below ``records``, else consecutive chunks of at most that many records."""
    if physical_batch_size <= 0 or records <= physical_batch_size:
        return [slice(0, records)]
    return [slice(start, min(start + physical_batch_size, records)) for start in range(0, records, physical_batch_size)]


class LocalTrainer(Evaluator):
    """Trains (and evaluates) a model on one shard kept on ``device``.

    ``loss_fn`` is the batch-mean per-record loss and ``l2`` the model's own L2
    penalty, both from :mod:`fedray.training.objective`. ``gradient_hooks``
    (:mod:`fedray.training.hooks`) run at every step after the data gradient:
    FedProx's term when ``proximal_mu > 0``, then any a hospital attaches.
    """

    noise_multiplier = 0.0  # σ of the Gaussian noise on each step's gradient sum: none without DP

    def __init__(
        self,
        *,
        model: nn.Module,
        inputs: np.ndarray | torch.Tensor,
        labels: np.ndarray,
        train_cfg: Train,
        input_map: InputMap,
        augment: Augment,
        device: torch.device,
        seed: int,
        hospital: int,
        noise: NoiseSource,
        loss_fn: nn.Module,
        l2: float,
        rounds: int = 1,
        proximal_mu: float = 0.0,
        full_model: nn.Module | None = None,
        encoder: Callable[[np.ndarray], Features] | None = None,
        steps_per_epoch: int | None = None,
    ):
        super().__init__(model=model, train_cfg=train_cfg, input_map=input_map, device=device,
                         full_model=full_model, encoder=encoder)
        self.steps_per_epoch = steps_per_epoch  # None: every batch of the shuffled epoch
        self.inputs = as_device_tensor(inputs, device)
        self.labels = as_device_tensor(labels, device).long()
        self.augment = augment
        self.seed = seed
        self.hospital = hospital
        self.noise = noise
        self.rounds = rounds
        self.batch_size = train_cfg.batch_size
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(trainable, train_cfg, l2)
        self.loss_fn = loss_fn
        self.gradient_hooks: list[GradientHook] = [ProximalTerm(self.model, proximal_mu)] if proximal_mu > 0 else []

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    def training_proba(self) -> np.ndarray:
        """The current model's class probabilities on this party's own training records (the unflipped view of
        cached features): what bias calibration sums (:mod:`fedray.privacy.bias_calibration`)."""
        return self.predict_proba(Features(self.inputs[:, 0]) if self.encoder is not None else self.inputs)

    @property
    def record_rate(self) -> float:
        """The probability that one record is in one step's batch (B/n: each record is in one batch an epoch)."""
        return min(1.0, self.batch_size / self.num_samples)

    # -- training -----------------------------------------------------------------
    def fit(self, params: Params, *, epochs: int, round_idx: int) -> tuple[Params, dict[str, float]]:
        """Train ``epochs`` local epochs from ``params``; return new params and train metrics."""
        start = time.perf_counter()
        self.load(params)
        self.optimizer.state.clear()
        for group in self.optimizer.param_groups:
            group["lr"] = scheduled_lr(self.train_cfg, round_idx, self.rounds)
        generator = self.round_randomness(round_idx)
        # Dropout draws from torch's global generator: keyed to (seed, hospital, round) like the batch order (a
        # stream apart from it), so a hospital's turn trains alike in whichever process runs it, after whichever
        # other hospital. Public randomness: no DP claim rests on it.
        torch.manual_seed(int(np.random.SeedSequence([self.seed, self.hospital, round_idx, 1]).generate_state(1)[0]))
        for hook in self.gradient_hooks:
            hook.start_round(round_idx)
        self.model.train()
        set_frozen_eval(self.model)
        loss_sum, correct, seen, steps = 0.0, 0, 0, 0
        for _ in range(epochs):
            for batch in self.batches(generator):
                x, y = self.prepare(batch, generator)
                loss, logits = self.step(x, y)
                steps += 1
                if logits is None:  # an empty Poisson batch: a noise-only DP step
                    continue
                loss_sum += loss * len(y)
                if logits.dim() == 3:  # train.augmult: scores [B, k, C] of k views; a record's views vote together
                    logits = logits.mean(1)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
        return self.export(), self.round_metrics(loss_sum=loss_sum, correct=correct, seen=seen, steps=steps,
                                                 seconds=time.perf_counter() - start)

    def round_metrics(self, *, loss_sum: float, correct: int, seen: int, steps: int, seconds: float) -> dict:
        """What this trainer reports of one round's training: its loss and accuracy on the records it saw (a sum
        over them, their number), its steps and its time."""
        return {
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "local_steps": float(steps),
            "fit_seconds": seconds,
        }

    def round_randomness(self, round_idx: int) -> torch.Generator:
        """Batch order and augmentation of one round: reproducible from the config (no DP claim rests on them)."""
        return round_generator(self.seed, self.hospital, round_idx)

    def batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """One epoch of shuffled index batches, or its first ``steps_per_epoch`` (the baseline of a mechanism
        that fixes them); DP-SGD overrides this with Poisson sampling."""
        order = torch.randperm(self.num_samples, generator=generator)
        yield from order.split(self.batch_size)[:self.steps_per_epoch]

    def prepare(self, batch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = batch.to(self.device)
        x = self.inputs[idx]
        x = self.augment(x, generator)
        x = self.input_map.apply(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[idx]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor | None]:
        """One optimizer step; returns the batch's mean loss and its detached logits.

        With ``train.physical_batch_size`` the batch runs in passes of at most that many records, each pass's
        mean loss weighted by its share of the batch, so the summed gradient is the batch mean's.
        """
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, outputs = 0.0, []
        for part in physical_passes(len(y), self.train_cfg.physical_batch_size):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                logits = self.model(x[part])
                loss = self.loss_fn(logits.float(), y[part])
            (loss * ((part.stop - part.start) / len(y))).backward()
            loss_sum += float(loss.detach()) * (part.stop - part.start)
            outputs.append(logits.detach())
        for hook in self.gradient_hooks:  # one record weighs 1/|B| in the batch mean
            hook.on_gradient(1.0 / len(y))
        self.optimizer.step()
        return loss_sum / len(y), torch.cat(outputs)

    def noised_clipped_sum(self):
        """How a step privatises its gradient when hospitals train together (:mod:`fedray.training.together`):
        not at all without DP."""
        return None

    # -- privacy state (none without DP; DP-SGD keeps its accountant's history here) --
    def privacy_state(self) -> dict:
        return {}

    def restore_privacy_state(self, state: dict) -> None:
        """Nothing to restore for a non-private trainer."""


class UntrainedHead(LocalTrainer):
    """A hospital that trains nothing: each round returns the model it was sent (a mechanism whose model is built
    from releases before the run, ``Mechanism.trains`` false)."""

    def fit(self, params: Params, *, epochs: int, round_idx: int) -> tuple[Params, dict[str, float]]:
        self.load(params)
        return self.export(), self.round_metrics(loss_sum=0.0, correct=0, seen=0, steps=0, seconds=0.0)
