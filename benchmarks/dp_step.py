"""DP-SGD step cost: one private step against one non-private step on the same backbone.

For each backbone, the configurations are built exactly as a fedray hospital
builds them (``fedray.training.build_trainer``):

- non-private: ``fedray.models.build_model`` (BatchNorm kept, no Opacus) in a
  ``LocalTrainer``; on CUDA with the run's defaults, bf16 autocast and
  channels-last (``train.precision``, ``train.channels_last``). On CUDA a second
  baseline in fp32 shows the same arithmetic as DP-SGD, which runs in fp32;
- the DP model without DP: ``make_dp_compatible`` (BatchNorm -> GroupNorm) but a
  plain ``LocalTrainer`` in fp32, to separate the cost of GroupNorm from Opacus';
- DP-SGD: ``fedray.privacy.opacus_wiring.make_dp_compatible`` (GroupNorm) then a
  ``DPSGDTrainer`` (``wrap_private``; each step is ``private_step``: per-record
  gradients, clipping, noise, update) in the mode ``choose_grad_sample_mode``
  picks ("auto"), or each of ``--modes``.

A step is forward, backward and optimizer update on one fixed batch of
``--batch-size`` whitened-scale random images already on the device (data
loading, augmentation and Poisson sampling excluded). The configurations of one
backbone take turns every repetition (order rotated), the first ``--warmup``
rounds are dropped, and the table shows medians. Peak memory is the most
torch held while one configuration was built alone and took two steps:
``torch.cuda.max_memory_allocated`` (statistics reset before it) on CUDA; on
CPU the peak of the running sum of the CPU allocations and frees the torch
profiler recorded (``profile_memory=True``; ``tracemalloc`` does not see
torch's allocator).

    python benchmarks/dp_step.py                                     # CPU: small_cnn at 32 px
    python benchmarks/dp_step.py --models small_cnn,resnet18,resnet50 --image-size 128 --modes auto,hooks,functorch,ew
    python benchmarks/dp_step.py --models small_cnn,resnet18,mobilenet_v3_large --image-size 64 --modes auto,hooks,ghost,bookkeeping
"""

from __future__ import annotations

import argparse
import gc
import itertools
import time
import warnings

import numpy as np

from _common import cuda_sync, device_summary, markdown_table, median, save_json

NUM_CLASSES = 9  # the ISIC set's


