"""Frozen-feature training: one hospital's epoch with the head trained on cached features against the whole model.

One hospital's trainer is built exactly as a fedray hospital builds it
(``fedray.training.build_trainer``, ``model.finetune=head``) twice: with
``train.cache_features=true`` (the frozen backbone runs once per image and flip
view, then every epoch trains only the head) and ``=false`` (every epoch runs the
whole backbone forward). The table shows the one-time caching cost, the median
epoch time of each, and how many epochs the cache pays for itself in. Both
trainers start from the same parameters; the last column is the largest
parameter difference after the timed epochs (the cache must not change results).
Non-private by default; ``--dp`` trains both under DP-SGD with reproducible noise.

    python benchmarks/feature_cache.py --data isic --data-root ../shared/data/isic-skin-cancer-9
    python benchmarks/feature_cache.py --models efficientnet_lite0,efficientnet_lite2 --dp   # synthetic images
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import compose, data_overrides, device_summary, markdown_table, median


def build(overrides: list[str], run_dir: Path, hospital: int = 0):
    import torch

    from fedray.federation.experiment import prepare_experiment
    from fedray.privacy.randomness import NoiseSource, hospital as party
    from fedray.training import build_trainer

    start = time.perf_counter()
    prep = prepare_experiment(compose(overrides, run_dir))
    shard = prep.dealt.train_shards[hospital]
    trainer = build_trainer(cfg=prep.cfg, plan=prep.privacy.resolved_cfg, num_classes=prep.num_classes,
                            num_features=None, inputs=shard.inputs, labels=shard.labels,
                            input_map=prep.dealt.input_map, device=torch.device("cpu"), hospital=hospital,
                            noise=NoiseSource.reproducible(prep.cfg.seed, party(hospital)))
    return trainer, time.perf_counter() - start, len(shard)


def timed_epochs(trainer, params: dict, epochs: int) -> tuple[list[float], dict]:
    import torch

    torch.manual_seed(0)
    times = []
    for round_idx in range(1, epochs + 1):
        start = time.perf_counter()
        params, _ = trainer.fit(params, epochs=1, round_idx=round_idx)
        times.append(time.perf_counter() - start)
    return times, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet_lite0")
    parser.add_argument("--data", default="synthetic", choices=["synthetic", "isic"])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--samples-per-class", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--dp", action="store_true", help="DP-SGD (epsilon 3, reproducible noise) on both sides")
    args = parser.parse_args()

    rows = []
    for name in args.models.split(","):
        common = [*data_overrides(args), f"model={name}", "model.finetune=head", "data.augment=flips",
                  "paths.feature_cache_dir=null", "train.batch_size=32", "audit.enabled=false"]
        if args.dp:
            common += ["privacy=dpsgd", "privacy.epsilon=3", "privacy.reproducible_noise=true"]
        with tempfile.TemporaryDirectory() as tmp:
            direct, direct_setup, records = build([*common, "train.cache_features=false"], Path(tmp))
            cached, cached_setup, _ = build([*common, "train.cache_features=true"], Path(tmp))
        start = direct.export()
        direct_times, direct_after = timed_epochs(direct, start, args.epochs)
        cached_times, cached_after = timed_epochs(cached, start, args.epochs)
        caching = cached.encoder.report.seconds
        epoch_direct, epoch_cached = median(direct_times), median(cached_times)
        gap = max(float(np.abs(cached_after[k] - direct_after[k]).max()) for k in direct_after)
        rows.append([name, records, f"{caching:.1f}", f"{epoch_direct:.2f}", f"{epoch_cached:.3f}",
                     f"{epoch_direct / epoch_cached:.0f}x", f"{caching / max(epoch_direct - epoch_cached, 1e-9):.1f}",
                     f"{gap:.1e}"])
    print(f"# frozen-feature cache, {args.data} at {args.image_size} px, {'DP-SGD' if args.dp else 'non-private'}, "
          f"{device_summary()}\n")
    print(markdown_table(["model", "records", "caching s (4 views)", "epoch s, whole model", "epoch s, cached head",
                          "speed-up", "break-even epochs", "max |param diff|"], rows))


if __name__ == "__main__":
    main()
