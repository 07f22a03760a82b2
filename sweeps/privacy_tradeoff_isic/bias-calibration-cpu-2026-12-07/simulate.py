"""The offline simulation behind bias calibration's floor: the ISIC Lite0 head under distributed DP-SGD, in torch.

It trains the 1280x9 head on fedray's own cached features of the 5 hospitals (100 steps, Poisson batch 32 a
hospital, clip 1, noise sigma*sqrt(5/4) on the sum as the masked sum carries it, momentum 0.9, cosine lr; sigma from
fedray's calibrate_sigma with the calibration's releases composed in), calibrates the biases with fedray's
calibrated_bias, chooses lr on validation, and reports test balanced accuracy over 10 noise seeds for each way of
flooring the noised summed predictions. Run from the repository root:
    python sweeps/privacy_tradeoff_isic/bias-calibration-cpu-2026-12-07/simulate.py ../shared/data/isic-skin-cancer-9
"""
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score

sys.path.insert(0, "benchmarks")
from _common import compose  # noqa: E402
from fedray.federation.experiment import prepare_experiment  # noqa: E402
from fedray.models import build_model  # noqa: E402
from fedray.privacy.bias_calibration import calibrated_bias  # noqa: E402
from fedray.privacy.mechanisms.dpsgd import calibrate_sigma  # noqa: E402
from fedray.training import _store, frozen_split  # noqa: E402
from fedray.training.features import FLIP_VIEWS, FeatureEncoder  # noqa: E402

warnings.filterwarnings("ignore")
K, B, T, N_CLASSES, DELTA = 5, 32, 100, 9, 1e-5


def features(root: str):
    prep = prepare_experiment(compose([f"data.root={root}", "data=isic", "model=efficientnet_lite0",
                                       "data.image_size=128", "audit.enabled=false", "cluster=inprocess"],
                                      Path(tempfile.mkdtemp())))
    cfg = prep.cfg
    model = build_model(cfg.model, num_classes=prep.num_classes, image_size=cfg.data.image_size)
    enc = FeatureEncoder(frozen_split(cfg, model, torch.device("cpu")), prep.dealt.input_map, _store(cfg),
                         torch.device("cpu"))
    shards = [(enc.features(np.asarray(s.inputs), views=FLIP_VIEWS), torch.as_tensor(np.asarray(s.labels)).long())
              for s in prep.dealt.train_shards]
    held = {n: (enc.features(np.asarray(getattr(prep.dealt.splits, n).inputs), views=1)[:, 0],
                np.asarray(getattr(prep.dealt.splits, n).labels)) for n in ("val", "test")}
    return shards, held


def run(shards, held, lr, seed, *, z_cal, releases, noise_floor):
    g = torch.Generator().manual_seed(seed)
    n = len(shards[0][1])
    sigma = calibrate_sigma(epsilon=1.0, delta=DELTA, sample_rate=B / n, steps=T, accountant="rdp",
                            statistics=(z_cal,) * releases) * (K / (K - 1)) ** 0.5
    W = torch.zeros(N_CLASSES, shards[0][0].shape[-1] + 1)
    v = torch.zeros_like(W)
    for t in range(T):
        G = torch.zeros_like(W)
        for x, y in shards:
            idx = (torch.rand(n, generator=g) < B / n).nonzero().squeeze(1)
            z = torch.cat([x[idx, torch.randint(0, 4, (len(idx),), generator=g)], torch.ones(len(idx), 1)], 1)
            p = torch.softmax(z @ W.T, 1)
            p[torch.arange(len(idx)), y[idx]] -= 1
            c = (1.0 / (p.norm(dim=1) * z.norm(dim=1) + 1e-6)).clamp(max=1.0)
            G += (p * c[:, None]).T @ z
        G = (G + torch.randn(W.shape, generator=g) * sigma) / (K * B)
        v = 0.9 * v + G
        W = W - lr * 0.5 * (1 + np.cos(np.pi * t / T)) * v
    train = torch.cat([torch.cat([x[:, 0], torch.ones(len(x), 1)], 1) for x, _ in shards])
    for _ in range(releases):  # the K hospitals' noised sums, drawn as one sum of noise std z sqrt(K)
        h = torch.softmax(train @ W.T, 1).sum(0) + torch.randn(N_CLASSES, generator=g) * z_cal * K ** 0.5
        floor_noise = z_cal * K ** 0.5 if noise_floor else None  # None: fedray's floor at one record, as without DP
        W[:, -1] = torch.from_numpy(calibrated_bias(W[:, -1].numpy(), [h.numpy()], noise_multiplier=floor_noise))

    def score(name):
        x, y = held[name]
        return balanced_accuracy_score(y, (torch.cat([x, torch.ones(len(x), 1)], 1) @ W.T).argmax(1).numpy())
    return score("val"), score("test")


if __name__ == "__main__":
    shards, held = features(sys.argv[1])
    print("| calibration | test balanced accuracy, mean [min-max] | std over seeds |\n|---|---|---|")
    for label, kw in [("none", dict(z_cal=1.0, releases=0, noise_floor=False)),
                      ("1 release, z = 8, floor 1 record", dict(z_cal=8.0, releases=1, noise_floor=False)),
                      ("1 release, z = 8, floor 2 noise std", dict(z_cal=8.0, releases=1, noise_floor=True)),
                      ("2 releases, z = 16, floor 2 noise std", dict(z_cal=16.0, releases=2, noise_floor=True))]:
        tests = []
        for seed in range(10):
            runs = [run(shards, held, lr, seed, **kw) for lr in (0.003, 0.01, 0.03)]
            tests.append(max(runs)[1])  # the lr with the best validation score
        print(f"| {label} | {np.mean(tests):.3f} [{min(tests):.3f}-{max(tests):.3f}] | {np.std(tests):.3f} |")