def parse_args(argv=None) -> argparse.Namespace:
    import torch

    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default="small_cnn", help="comma-separated backbones (conf/model/<name>.yaml)")
    p.add_argument("--image-size", type=int, default=128 if cuda else 32,
                   help="pixels per side (default 128 on CUDA, 32 on CPU)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--physical-batch-size", type=int, default=0,
                   help="records a forward/backward pass holds (train.physical_batch_size; 0: the whole batch)")
    p.add_argument("--modes", default="auto",
                   help="comma-separated grad_sample_modes: auto (choose_grad_sample_mode), hooks, functorch, ew, ghost, bookkeeping")
    p.add_argument("--repeats", type=int, default=20, help="timed repetitions per configuration")
    p.add_argument("--warmup", type=int, default=3, help="untimed repetitions first")
    p.add_argument("--noise-multiplier", type=float, default=1.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--threads", type=int, default=None if cuda else 1,
                   help="torch threads (default 1 on CPU, as a hospital actor with <2 CPUs pins; "
                        "more threads on a shared CPU make the timings erratic)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def _train_cfg(args, precision: str):
    from fedray.config.schema import Train

    return Train(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=0.0, batch_size=args.batch_size,
                 physical_batch_size=args.physical_batch_size, precision=precision, channels_last=True)


def build(args, model_name: str, kind: str, mode: str | None, device):
    """One trainer as a hospital would build it; returns (trainer, label, grad_sample_mode)."""
    import torch

    from fedray.data.augment import no_augment
    from fedray.data.whitening import ColorWhitening
    from fedray.config.schema import BackboneModel
    from fedray.models import build_model
    from fedray.privacy.randomness import NoiseSource, hospital
    from fedray.training.local import LocalTrainer

    torch.manual_seed(0)
    model = build_model(BackboneModel(name=model_name, pretrained=False, finetune="all", finetune_last_n=1),
                        num_classes=NUM_CLASSES, image_size=args.image_size)
    n = 10 * args.batch_size
    common = dict(inputs=np.zeros((n, 3, 1, 1), np.uint8), labels=np.zeros(n, np.int64),
                  input_map=ColorWhitening(method="none", mean=torch.zeros(3), matrix=torch.eye(3)),
                  augment=no_augment, device=device, seed=0, hospital=0,
                  noise=NoiseSource.reproducible(0, hospital(0)), loss_fn=torch.nn.CrossEntropyLoss(), l2=0.0)
    if kind == "nonprivate":
        return LocalTrainer(model=model, train_cfg=_train_cfg(args, "bf16"), **common), None
    if kind == "nonprivate_fp32":
        return LocalTrainer(model=model, train_cfg=_train_cfg(args, "fp32"), **common), None
    from fedray.privacy.opacus_wiring import make_dp_compatible
    from fedray.training.private import DPSGDTrainer

    if kind == "nonprivate_groupnorm":
        return LocalTrainer(model=make_dp_compatible(model), train_cfg=_train_cfg(args, "fp32"), **common), None

    trainer = DPSGDTrainer(
        model=make_dp_compatible(model), train_cfg=_train_cfg(args, "fp32"), noise_multiplier=args.noise_multiplier,
        sample_rate=args.batch_size / n, num_slots=n, max_grad_norm=args.max_grad_norm, accountant="rdp",
        grad_sample_mode=None if mode == "auto" else mode, **common)
    return trainer, trainer.parts.grad_sample_mode


def batch(args, device):
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=g).to(device)
    y = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=g).to(device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)  # as LocalTrainer.prepare does on CUDA
    return x, y


def timed_step(trainer, x, y) -> float:
    cuda_sync()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.step(x, y)
    cuda_sync()
    return time.perf_counter() - t0


def configs(args, device) -> list[tuple[str, str | None]]:
    out = [("nonprivate", None)]
    if device.type == "cuda":
        out.append(("nonprivate_fp32", None))
    out.append(("nonprivate_groupnorm", None))
    out += [("dp", m.strip()) for m in args.modes.split(",") if m.strip()]
    return out


def peak_memory(args, model_name, kind, mode, device, x, y):
    """MiB: the most torch held while this configuration was built and took two steps (module docstring)."""
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        _build_and_step_twice(args, model_name, kind, mode, device, x, y)
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.empty_cache()
    else:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            _build_and_step_twice(args, model_name, kind, mode, device, x, y)
        allocations = sorted((node.start_time_ns, node.extra_fields.alloc_size) for node in _event_nodes(
            prof.profiler.kineto_results.experimental_event_tree())
            if isinstance(node.extra_fields, torch._C._profiler._ExtraFields_Allocation))
        # The allocator's own running total survives across profilers (frees outside one are not seen), so
        # sum this window's allocations and frees instead.
        peak = max(itertools.accumulate(size for _, size in allocations), default=0)
    gc.collect()
    return peak / 2**20


def _build_and_step_twice(args, model_name, kind, mode, device, x, y) -> None:
    trainer, _ = build(args, model_name, kind, mode, device)
    for _ in range(2):
        timed_step(trainer, x, y)


def _event_nodes(nodes):
    """Every node of the profiler's event tree; allocations are leaves with their running total."""
    for node in nodes:
        yield node
        yield from _event_nodes(node.children)


