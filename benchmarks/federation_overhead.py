"""Federation overhead: a FedAvg round through the real engine against the same local training without Ray.

Federated: ``fedray.federation.experiment.run_experiment`` on a local Ray (the
CLI's ``cluster=local``), membership audit off. Round 1 is warm-up (CUDA/cuDNN
autotuning, first object transfers) and actor start-up is outside every round,
so only rounds 2.. count; each round's ``round_seconds`` (broadcast, local
training, collection, FedAvg, evaluation) and ``fit_seconds`` (the same without
the evaluation) come from ``result.rounds``.

Pure compute: in this one process, with the hospitals' own trainers
(``build_training_model`` + ``build_trainer`` on the same shards, device and
torch thread count as a hospital actor), ``LocalTrainer.fit`` for the same
local epochs on every hospital's shard in turn, i.e. the same images × epochs.
One such pass runs after every federated round (from ``on_round``), so the two
alternate and drift on a shared machine hits both alike; one extra pass before
the run is warm-up.

Ratios:

- overhead = federated round time / pure compute (sum of the hospitals' fit times);
- the same with the round's training phase only (without evaluation);
- against the ideal-parallel bound (the slowest hospital's pure fit), labelled
  as such: hospitals train concurrently (on fractions of one GPU, or on the
  CPU cores), so a round could in principle take as little as that.

    python benchmarks/federation_overhead.py                       # CPU: small_cnn, synthetic
    python benchmarks/federation_overhead.py --data isic --data-root $ISIC_DIR --model resnet50 --image-size 128
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import (compose, cuda_sync, data_overrides, device_summary, markdown_table, median,
                     run_and_report)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="small_cnn", help="backbone (conf/model/<name>.yaml)")
    p.add_argument("--data", default="synthetic", choices=["synthetic", "isic"])
    p.add_argument("--data-root", default=None, help="ISIC folder (Train/<class>/*.jpg); needed with --data isic")
    p.add_argument("--image-size", type=int, default=None, help="pixels per side (default: the data config's)")
    p.add_argument("--samples-per-class", type=int, default=560,
                   help="synthetic only; 560 gives ~311 training images per hospital at 5 hospitals, "
                        "as 5 x 311 ISIC images in the reference set-up")
    p.add_argument("--hospitals", type=int, default=5)
    p.add_argument("--rounds", type=int, default=6, help="federated rounds; round 1 is warm-up and not counted")
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--gpu-per-hospital", type=float, default=0.2, help="resources.hospital.num_gpus (GPU machines only)")
    p.add_argument("--cpu-per-hospital", type=float, default=None, help="resources.hospital.num_cpus (default: conf)")
    p.add_argument("--driver-gpu", type=float, default=None,
                   help="resources.driver.num_gpus; default: the conf's 0.1 if it fits next to the hospitals on one "
                        "GPU, else what is left (0 = the driver evaluates on the CPU)")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="any further Hydra override, e.g. --set privacy=dpsgd (repeatable)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def build_config(args, run_dir: Path):
    """The typed config (:class:`fedray.config.Config`) of the federated run."""
    import torch

    from fedray.config import replace

    gpus = torch.cuda.device_count()
    overrides = [
        *data_overrides(args), f"model={args.model}", f"fl.num_hospitals={args.hospitals}",
        f"fl.rounds={args.rounds}", f"fl.local_epochs={args.local_epochs}", f"train.batch_size={args.batch_size}",
        f"resources.hospital.num_gpus={args.gpu_per_hospital}", "audit.enabled=false",
    ]
    if args.cpu_per_hospital is not None:
        overrides.append(f"resources.hospital.num_cpus={args.cpu_per_hospital}")
    cfg = compose(overrides + list(args.extra), run_dir)
    if args.driver_gpu is not None:
        cfg = replace(cfg, **{"resources.driver.num_gpus": float(args.driver_gpu)})
    elif gpus:
        left = max(0.0, round(gpus - args.hospitals * args.gpu_per_hospital, 4))
        wanted = float(cfg.resources.driver.num_gpus)
        if left < wanted:
            print(f"note: {args.hospitals} x {args.gpu_per_hospital} GPU leaves {left:g} GPU for the driver "
                  f"(conf asks {wanted:g}); driver gets {left:g}" + (" and evaluates on the CPU" if left == 0 else ""),
                  file=sys.stderr)
            cfg = replace(cfg, **{"resources.driver.num_gpus": left})
    return replace(cfg, **{"audit.enabled": False})


class PureCompute:
    """The hospitals' trainers in this process, trained one after another."""

    def __init__(self, prep, hospital_res: dict):
        from fedray.privacy.randomness import NoiseSource, hospital
        from fedray.training import build_trainer
        from fedray.training.device import configure_process

        cfg = prep.cfg
        self.device = configure_process(num_cpus=hospital_res["num_cpus"], num_gpus=hospital_res["num_gpus"],
                                        seed=cfg.seed)
        self.epochs = int(cfg.fl.local_epochs)
        self.trainers = []
        for k, shard in enumerate(prep.dealt.train_shards):
            self.trainers.append(build_trainer(
                cfg=cfg, plan=prep.privacy.resolved_cfg, num_classes=prep.num_classes,
                num_features=prep.num_features, inputs=np.ascontiguousarray(np.asarray(shard.inputs)),
                labels=np.asarray(shard.labels), input_map=prep.dealt.input_map, device=self.device, hospital=k,
                noise=NoiseSource.reproducible(cfg.seed, hospital(k))))
        self.params = self.trainers[0].export()
        self.images_per_pass = sum(t.num_samples for t in self.trainers) * self.epochs
        self.passes: list[dict] = []

    def one_pass(self, round_idx: int) -> dict:
        """Every hospital's local epochs, sequentially; per-hospital training time and wall time with export."""
        fit, wall = [], []
        for trainer in self.trainers:
            cuda_sync()
            t0 = time.perf_counter()
            _, metrics = trainer.fit(self.params, epochs=self.epochs, round_idx=round_idx)
            cuda_sync()
            wall.append(time.perf_counter() - t0)
            # under DP a trainer withholds its fit time (fedray.privacy.mechanisms.released_metrics): use the wall time
            fit.append(metrics.get("fit_seconds", wall[-1]))
        return {"fit": fit, "wall": wall}


