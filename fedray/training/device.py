"""Per-process set-up shared by the hospital, driver and auditor processes (no Ray)."""

from __future__ import annotations

import torch


def configure_process(*, num_cpus: float, num_gpus: float, seed: int) -> torch.device:
    """Pin torch's thread pool to the actor's CPU share and cap its GPU memory to its fraction.

    Ray schedules by logical resources only: an actor given 0.2 GPU can still
    allocate the whole card, and every torch process starts one thread per
    core. Both would let five hospitals on one machine starve each other.
    """
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, int(num_cpus)))
    if num_gpus > 0 and torch.cuda.is_available():
        device = torch.device("cuda", 0)  # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPU
        if num_gpus < 1:
            torch.cuda.set_per_process_memory_fraction(num_gpus, device)
        torch.backends.cudnn.benchmark = True
        return device
    return torch.device("cpu")
