"""Whether the parties' memory can hold a run: checked by a single run and by a sweep, before any actor starts.

GPU shares. Ray does not cap a fractional GPU's memory, so a share too small
for the backbone's step (:mod:`fedray.models.memory`: parameters, optimizer
state, activations and, under a mechanism that needs them, per-sample
gradients) is refused in one line before any actor is placed.

A federation on this machine (:func:`check_federation_memory`). With K
virtual hospitals, m sampled per round and A hospital actors each keeping
R built (:mod:`fedray.federation.residency`), with P the model's bytes and
S_k hospital k's shard bytes, a round needs at least

- the driver: the global model, the best round's, and the round's updates:
  (m⁺ + 2)·P, where m⁺ = m + 4√m bounds the Poisson cohort (m = K without
  sampling); under ``mode=local`` every hospital's model, K·P;
- the actors: A·R·(4·P + max S_k) (model, gradients, two optimizer moments,
  a shard copy);
- the object store: Σ S_k, every shard once.

A run whose sum exceeds :data:`MEMORY_SHARE` of this machine's memory is
refused in one line naming the largest term and its knob. It is a lower
bound (activations, Ray's own processes and Python's overheads come on top),
so what it refuses cannot run; it is checked where the run's processes are
this machine's (``cluster=local`` and ``inprocess``).
"""

from __future__ import annotations

import math
import os

import torch

from fedray.config import Config
from fedray.errors import FedrayError
from fedray.models import model_family
from fedray.models.memory import check_memory_fits, estimate_training_memory
from fedray.privacy.mechanisms import claims_dp, mechanism_class

# Memory of the cards Ray reports as ``accelerator_type:<name>`` (GB), for when this process sees no GPU itself.
GPU_MEMORY_GB = {"T4": 16, "V100": 16, "A10G": 24, "L4": 24, "L40S": 48, "A100": 40, "A100-80G": 80,
                 "H100": 80, "H200": 141}


def gpu_memory_bytes(nodes: list[dict[str, float]]) -> int | None:
    """The smallest GPU's memory on the cluster: this process's own card, else the nodes' accelerator types."""
    if torch.cuda.is_available():
        return min(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))
    sizes = [GPU_MEMORY_GB[key.split(":", 1)[1]] for node in nodes for key in node
             if key.startswith("accelerator_type:") and key.split(":", 1)[1] in GPU_MEMORY_GB]
    return int(min(sizes) * 1e9) if sizes else None


def check_memory_plan(cfg: Config, *, num_classes: int, gpu_bytes: int | None) -> None:
    """Refuse a trial whose per-hospital GPU share cannot hold its backbone's training step (image models on GPUs)."""
    if gpu_bytes is None or model_family(cfg.model.name) != "image" or cfg.resources.hospital.num_gpus <= 0:
        return
    dp_sgd = claims_dp(cfg) and mechanism_class(cfg.privacy.name).per_sample_gradients
    one_pass = min(cfg.train.batch_size, cfg.train.physical_batch_size or cfg.train.batch_size)
    estimate = estimate_training_memory(cfg.model, num_classes=num_classes, image_size=cfg.data.image_size,
                                        batch_size=one_pass, optimizer=cfg.train.optimizer, dp_sgd=dp_sgd,
                                        grad_sample_mode=getattr(cfg.privacy, "grad_sample_mode", None))
    check_memory_fits(estimate, gpu_share=cfg.resources.hospital.num_gpus, gpu_bytes=gpu_bytes,
                      model_name=cfg.model.name, batch_size=cfg.train.batch_size)


MEMORY_SHARE = 0.9  # of this machine's memory, a federation's lower bound may take


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_federation_memory(cfg: Config, *, model_bytes: int, shard_bytes: list[int], actors: int,
                            resident: int, memory_bytes: int) -> None:
    """Refuse a federation whose driver, actors and shards cannot fit ``memory_bytes`` (module docstring)."""
    hospitals = len(shard_bytes)
    m = cfg.fl.clients_per_round or hospitals
    cohort = hospitals if m >= hospitals else min(hospitals, math.ceil(m + 4 * math.sqrt(m)))
    kept = cohort if cfg.mode != "local" else hospitals
    terms = {
        f"the driver's {kept} models (fl.clients_per_round)": (kept + 2) * model_bytes,
        f"{actors} actors keeping {resident} hospitals each (fl.actors, fl.resident_hospitals)":
            actors * resident * (4 * model_bytes + max(shard_bytes, default=0)),
        f"{hospitals} hospitals' shards (fl.num_hospitals, data)": sum(shard_bytes),
    }
    need, have = sum(terms.values()), MEMORY_SHARE * memory_bytes
    if need > have:
        largest = max(terms, key=terms.get)
        raise FedrayError(f"this federation needs at least {need / 2**30:.3g} GiB of memory, more than "
                          f"{have / 2**30:.3g} GiB ({MEMORY_SHARE:.0%} of this machine's): most of it is {largest}, "
                          f"{terms[largest] / 2**30:.3g} GiB; lower that setting or use a smaller model")