def aggregation_seconds(prep, pure: PureCompute, repeats: int = 5) -> float:
    """FedAvg of the hospitals' parameter dicts in this process (what the driver does once per round)."""
    from fedray.strategies import ClientResult, build_strategy

    strategy = build_strategy(prep.cfg.strategy)
    results = [ClientResult(hospital=k, params=pure.params, num_samples=t.num_samples)
               for k, t in enumerate(pure.trainers)]
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        strategy.aggregate(r, pure.params, results)
        times.append(time.perf_counter() - t0)
    return median(times)


def evaluation_seconds(prep, pure: PureCompute, repeats: int = 3) -> float:
    """The driver's held-out evaluation (val + test: inference and metrics) done in this process."""
    from fedray.metrics import classification_metrics
    from fedray.training.local import as_device_tensor

    trainer = pure.trainers[0]
    sets = [(as_device_tensor(np.asarray(s.inputs), pure.device), np.asarray(s.labels))
            for s in (prep.dealt.splits.val, prep.dealt.splits.test)]
    times = []
    for _ in range(repeats):
        cuda_sync()
        t0 = time.perf_counter()
        trainer.load(pure.params)
        for images, labels in sets:
            classification_metrics(labels, trainer.predict_proba(images))
        cuda_sync()
        times.append(time.perf_counter() - t0)
    return median(times)