def bench_model(args, model_name: str, device) -> list[dict]:
    x, y = batch(args, device)
    rows = []
    for kind, mode in configs(args, device):
        try:
            mem = peak_memory(args, model_name, kind, mode, device, x, y)
            trainer, used_mode = build(args, model_name, kind, mode, device)
            rows.append({"model": model_name, "kind": kind, "requested_mode": mode, "mode": used_mode,
                         "trainer": trainer, "times": [], "peak_mib": mem, "error": None})
        except Exception as err:  # noqa: BLE001 - a mode a backbone cannot run is a table row, not a crash
            rows.append({"model": model_name, "kind": kind, "requested_mode": mode, "mode": mode, "trainer": None,
                         "times": [], "peak_mib": None, "error": f"{type(err).__name__}: {str(err)[:100]}"})
    live = [r for r in rows if r["trainer"] is not None]
    for rep in range(args.warmup + args.repeats):
        shift = rep % max(len(live), 1)
        for row in live[shift:] + live[:shift]:  # rotate the order every repetition
            if row["error"]:
                continue
            try:
                t = timed_step(row["trainer"], x, y)
            except Exception as err:  # noqa: BLE001
                row["error"] = f"{type(err).__name__}: {str(err)[:100]}"
                continue
            if rep >= args.warmup:
                row["times"].append(t)
    for row in rows:
        row["trainer"] = None
        row["median_s"] = median(row["times"]) if not row["error"] else float("nan")
        row["min_s"] = min(row["times"]) if row["times"] and not row["error"] else float("nan")
    base = {r["kind"]: r["median_s"] for r in rows if r["kind"].startswith("nonprivate")}
    base_min = {r["kind"]: r["min_s"] for r in rows if r["kind"].startswith("nonprivate")}
    for row in rows:
        row["ratio_min_vs_nonprivate"] = row["min_s"] / base_min["nonprivate"]
        row["ratio_vs_nonprivate"] = row["median_s"] / base["nonprivate"]
        row["ratio_vs_nonprivate_fp32"] = row["median_s"] / base["nonprivate_fp32"] if "nonprivate_fp32" in base \
            else None
    gc.collect()
    return rows


def render(args, device, rows: list[dict]) -> str:
    cuda = device.type == "cuda"
    head = (f"DP-SGD step vs non-private step: batch {args.batch_size} at {args.image_size} px, {NUM_CLASSES} classes, "
            f"{device_summary()}; median of {args.repeats} alternating repetitions after {args.warmup} warm-up")
    headers = ["model", "configuration", "median ms", "min ms", "DP / non-private (medians)", "(minimums)"]
    if cuda:
        headers.append("DP / non-private fp32")
    headers.append("peak memory MiB")
    labels = {"nonprivate": "non-private" + (" (bf16 autocast, as fedray trains)" if cuda else ""),
              "nonprivate_fp32": "non-private fp32",
              "nonprivate_groupnorm": "non-private, GroupNorm model (make_dp_compatible, no Opacus, fp32)"}
    table = []
    for r in rows:
        if r["kind"] == "dp":
            chosen = f" -> {r['mode']}" if r["requested_mode"] == "auto" and r["mode"] else ""
            label = f"DP-SGD {r['requested_mode']}{chosen}"
        else:
            label = labels[r["kind"]]
        if r["error"]:
            label += f" (failed: {r['error']})"
        line = [r["model"], label, r["median_s"] * 1e3, r["min_s"] * 1e3, r["ratio_vs_nonprivate"],
                r["ratio_min_vs_nonprivate"]]
        if cuda:
            line.append(r["ratio_vs_nonprivate_fp32"])
        line.append(r["peak_mib"])
        table.append(line)
    return f"{head}\n\n{markdown_table(headers, table)}"


def main(argv=None) -> None:
    import torch

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as fedray's actors (configure_process)
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        rows += bench_model(args, name, device)
    print(render(args, device, rows))
    save_json(args.json, {"setup": {k: v for k, v in vars(args).items()} | {"device": device_summary()},
                          "rows": rows})


if __name__ == "__main__":
    main()
