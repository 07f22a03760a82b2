"""The offline simulation behind privacy=dp_prototypes' defaults: the two masked releases and the head, in NumPy.

It takes fedray's own cached Lite0 features of the 5 hospitals (the loader of the bias-calibration folder's
simulate.py), releases the centre at noise multiplier z_c and the class sums and counts at the z_p that makes the
two compose to epsilon (fedray's calibrate_noise and compose_epsilon, RDP, delta 1e-5), with the noise of all 5
shares of which 4 are honest (std z sqrt(5/4) in the sum), builds fedray's prototype_head for each shrinkage,
and reports test balanced accuracy of the shrinkage chosen on validation over 10 noise seeds. Run from the
repository root:
    python sweeps/privacy_tradeoff_isic/prototypes-cpu-2026-12-07/simulate.py ../shared/data/isic-skin-cancer-9
"""
import importlib.util
import sys
from pathlib import Path

import dp_accounting
import numpy as np
from sklearn.metrics import balanced_accuracy_score

sys.path.insert(0, ".")
from fedray.privacy.ledger import calibrate_noise, compose_epsilon  # noqa: E402
from fedray.privacy.prototypes import class_sums, prototype_head, sensitivity  # noqa: E402
from fedray.training.feature_norm import centred_unit_features  # noqa: E402

LOADER = Path(__file__).parent.parent / "bias-calibration-cpu-2026-12-07" / "simulate.py"
K, HONEST, DELTA, N_CLASSES, SHRINKAGES = 5, 4, 1e-5, 9, (30.0, 100.0, 300.0)


def load_features(root: str):
    spec = importlib.util.spec_from_file_location("bias_calibration_simulate", LOADER)
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    shards, held = loader.features(root)
    return [(x[:, 0].double().numpy(), y.numpy()) for x, y in shards], held


def prototype_noise(epsilon, z_centre):
    """z_p: the two releases compose to epsilon (fedray's dp_prototypes calibrates it so)."""
    return calibrate_noise(lambda z: compose_epsilon([dp_accounting.GaussianDpEvent(z_centre),
                                                      dp_accounting.GaussianDpEvent(z)], delta=DELTA), target=epsilon)


def run(shards, held, *, z_centre, z_p, count_weight, seed):
    rng = np.random.default_rng(seed)
    spread = np.sqrt(K / HONEST)  # every share is in the sum, the colluder's too
    units = [x / np.linalg.norm(x, axis=1, keepdims=True) for x, _ in shards]
    total = sum(len(u) for u in units)
    centre = (sum(u.sum(0) for u in units) + rng.normal(0, z_centre * spread, units[0].shape[1])) / total
    std = sensitivity(count_weight) * z_p * spread
    sums = sum(class_sums(centred_unit_features(x, centre), y, num_classes=N_CLASSES, count_weight=count_weight)
               for x, y in shards)
    sums = sums + rng.normal(0, std, sums.shape)
    held_units = {name: (centred_unit_features(held[name][0].double().numpy(), centre), held[name][1])
                  for name in ("val", "test")}
    scores = {}
    for shrinkage in SHRINKAGES:
        weight, bias = prototype_head(sums, count_weight=count_weight, shrinkage=shrinkage, noise_std=std)
        scores[shrinkage] = tuple(balanced_accuracy_score(labels, (units @ weight.T + bias).argmax(1))
                                  for units, labels in held_units.values())
    return max(scores.values())[1]  # the shrinkage with the best validation score


if __name__ == "__main__":
    shards, held = load_features(sys.argv[1])
    print("| epsilon | z_c | count weight | test balanced accuracy, mean [min-max] over 10 seeds |\n|---|---|---|---|")
    for epsilon in (1.0, 10.0):
        for z_centre, count_weight in ((8.0, 0.33), (12.0, 0.33), (16.0, 0.33), (8.0, 0.2), (8.0, 0.5)):
            z_p = prototype_noise(epsilon, z_centre)
            tests = [run(shards, held, z_centre=z_centre, z_p=z_p, count_weight=count_weight, seed=s)
                     for s in range(10)]
            print(f"| {epsilon:g} | {z_centre:g} | {count_weight:g} | {np.mean(tests):.3f} "
                  f"[{min(tests):.3f}-{max(tests):.3f}] |", flush=True)
