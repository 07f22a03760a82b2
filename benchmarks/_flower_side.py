"""The Flower side of ``flower_comparison.py``: the same workload as a Flower 1.4x simulation.

Runs under the interpreter of a separate virtualenv that has ``flwr[simulation]``,
torch and torchvision (not fedray: nothing here imports it). It is started by
``flower_comparison.py`` as a subprocess; by hand:

    ../flower-venv/bin/python benchmarks/_flower_side.py --data-root $ISIC_DIR --out flower.json

What it does, step for step what fedray does for ``data=isic model=mobilenet_v3_small``:

1. decode every ``Train/<class>/*.jpg`` once (sorted by name, RGB, PIL bilinear
   resize to S×S, uint8, on a thread pool);
2. stratified 70/10/20 train/val/test split; train and val each dealt to the
   hospitals ``equal_per_class`` (each gets floor(n_c / N) of class c);
3. colour ZCA (3×3, eps 1e-3) fitted on the training shards, applied per batch
   after random left-right / up-down flips, as fedray's input map does;
4. ``flwr.simulation.run_simulation`` with ``num_supernodes = N``: a
   ``ServerApp`` running ``flwr.serverapp.strategy.FedAvg`` (every node trains
   and evaluates every round, weighted by sample count) and a ``ClientApp``:
   ``train`` = ``local_epochs`` of SGD (lr, momentum 0.9) on the node's shard
   in shuffled batches, ``evaluate`` = metrics on the node's validation shard;
   the server's ``evaluate_fn`` evaluates the new global model on the whole
   validation and test sets every round (fedray's driver does the same). The
   initial model is not evaluated (fedray does not evaluate it either).
5. torchvision ``mobilenet_v3_small(num_classes=9)`` from scratch; one torch
   thread in every client and in the server's evaluation (fedray pins each
   actor to ``max(1, int(num_cpus))`` threads).

Each client process loads its shard once (from an .npy file the server
process wrote, memory-mapped) and keeps its model object between messages,
as fedray's hospital actors do.

It prints one JSON line (prefixed ``FLOWER_RESULT``) with its timings: imports,
decode + split, ``run_simulation`` wall, and per round the time from the
strategy's ``configure_train`` to the end of the server-side evaluation.
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
    add_workload_arguments(p, data_root_default=None)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--client-cpus", type=float, default=0.4, help="client_resources num_cpus")
    p.add_argument("--ray-cpus", type=int, default=None, help="init_args num_cpus (default: all cores)")
    p.add_argument("--out", default=None, help="also write the JSON result here")
    return p.parse_args(argv)


# -- data (same steps as fedray's isic loader, split and equal_per_class deal) ----------------------------

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


# -- model and per-batch work (runs in client processes and in the server thread) ----------------------------

def build_model(num_classes: int):
    import torchvision

    return torchvision.models.mobilenet_v3_small(weights=None, num_classes=num_classes)


def whiten(x_uint8, mean, w):
    import torch

    x = x_uint8.float().div_(255.0)
    x = x - mean.view(1, 3, 1, 1)
    return torch.einsum("ij,bjhw->bihw", w, x)


def flips(x, generator):
    import torch

    b = x.shape[0]
    lr, ud = (torch.rand(2, b, generator=generator) < 0.5).view(2, b, 1, 1, 1)
    x = torch.where(lr, x.flip(-1), x)
    return torch.where(ud, x.flip(-2), x)


def metrics(model, images, labels, mean, w):
    """Loss and accuracy of ``model`` on uint8 ``images`` (batches of 256, no grad)."""
    import torch

    model.eval()
    losses, correct = [], 0
    with torch.no_grad():
        for i in range(0, len(labels), EVAL_BATCH):
            x = whiten(torch.as_tensor(images[i:i + EVAL_BATCH]), mean, w)
            y = torch.as_tensor(labels[i:i + EVAL_BATCH])
            logits = model(x)
            losses.append(float(torch.nn.functional.cross_entropy(logits, y, reduction="sum")))
            correct += int((logits.argmax(1) == y).sum())
    n = max(len(labels), 1)
    return {"loss": sum(losses) / n, "accuracy": correct / n}


def client_state(context):
    """This process's shard of partition ``partition-id`` and its model (loaded/built once per process)."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    folder = context.run_config["shards"] if "shards" in context.run_config else os.environ["FLOWER_BENCH_SHARDS"]
    pid = int(context.node_config["partition-id"])
    if pid not in _CACHE:
        load = lambda name: torch.from_numpy(np.load(os.path.join(folder, f"{name}_{pid}.npy")))  # noqa: E731
        _CACHE[pid] = {k: load(k) for k in ("train_x", "train_y", "val_x", "val_y")}
    if "model" not in _CACHE:
        meta = json.load(open(os.path.join(folder, "meta.json")))
        _CACHE["meta"] = meta
        _CACHE["model"] = build_model(meta["num_classes"])
        _CACHE["zca"] = (torch.tensor(meta["mean"]), torch.tensor(meta["w"]))
    return pid, _CACHE[pid], _CACHE["model"], _CACHE["zca"], _CACHE["meta"]


def client_train(msg, context):
    import torch
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    start = time.perf_counter()
    pid, shard, model, (mean, w), meta = client_state(context)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=meta["lr"], momentum=meta["momentum"])
    server_round = int(msg.content["config"]["server-round"])
    gen = torch.Generator().manual_seed(meta["seed"] * 1000 + pid * 100 + server_round)
    images, labels = shard["train_x"], shard["train_y"]
    loss_sum, seen = 0.0, 0
    for _ in range(meta["local_epochs"]):
        for idx in torch.randperm(len(labels), generator=gen).split(meta["batch_size"]):
            x = whiten(flips(images[idx], gen), mean, w)
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

    pid, shard, model, (mean, w), _ = client_state(context)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    m = metrics(model, shard["val_x"], shard["val_y"], mean, w)
    return Message(content=RecordDict({"metrics": MetricRecord({**m, "num-examples": len(shard["val_y"])})}),
                   reply_to=msg)