def run(args) -> dict:
    import ray

    from fedray.federation.cluster import connect
    from fedray.federation.experiment import actor_resources, prepare_experiment, run_experiment

    if args.rounds < 2:
        raise SystemExit("--rounds must be at least 2: round 1 is warm-up")
    tmp = Path(tempfile.mkdtemp(prefix="fedray-bench-"))
    cfg = build_config(args, tmp / "run")
    prep = prepare_experiment(cfg)
    started_ray = connect(cfg.cluster)
    try:
        gpus_present = ray.cluster_resources().get("GPU", 0) > 0
        driver_res, hospital_res = actor_resources(cfg.resources, gpus_present=gpus_present)
        pure = PureCompute(prep, hospital_res)
        pure.one_pass(round_idx=0)  # warm-up
        agg = aggregation_seconds(prep, pure)
        eval_local = evaluation_seconds(prep, pure)

        marks: dict[str, float] = {}

        def on_round(record: dict) -> None:
            marks.setdefault("first_round_back", time.perf_counter())
            pure.passes.append({"round": record["round"], **pure.one_pass(round_idx=record["round"])})
            marks["last_callback_done"] = time.perf_counter()
            print(f"  round {record['round']}/{args.rounds}: {record['round_seconds']:.3f} s "
                  f"(pure compute pass {sum(pure.passes[-1]['fit']):.3f} s)", file=sys.stderr, flush=True)

        started = time.perf_counter()
        result = run_experiment(cfg, prepared=prep, on_round=on_round)
        ended = time.perf_counter()
        wall = {"run_experiment_seconds": ended - started,
                # shard puts, actor processes, imports and constructors: all before round 1 can start
                "startup_seconds": marks["first_round_back"] - started - result.rounds[0]["round_seconds"],
                # final params, privacy states, killing the actors
                "teardown_seconds": ended - marks["last_callback_done"]}
    finally:
        if started_ray:
            ray.shutdown()
    return summarise(args, cfg, prep, pure, result.rounds, wall, agg, eval_local, driver_res, hospital_res)


def _fit_s(client: dict) -> float:
    return client.get("fit_seconds", float("nan"))


def summarise(args, cfg, prep, pure, rounds, wall, agg, eval_local, driver_res, hospital_res) -> dict:
    measured = [r for r in rounds if r["round"] >= 2]
    round_s = median([r["round_seconds"] for r in measured])
    fit_phase_s = median([r["fit_seconds"] for r in measured])
    # hospitals under DP do not release their fit times: n/a then
    actor_fit_max = median([max(_fit_s(c) for c in r["clients"]) for r in measured])
    actor_fit_sum = median([sum(_fit_s(c) for c in r["clients"]) for r in measured])
    pure_sum = median([sum(x["fit"]) for x in pure.passes])
    pure_wall_sum = median([sum(x["wall"]) for x in pure.passes])
    pure_max = median([max(x["fit"]) for x in pure.passes])
    images = pure.images_per_pass
    sizes = [t.num_samples for t in pure.trainers]
    out = {
        "setup": {
            "device": device_summary(), "model": args.model, "data": cfg.data.name,
            "image_size": getattr(cfg.data, "image_size", None), "hospitals": args.hospitals, "hospital_train_sizes": sizes,
            "local_epochs": args.local_epochs, "batch_size": args.batch_size, "rounds": args.rounds,
            "measured_rounds": len(measured), "pure_passes": len(pure.passes),
            "hospital_resources": hospital_res, "driver_resources": driver_res, "extra_overrides": args.extra,
        },
        "federated": {
            "round_seconds": round_s, "fit_phase_seconds": fit_phase_s, "eval_phase_seconds": round_s - fit_phase_s,
            "actor_fit_seconds_max": actor_fit_max, "actor_fit_seconds_sum": actor_fit_sum,
            "images_per_second": images / round_s, "fit_phase_images_per_second": images / fit_phase_s,
            **wall,
            "per_round": [{k: r[k] for k in ("round", "round_seconds", "fit_seconds")}
                          | {"client_fit_seconds": [_fit_s(c) for c in r["clients"]]} for r in rounds],
        },
        "pure_compute": {
            "fit_seconds_sum": pure_sum, "fit_seconds_max_hospital": pure_max,
            "wall_seconds_sum_with_param_load_export": pure_wall_sum,
            "images_per_second": images / pure_sum, "passes": pure.passes,
            "fedavg_aggregate_seconds": agg, "driver_eval_seconds_in_process": eval_local,
        },
        "ratios": {
            "overhead_round_vs_pure": round_s / pure_sum,
            "overhead_fit_phase_vs_pure": fit_phase_s / pure_sum,
            "round_vs_ideal_parallel": round_s / pure_max,
            "fit_phase_vs_ideal_parallel": fit_phase_s / pure_max,
        },
    }
    return out


