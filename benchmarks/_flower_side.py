"""The Flower side of ``flower_comparison.py``: the same workload as a Flower 1.4x simulation.

Runs under the interpreter of a separate virtualenv that has ``flwr[simulation]``,
torch and torchvision (not fedray: nothing here imports it). It is started by
``flower_comparison.py`` as a subprocess; by hand:

    ../flower-venv/bin/python benchmarks/_flower_side.py --data-root $ISIC_DIR --out flower.json
    ../flower-venv/bin/python benchmarks/_flower_side.py --dealt FOLDER --clients-per-round 10 --rounds 10 ...

Two sources of data, one simulation:

- **ISIC** (``--data-root``; the ``isic-mobilenet`` workload), step for step what fedray does for
  ``data=isic model=mobilenet_v3_small``:

  1. decode every ``Train/<class>/*.jpg`` once (sorted by name, RGB, PIL bilinear
     resize to S×S, uint8, on a thread pool);
  2. stratified 70/10/20 train/val/test split; train and val each dealt to the
     hospitals ``equal_per_class`` (each gets floor(n_c / N) of class c);
  3. colour ZCA (3×3, eps 1e-3) fitted on the training shards;
  4. torchvision ``mobilenet_v3_small(num_classes=9)`` from scratch.

- **fedray's own deal** (``--dealt FOLDER``; the many-client workloads ``ehr-mlp`` and
  ``images-small-cnn``): ``flower_comparison.py`` runs fedray's data code (load or
  generate, split, partition, input map) in fedray's interpreter and writes the
  result to ``FOLDER``: every hospital's training and validation shard as .npy,
  the held-out validation and test sets, ``meta.json`` (model, input map, classes)
  and ``init_params.npz``, the initial weights of fedray's own model builder. This
  side rebuilds the model from a few lines (``mlp``, ``small_cnn``) and loads those
  weights with ``strict=True``, so a model that differs from fedray's in any
  parameter name or shape stops the run. The data are then the very records, in
  the very shards, that the fedray run deals itself.

Then, for either:

- ``flwr.simulation.run_simulation`` with ``num_supernodes = N``: a ``ServerApp``
  running ``flwr.serverapp.strategy.FedAvg`` (``fraction_train = m / N``: a fixed
  ``m`` nodes a round, drawn uniformly; weighted by sample count) and a ``ClientApp``:
  ``train`` = ``local_epochs`` of SGD (lr, momentum 0.9, a fresh optimizer each
  round) on the node's shard in shuffled batches, flips first for images, then the
  input map (colour whitening ``W (x/255 - m)``, or a table's clip-and-scale to its
  public ranges), as fedray's trainer does; ``evaluate`` = loss and accuracy on the
  node's own validation shard, every round on as many nodes as train (``--client-eval round``,
  what fedray's hospitals do without DP: the round's participants), on all (``all``) or on
  none (``none``); the server's
  ``evaluate_fn`` evaluates the new global model on the whole validation and test
  sets every round (fedray's driver does the same). The initial model is not
  evaluated (fedray does not evaluate it either).
- one torch thread in every client and in the server's evaluation (fedray pins
  each actor to ``max(1, int(num_cpus))`` threads).

Each client process loads a shard once (from the .npy files) and keeps one model
object between messages, as fedray's hospital actors do.

It prints one JSON line (prefixed ``FLOWER_RESULT``) with its timings: imports,
data (decode + split, or reading fedray's dealt sets), ``run_simulation`` wall,
and per round the time from the strategy's ``configure_train`` to the end of the
server-side evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from _common import add_workload_arguments  # stdlib only: safe under the Flower interpreter

T_PROCESS = time.perf_counter()

EVAL_BATCH = 256
ZCA_EPS = 1e-3
SUFFIXES = (".jpg", ".jpeg", ".png")

# Per client process: its shards and one model object, kept between messages (like a fedray hospital actor).
_CACHE: dict = {}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_arguments(p, data_root_default="")
    p.add_argument("--dealt", default=None,
                   help="folder of fedray's dealt shards, held-out sets, meta.json and init_params.npz "
                        "(written by flower_comparison.py); without it, --data-root's ISIC images are decoded here")
    p.add_argument("--clients-per-round", type=int, default=None,
                   help="m: FedAvg trains a fixed m nodes a round (fraction_train = m / N); default every node")
    p.add_argument("--client-eval", choices=("round", "all", "none"), default="round",
                   help="which nodes evaluate the global model on their own validation shard every round: as many "
                        "as train (round: fedray's participants do), every node, or none")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--client-cpus", type=float, default=0.4, help="client_resources num_cpus")
    p.add_argument("--ray-cpus", type=int, default=None, help="init_args num_cpus (default: all cores)")
    p.add_argument("--out", default=None, help="also write the JSON result here")
    args = p.parse_args(argv)
    if args.dealt is None and not args.data_root:
        p.error("give --data-root (the ISIC images) or --dealt (fedray's dealt shards)")
    return args


# -- ISIC data (same steps as fedray's isic loader, split and equal_per_class deal) --------------------

def decode(root: str, size: int):
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor
    from PIL import Image

    train = os.path.join(root, "Train")
    classes = sorted(d for d in os.listdir(train) if os.path.isdir(os.path.join(train, d)) and not d.startswith("."))
    records = []
    for label, name in enumerate(classes):
        files = sorted(f for f in os.listdir(os.path.join(train, name)) if f.lower().endswith(SUFFIXES))
        records += [(os.path.join(train, name, f), label) for f in files]
    images = np.empty((len(records), 3, size, size), dtype=np.uint8)

    def one(i: int) -> None:
        with Image.open(records[i][0]) as img:
            images[i] = np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR)).transpose(2, 0, 1)

    with ThreadPoolExecutor(min(8, 2 * (os.cpu_count() or 2))) as pool:
        list(pool.map(one, range(len(records))))
    return images, np.array([label for _, label in records], dtype=np.int64), classes


def stratified_split(labels, fractions=(0.7, 0.1, 0.2), seed=0):
    """Index arrays (train, val, test) with fedray's per-class counts.

    fedray cuts the test set off everything, then the validation set off the
    rest, each with sklearn's stratified ``train_test_split``, which gives
    every class its share of the part it keeps by largest remainders. The
    same counts here (ties between equal remainders aside), without sklearn.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(labels)
    classes = np.unique(labels)
    counts = np.array([(labels == c).sum() for c in classes])
    rest = _apportion(counts, n - round(fractions[2] * n))
    keep = _apportion(rest, rest.sum() - round(fractions[1] * n))
    parts = {"train": [], "val": [], "test": []}
    for c, r, k in zip(classes, rest, keep):
        idx = rng.permutation(np.flatnonzero(labels == c))
        parts["train"].append(idx[:k])
        parts["val"].append(idx[k:r])
        parts["test"].append(idx[r:])
    return tuple(np.sort(np.concatenate(parts[k])) for k in ("train", "val", "test"))