# -- the run ---------------------------------------------------------------------------------------------

def main(argv=None) -> dict:
    args = parse_args(argv)
    t0 = time.perf_counter()
    import numpy as np
    import torch
    import flwr
    from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation
    imports = time.perf_counter() - t0

    t0 = time.perf_counter()
    images, labels, classes = decode(args.data_root, args.image_size)
    train, val, test = stratified_split(labels, seed=args.seed)
    train_shards = equal_per_class(train, labels, args.hospitals, args.seed)
    val_shards = equal_per_class(val, labels, args.hospitals, args.seed)
    mean, w = colour_zca(images[np.concatenate(train_shards)])
    shards_dir = tempfile.mkdtemp(prefix="flower-bench-")
    for k, (t, v) in enumerate(zip(train_shards, val_shards)):
        np.save(os.path.join(shards_dir, f"train_x_{k}.npy"), images[t])
        np.save(os.path.join(shards_dir, f"train_y_{k}.npy"), labels[t])
        np.save(os.path.join(shards_dir, f"val_x_{k}.npy"), images[v])
        np.save(os.path.join(shards_dir, f"val_y_{k}.npy"), labels[v])
    meta = {"num_classes": len(classes), "mean": mean.tolist(), "w": w.tolist(), "lr": args.lr,
            "momentum": args.momentum, "batch_size": args.batch_size, "local_epochs": args.local_epochs,
            "seed": args.seed}
    with open(os.path.join(shards_dir, "meta.json"), "w") as f:
        json.dump(meta, f)
    os.environ["FLOWER_BENCH_SHARDS"] = shards_dir  # Ray workers inherit the driver's environment
    data_seconds = time.perf_counter() - t0

    torch.set_num_threads(1)  # the server's evaluation, like fedray's driver actor (0.25 CPU: 1 thread)
    torch.manual_seed(args.seed)
    server_model = build_model(len(classes))
    zca = (torch.tensor(mean), torch.tensor(w))
    held_out = {split: (torch.from_numpy(images[idx]), torch.from_numpy(labels[idx]))
                for split, idx in (("val", val), ("test", test))}
    timing = {"round_start": {}, "round_end": {}, "evaluate_fn": {}, "final": {}}

    def evaluate_fn(server_round: int, arrays):
        if server_round == 0:  # fedray does not evaluate the initial model
            return None
        t = time.perf_counter()
        server_model.load_state_dict(arrays.to_torch_state_dict())
        out = {}
        for split, (x, y) in held_out.items():
            for key, value in metrics(server_model, x, y, *zca).items():
                out[f"{split}_{key}"] = value
        timing["evaluate_fn"][server_round] = time.perf_counter() - t
        timing["round_end"][server_round] = time.perf_counter()
        timing["final"] = out
        return MetricRecord(out)

    class TimedFedAvg(FedAvg):
        def configure_train(self, server_round, arrays, config, grid):
            timing["round_start"][server_round] = time.perf_counter()
            return super().configure_train(server_round, arrays, config, grid)

    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        strategy = TimedFedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=args.hospitals,
                               min_evaluate_nodes=args.hospitals, min_available_nodes=args.hospitals)
        strategy.start(grid=grid, initial_arrays=ArrayRecord(server_model.state_dict()), num_rounds=args.rounds,
                       train_config=ConfigRecord({"lr": args.lr}), evaluate_fn=evaluate_fn)

    client_app = ClientApp()
    client_app.train()(client_train)
    client_app.evaluate()(client_evaluate)

    init_args = {"logging_level": "WARNING", "log_to_driver": True}
    if args.ray_cpus:
        init_args["num_cpus"] = args.ray_cpus
    backend_config = {"client_resources": {"num_cpus": args.client_cpus, "num_gpus": 0.0}, "init_args": init_args}
    t0 = time.perf_counter()
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=args.hospitals,
                   backend_config=backend_config)
    sim_seconds = time.perf_counter() - t0
    sim_start = t0

    rounds = [{"round": r, "round_seconds": timing["round_end"][r] - timing["round_start"][r],
               "server_eval_seconds": timing["evaluate_fn"][r]} for r in sorted(timing["round_end"])]
    result = {
        "flwr": flwr.__version__, "torch": torch.__version__,
        "imports_seconds": imports, "data_seconds": data_seconds, "run_simulation_seconds": sim_seconds,
        "simulation_start_to_round1": timing["round_start"].get(1, float("nan")) - sim_start,
        "after_last_round": (t0 + sim_seconds) - max(timing["round_end"].values(), default=float("nan")),
        "process_seconds_to_here": time.perf_counter() - getattr(sys.modules.get("__main__"), "T_PROCESS", T_PROCESS),
        "rounds": rounds, "final": timing["final"],
        "train_sizes": [len(s) for s in train_shards], "val_sizes": [len(s) for s in val_shards],
        "splits": {"train": len(train), "val": len(val), "test": len(test)},
        "client_resources": backend_config["client_resources"], "ray_init_args": init_args,
    }
    print("FLOWER_RESULT " + json.dumps(result), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    import shutil
    shutil.rmtree(shards_dir, ignore_errors=True)
    return result


if __name__ == "__main__":
    # Run as the importable module ``_flower_side`` (not ``__main__``), so the ClientApp's functions reach the
    # Ray workers by reference (Flower puts this script's folder on their PYTHONPATH) and _CACHE is per process.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _flower_side

    _flower_side.main()