def render(res: dict) -> str:
    s, f, p, r = res["setup"], res["federated"], res["pure_compute"], res["ratios"]
    head = (f"federation overhead: {s['model']} on {s['data']} at {s['image_size']} px, {s['hospitals']} hospitals "
            f"x {s['hospital_train_sizes']} training images, {s['local_epochs']} local epoch(s), batch "
            f"{s['batch_size']}; hospital {s['hospital_resources']}, driver {s['driver_resources']}; "
            f"{s['device']}; medians over rounds 2..{s['rounds']} and {s['pure_passes']} alternating pure passes")
    main = markdown_table(
        ["measure", "seconds", "images/s", "ratio to pure compute", "ratio to ideal-parallel bound"],
        [
            ["federated round (train + FedAvg + eval)", f["round_seconds"], f["images_per_second"],
             r["overhead_round_vs_pure"], r["round_vs_ideal_parallel"]],
            ["federated training phase (no eval)", f["fit_phase_seconds"], f["fit_phase_images_per_second"],
             r["overhead_fit_phase_vs_pure"],
             r["fit_phase_vs_ideal_parallel"]],
            ["pure compute (sum of hospitals' fits, one process)", p["fit_seconds_sum"], p["images_per_second"],
             1.0, p["fit_seconds_sum"] / p["fit_seconds_max_hospital"]],
            ["ideal-parallel bound (slowest hospital's pure fit)", p["fit_seconds_max_hospital"], "", "", 1.0],
        ])
    rest = f["fit_phase_seconds"] - f["actor_fit_seconds_max"] - p["fedavg_aggregate_seconds"]
    where = markdown_table(
        ["where a federated round's time goes (medians)", "seconds", "share of round"],
        [
            ["evaluation phase (driver val+test, hospitals' own val)", f["eval_phase_seconds"],
             f["eval_phase_seconds"] / f["round_seconds"]],
            ["  of which: driver val+test eval measured in one process", p["driver_eval_seconds_in_process"],
             p["driver_eval_seconds_in_process"] / f["round_seconds"]],
            ["training phase (broadcast, fit, collect, FedAvg)", f["fit_phase_seconds"],
             f["fit_phase_seconds"] / f["round_seconds"]],
            ["  of which: slowest hospital's fit inside its actor", f["actor_fit_seconds_max"],
             f["actor_fit_seconds_max"] / f["round_seconds"]],
            ["  of which: FedAvg aggregate measured in one process", p["fedavg_aggregate_seconds"],
             p["fedavg_aggregate_seconds"] / f["round_seconds"]],
            ["  rest: dispatch, param (de)serialisation, transfers", rest, rest / f["round_seconds"]],
            ["per run, outside rounds: actor start-up before round 1", f["startup_seconds"],
             f["startup_seconds"] / f["round_seconds"]],
            ["per run, outside rounds: teardown (final params, kill actors)", f["teardown_seconds"],
             f["teardown_seconds"] / f["round_seconds"]],
            ["sum of hospitals' in-actor fits (contention check)", f["actor_fit_seconds_sum"],
             f["actor_fit_seconds_sum"] / p["fit_seconds_sum"]],
        ])
    note = ("(start-up and teardown rows: in units of one round; last row's ratio column: in-actor fit sum / "
            "pure-compute fit sum, > 1 means the concurrent hospitals slow each other down)")
    return f"{head}\n\n{main}\n\n{where}\n{note}"


def main(argv=None) -> None:
    run_and_report(parse_args, run, render, argv)


if __name__ == "__main__":
    main()