def _apportion(counts, total):
    """``total`` draws spread over classes in proportion to ``counts``: floors, then the largest remainders."""
    import numpy as np

    raw = counts * total / counts.sum()
    out = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - out), kind="stable")[: total - out.sum()]:
        out[i] += 1
    return out


def equal_per_class(indices, labels, hospitals, seed):
    """Each hospital gets floor(n_c / N) records of class c; the remainder goes to nobody (fedray's scheme)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shards = [[] for _ in range(hospitals)]
    for c in np.unique(labels[indices]):
        idx = rng.permutation(indices[labels[indices] == c])
        per = len(idx) // hospitals
        for k in range(hospitals):
            shards[k].append(idx[k * per:(k + 1) * per])
    return [np.sort(np.concatenate(s)) for s in shards]


def colour_zca(images):
    """3x3 colour ZCA of the training pixels in [0, 1] (fedray's whitening=auto for a model trained from scratch)."""
    import numpy as np

    x = images.transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64) / 255.0
    mean = x.mean(axis=1)
    cov = np.cov(x)
    lam, u = np.linalg.eigh(cov)
    w = u @ np.diag(1.0 / np.sqrt(lam + ZCA_EPS)) @ u.T
    return mean.astype(np.float32), w.astype(np.float32)


def prepare_isic(args) -> tuple[str, dict, dict]:
    """Decode, split, deal and fit ZCA; write the shards to a fresh folder. (folder, meta, held-out sets)."""
    import numpy as np

    images, labels, classes = decode(args.data_root, args.image_size)
    train, val, test = stratified_split(labels, seed=args.seed)
    train_shards = equal_per_class(train, labels, args.hospitals, args.seed)
    val_shards = equal_per_class(val, labels, args.hospitals, args.seed)
    mean, w = colour_zca(images[np.concatenate(train_shards)])
    folder = tempfile.mkdtemp(prefix="flower-bench-")
    for k, (t, v) in enumerate(zip(train_shards, val_shards)):
        np.save(os.path.join(folder, f"train_x_{k}.npy"), images[t])
        np.save(os.path.join(folder, f"train_y_{k}.npy"), labels[t])
        np.save(os.path.join(folder, f"val_x_{k}.npy"), images[v])
        np.save(os.path.join(folder, f"val_y_{k}.npy"), labels[v])
    meta = {"workload": "isic-mobilenet", "kind": "image", "model": {"name": "mobilenet_v3_small"},
            "num_classes": len(classes), "hospitals": args.hospitals, "augment": "flips",
            "input_map": {"kind": "whitening", "mean": mean.tolist(), "matrix": w.tolist()},
            "train_sizes": [len(s) for s in train_shards], "val_sizes": [len(s) for s in val_shards],
            "splits": {"train": len(train), "val": len(val), "test": len(test)}}
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f)
    held_out = {split: (images[idx], labels[idx]) for split, idx in (("val", val), ("test", test))}
    return folder, meta, held_out


