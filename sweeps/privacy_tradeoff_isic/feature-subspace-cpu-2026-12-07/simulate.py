"""The offline simulation behind train.feature_subspace: privacy=dp_prototypes' two masked releases and head, in
NumPy, with the frozen features projected onto a k-dimensional subspace first.

It takes fedray's own cached Lite0 features of the 5 hospitals (the loader of the bias-calibration folder's
simulate.py), releases the centre at noise multiplier 8 and the class sums and counts at the z_p that makes the
two compose to epsilon (fedray's calibrate_noise and compose_epsilon, RDP, delta 1e-5), with the noise of all 5
shares of which 4 are honest, builds fedray's prototype_head for each shrinkage in {30, 100, 300}, and reports the
validation and test balanced accuracy of the shrinkage chosen on validation over 30 noise seeds (the same seeds for
every row; k is chosen on the validation column), and the exact head's (no noise, shrinkage chosen among {0, 30,
100, 300}). Two subspaces: fedray's public_basis
(the leading right singular vectors of Lite0's pretrained ImageNet classifier) and, as a control, the span of k
random orthonormal directions. Run from the repository root:
    python sweeps/privacy_tradeoff_isic/feature-subspace-cpu-2026-12-07/simulate.py ../shared/data/isic-skin-cancer-9
"""
import importlib.util
import sys
import tempfile
from pathlib import Path

import dp_accounting
import numpy as np
from sklearn.metrics import balanced_accuracy_score

sys.path.insert(0, ".")
from fedray.config import compose_config  # noqa: E402
from fedray.privacy.ledger import calibrate_noise, compose_epsilon  # noqa: E402
from fedray.privacy.prototypes import class_sums, prototype_head, sensitivity  # noqa: E402
from fedray.training.feature_norm import centred_unit_features  # noqa: E402
from fedray.training.feature_subspace import project, public_basis  # noqa: E402

LOADER = Path(__file__).parent.parent / "bias-calibration-cpu-2026-12-07" / "simulate.py"
K, HONEST, DELTA, N_CLASSES, Z_CENTRE, ALPHA, SEEDS = 5, 4, 1e-5, 9, 8.0, 0.33, 30


def load_features(root: str):
    spec = importlib.util.spec_from_file_location("bias_calibration_simulate", LOADER)
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    shards, held = loader.features(root)
    return ([(x[:, 0].double().numpy(), y.numpy()) for x, y in shards],
            {name: (x.double().numpy(), np.asarray(y)) for name, (x, y) in held.items()})


def lite0_basis(k: int) -> np.ndarray:
    cfg = compose_config(["model=efficientnet_lite0", "model.finetune=head", "train.feature_norm=centre_l2",
                          f"train.feature_subspace={k}"], run_dir=Path(tempfile.mkdtemp()))
    return public_basis(cfg)


def random_basis(k: int, d: int = 1280) -> np.ndarray:
    return np.linalg.qr(np.random.default_rng(123).normal(size=(d, d)))[0].T[:k]


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def run(shards, held, basis, *, z_p, seed, shrinkages, noise=True):
    rng = np.random.default_rng(seed)
    spread = np.sqrt(K / HONEST) * noise  # every share is in the sum, the colluder's too
    units = [unit(project(x, basis)) for x, _ in shards]  # the centre's release: u(Q g), sensitivity 1
    total = sum(len(u) for u in units)
    centre = (sum(u.sum(0) for u in units) + rng.normal(0, 1, units[0].shape[1]) * Z_CENTRE * spread) / total
    std = sensitivity(ALPHA) * z_p * spread
    sums = sum(class_sums(centred_unit_features(x, centre, basis), y, num_classes=N_CLASSES, count_weight=ALPHA)
               for x, y in shards)
    sums = sums + rng.normal(0, 1, sums.shape) * std
    held_units = {name: (centred_unit_features(x, centre, basis), y) for name, (x, y) in held.items()}
    scores = {}
    for shrinkage in shrinkages:
        weight, bias = prototype_head(sums, count_weight=ALPHA, shrinkage=shrinkage, noise_std=std, basis=basis)
        scores[shrinkage] = tuple(balanced_accuracy_score(held_units[name][1],
                                                          (held_units[name][0] @ weight.T + bias).argmax(1))
                                  for name in ("val", "test"))
    return max(scores.values(), key=lambda val_test: val_test[0])  # the shrinkage validation chooses, first on ties


if __name__ == "__main__":
    shards, held = load_features(sys.argv[1])
    print("| subspace | k | epsilon | validation balanced accuracy, mean | test balanced accuracy, mean [min-max] over "
          "30 seeds | sd | exact head (test) |\n|---|---|---|---|---|---|---|")
    for epsilon in (1.0, 10.0):
        z_p = calibrate_noise(lambda z: compose_epsilon([dp_accounting.GaussianDpEvent(Z_CENTRE),
                                                         dp_accounting.GaussianDpEvent(z)], delta=DELTA),
                              target=epsilon)
        for name, make in (("ImageNet classifier", lite0_basis), ("random", random_basis)):
            for k in (64, 128, 256, 384, 512, 768, 1280):
                basis = None if k == 1280 else make(k)
                if k == 1280 and name == "random":
                    continue  # the same as the full space above
                vals, tests = zip(*(run(shards, held, basis, z_p=z_p, seed=s, shrinkages=(30.0, 100.0, 300.0))
                                    for s in range(SEEDS)))
                exact = run(shards, held, basis, z_p=z_p, seed=0, shrinkages=(0.0, 30.0, 100.0, 300.0),
                            noise=False)[1]
                label = "none (full space)" if k == 1280 else name
                print(f"| {label} | {k} | {epsilon:g} | {np.mean(vals):.3f} | {np.mean(tests):.3f} "
                      f"[{min(tests):.3f}-{max(tests):.3f}] | {np.std(tests):.3f} | {exact:.3f} |", flush=True)