def read_dealt(folder: str) -> tuple[dict, dict]:
    """fedray's dealt sets as ``flower_comparison.py`` wrote them: (meta, held-out sets)."""
    import numpy as np

    with open(os.path.join(folder, "meta.json")) as f:
        meta = json.load(f)
    held_out = {split: tuple(np.load(os.path.join(folder, f"{split}_{part}.npy")) for part in ("x", "y"))
                for split in ("val", "test")}
    return meta, held_out


# -- model, input map and per-batch work (runs in client processes and in the server thread) ---------------

def small_cnn(num_classes: int):
    """fedray's ``small_cnn`` (fedray/models/small_cnn.py), rebuilt here: three Conv3x3-GroupNorm(8)-ReLU-MaxPool2
    blocks of 16, 32 and 64 channels, a global average pool and a linear head."""
    from torch import nn

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            widths = (3, 16, 32, 64)
            self.features = nn.Sequential(*(nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.GroupNorm(8, c_out), nn.ReLU(), nn.MaxPool2d(2))
                for c_in, c_out in zip(widths, widths[1:])))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(widths[-1], num_classes)

        def forward(self, images):
            return self.head(self.pool(self.features(images)).flatten(1))

    return SmallCNN()


def build_model(meta: dict):
    """The model ``meta`` names, with fedray's parameter names and shapes (``init_params.npz`` is loaded strictly)."""
    from torch import nn

    spec, classes = meta["model"], meta["num_classes"]
    if spec["name"] == "mobilenet_v3_small":
        import torchvision

        return torchvision.models.mobilenet_v3_small(weights=None, num_classes=classes)
    if spec["name"] == "small_cnn":
        return small_cnn(classes)
    if spec["name"] == "mlp":  # fedray/models/tabular.py: D -> h_1 -> ... -> C, ReLU between
        widths = (meta["num_features"], *spec["hidden"])
        layers = []
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [nn.Linear(w_in, w_out), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(widths[-1], classes))
    raise SystemExit(f"_flower_side.py has no model {spec['name']!r}")


def initial_state(folder: str):
    """fedray's initial weights from ``init_params.npz`` as a torch state dict, or None (the ISIC workload)."""
    import numpy as np
    import torch

    path = os.path.join(folder, "init_params.npz")
    if not os.path.exists(path):
        return None
    with np.load(path) as arrays:
        return {name: torch.from_numpy(arrays[name].copy()) for name in arrays.files}


def input_map(spec: dict):
    """The map fedray's trainer applies to every batch: colour whitening ``W (x/255 - m)`` of uint8 images
    (fedray/data/whitening.py) or a table's clip-and-scale ``(clip(x, l, h) - l) / (h - l)`` (feature_scaling.py)."""
    import torch

    if spec["kind"] == "whitening":
        w = torch.tensor(spec["matrix"], dtype=torch.float32)
        scaled, bias = w / 255.0, (w @ torch.tensor(spec["mean"], dtype=torch.float32)).view(1, 3, 1, 1)
        return lambda x: torch.einsum("ij,bjhw->bihw", scaled, x.to(torch.float32)).sub_(bias)
    if spec["kind"] == "feature_scaling":
        low, high = (torch.tensor(spec[k], dtype=torch.float32) for k in ("low", "high"))
        return lambda x: (torch.clamp(x.to(torch.float32), low, high) - low).div_(high - low)
    raise SystemExit(f"_flower_side.py has no input map {spec['kind']!r}")


def flips(x, generator):
    import torch

    b = x.shape[0]
    lr, ud = (torch.rand(2, b, generator=generator) < 0.5).view(2, b, 1, 1, 1)
    x = torch.where(lr, x.flip(-1), x)
    return torch.where(ud, x.flip(-2), x)


def metrics(model, inputs, labels, apply_map):
    """Loss and accuracy of ``model`` on raw ``inputs`` (uint8 images or table rows; batches of 256, no grad)."""
    import torch

    model.eval()
    losses, correct = [], 0
    with torch.no_grad():
        for i in range(0, len(labels), EVAL_BATCH):
            x = apply_map(torch.as_tensor(inputs[i:i + EVAL_BATCH]))
            y = torch.as_tensor(labels[i:i + EVAL_BATCH])
            logits = model(x)
            losses.append(float(torch.nn.functional.cross_entropy(logits, y, reduction="sum")))
            correct += int((logits.argmax(1) == y).sum())
    n = max(len(labels), 1)
    return {"loss": sum(losses) / n, "accuracy": correct / n}


def client_state(context):
    """This process's shard of partition ``partition-id``, its model and input map (loaded/built once per process)."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    folder = context.run_config["shards"] if "shards" in context.run_config else os.environ["FLOWER_BENCH_SHARDS"]
    pid = int(context.node_config["partition-id"])
    if pid not in _CACHE:
        load = lambda name: torch.from_numpy(np.load(os.path.join(folder, f"{name}_{pid}.npy")))  # noqa: E731
        _CACHE[pid] = {k: load(k) for k in ("train_x", "train_y", "val_x", "val_y")}
    if "model" not in _CACHE:
        with open(os.path.join(folder, "meta.json")) as f:
            meta = json.load(f)
        _CACHE["meta"] = meta
        _CACHE["model"] = build_model(meta)
        _CACHE["map"] = input_map(meta["input_map"])
    return pid, _CACHE[pid], _CACHE["model"], _CACHE["map"], _CACHE["meta"]


def client_train(msg, context):
    import torch
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    start = time.perf_counter()
    pid, shard, model, apply_map, meta = client_state(context)
    config = msg.content["config"]
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=float(config["lr"]), momentum=float(config["momentum"]))
    server_round = int(config["server-round"])
    gen = torch.Generator().manual_seed(int(config["seed"]) * 1000 + pid * 100 + server_round)
    inputs, labels = shard["train_x"], shard["train_y"]
    augment = meta["augment"] == "flips"
    loss_sum, seen = 0.0, 0
    for _ in range(int(config["local-epochs"])):
        for idx in torch.randperm(len(labels), generator=gen).split(int(config["batch-size"])):
            x = inputs[idx]
            x = apply_map(flips(x, gen) if augment else x)
            y = labels[idx]
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(y)
            seen += len(y)
    content = RecordDict({
        "arrays": ArrayRecord(model.state_dict()),
        "metrics": MetricRecord({"train_loss": loss_sum / max(seen, 1), "num-examples": len(labels),
                                 "fit_seconds": time.perf_counter() - start}),
    })
    return Message(content=content, reply_to=msg)


def client_evaluate(msg, context):
    from flwr.app import Message, MetricRecord, RecordDict

    pid, shard, model, apply_map, _ = client_state(context)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    m = metrics(model, shard["val_x"], shard["val_y"], apply_map)
    return Message(content=RecordDict({"metrics": MetricRecord({**m, "num-examples": len(shard["val_y"])})}),
                   reply_to=msg)


# -- the run ---------------------------------------------------------------------------------------------

def main(argv=None) -> dict:
    args = parse_args(argv)
    t0 = time.perf_counter()
    import torch
    import flwr
    from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation
    imports = time.perf_counter() - t0

    t0 = time.perf_counter()
    if args.dealt:
        shards_dir, owned = args.dealt, False
        meta, held_out = read_dealt(shards_dir)
    else:
        (shards_dir, meta, held_out), owned = prepare_isic(args), True
    os.environ["FLOWER_BENCH_SHARDS"] = shards_dir  # Ray workers inherit the driver's environment
    hospitals = meta["hospitals"]
    per_round = args.clients_per_round or hospitals
    data_seconds = time.perf_counter() - t0

    torch.set_num_threads(1)  # the server's evaluation, like fedray's driver actor (0.25 CPU: 1 thread)
    torch.manual_seed(args.seed)
    server_model = build_model(meta)
    init = initial_state(shards_dir)
    if init is not None:
        server_model.load_state_dict(init, strict=True)  # fedray's parameter names and shapes, or an error
    apply_map = input_map(meta["input_map"])
    held_out = {split: (torch.from_numpy(x), torch.from_numpy(y)) for split, (x, y) in held_out.items()}
    timing = {"round_start": {}, "round_end": {}, "evaluate_fn": {}, "final": {}, "train_nodes": {}}

    def evaluate_fn(server_round: int, arrays):
        if server_round == 0:  # fedray does not evaluate the initial model
            return None
        t = time.perf_counter()
        server_model.load_state_dict(arrays.to_torch_state_dict())
        out = {}
        for split, (x, y) in held_out.items():
            for key, value in metrics(server_model, x, y, apply_map).items():
                out[f"{split}_{key}"] = value
        timing["evaluate_fn"][server_round] = time.perf_counter() - t
        timing["round_end"][server_round] = time.perf_counter()
        timing["final"] = out
        return MetricRecord(out)

    class TimedFedAvg(FedAvg):
        def configure_train(self, server_round, arrays, config, grid):
            timing["round_start"][server_round] = time.perf_counter()
            messages = list(super().configure_train(server_round, arrays, config, grid))
            timing["train_nodes"][server_round] = len(messages)
            return messages

    evaluating = {"round": per_round, "all": hospitals, "none": 0}[args.client_eval]
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        strategy = TimedFedAvg(fraction_train=per_round / hospitals, fraction_evaluate=evaluating / hospitals,
                               min_train_nodes=per_round, min_evaluate_nodes=evaluating,
                               min_available_nodes=hospitals)
        train_config = ConfigRecord({"lr": args.lr, "momentum": args.momentum, "batch-size": args.batch_size,
                                     "local-epochs": args.local_epochs, "seed": args.seed})
        strategy.start(grid=grid, initial_arrays=ArrayRecord(server_model.state_dict()), num_rounds=args.rounds,
                       train_config=train_config, evaluate_fn=evaluate_fn)

    client_app = ClientApp()
    client_app.train()(client_train)
    client_app.evaluate()(client_evaluate)

    init_args = {"logging_level": "WARNING", "log_to_driver": True}
    if args.ray_cpus:
        init_args["num_cpus"] = args.ray_cpus
    backend_config = {"client_resources": {"num_cpus": args.client_cpus, "num_gpus": 0.0}, "init_args": init_args}
    t0 = time.perf_counter()
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=hospitals,
                   backend_config=backend_config)
    sim_seconds = time.perf_counter() - t0
    sim_start = t0

    rounds = [{"round": r, "round_seconds": timing["round_end"][r] - timing["round_start"][r],
               "server_eval_seconds": timing["evaluate_fn"][r], "train_nodes": timing["train_nodes"].get(r)}
              for r in sorted(timing["round_end"])]
    result = {
        "flwr": flwr.__version__, "torch": torch.__version__, "workload": meta.get("workload"),
        "imports_seconds": imports, "data_seconds": data_seconds, "run_simulation_seconds": sim_seconds,
        "simulation_start_to_round1": timing["round_start"].get(1, float("nan")) - sim_start,
        "after_last_round": (t0 + sim_seconds) - max(timing["round_end"].values(), default=float("nan")),
        "process_seconds_to_here": time.perf_counter() - getattr(sys.modules.get("__main__"), "T_PROCESS", T_PROCESS),
        "rounds": rounds, "final": timing["final"],
        "train_sizes": meta["train_sizes"], "val_sizes": meta["val_sizes"], "splits": meta["splits"],
        "clients_per_round": per_round, "client_eval": args.client_eval, "fedray_initial_weights": init is not None,
        "client_resources": backend_config["client_resources"], "ray_init_args": init_args,
    }
    print("FLOWER_RESULT " + json.dumps(result), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    if owned:
        import shutil
        shutil.rmtree(shards_dir, ignore_errors=True)
    return result


if __name__ == "__main__":
    # Run as the importable module ``_flower_side`` (not ``__main__``), so the ClientApp's functions reach the
    # Ray workers by reference (Flower puts this script's folder on their PYTHONPATH) and _CACHE is per process.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _flower_side

    _flower_side.main()
