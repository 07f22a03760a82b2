"""fl.train_together: a round's hospitals trained in lockstep (torch.func) against one after another.

Two measurements, on the synthetic EHR data with the MLP, m hospitals a round
of ``--records-per-hospital`` records each, ``fl.local_epochs`` (2) local
epochs:

1. **In process** (the fast path alone): m hospitals' trainers built as a
   hospital builds its own; one round is each ``trainer.fit`` in turn, or
   one :func:`fedray.training.together.fit_together` of all m. Median of
   ``--repeats`` rounds, after one warm-up round each.
2. **Whole runs** (``--runs``): ``python -m fedray`` with K = m hospitals
   all taking part, ``fl.train_together=1`` against ``=m`` (split into one
   group per hospital actor), median ``round_seconds`` over rounds 2..R and
   the process's wall time. A round also moves parameters through Ray and
   evaluates on the driver, which the fast path does not touch.

Both without DP and under DP-SGD (ε = 3, reproducible noise so both paths
draw the same streams). Quote ratios from one run: this machine is noisy.

    python benchmarks/train_together.py                          # m = 50, in process, then whole runs
    python benchmarks/train_together.py --hospitals 20 --no-runs
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from _common import REPO_ROOT, compose, device_summary, markdown_table

PRIVACY = {"none": [], "dpsgd": ["privacy=dpsgd", "privacy.epsilon=3", "privacy.reproducible_noise=true"]}


def base_overrides(args) -> list[str]:
    return ["data=ehr_synthetic", "model=mlp", "fl.partition.scheme=iid", "audit.enabled=false",
            f"data.num_records={args.hospitals * args.records_per_hospital}", f"fl.num_hospitals={args.hospitals}",
            f"train.batch_size={args.batch_size}"]


def trainers(overrides: list[str], run_dir: Path) -> list:
    import torch

    from fedray.federation.experiment import prepare_experiment
    from fedray.privacy.randomness import NoiseSource, hospital
    from fedray.training import build_trainer

    prep = prepare_experiment(compose(overrides, run_dir))
    return [build_trainer(cfg=prep.cfg, plan=prep.privacy, num_classes=prep.num_classes,
                          num_features=prep.num_features, inputs=shard.inputs, labels=shard.labels,
                          input_map=prep.dealt.input_map, device=torch.device("cpu"), hospital=k,
                          noise=NoiseSource.reproducible(prep.cfg.seed, hospital(k)))
            for k, shard in enumerate(prep.dealt.train_shards)], prep.cfg.fl.local_epochs


def in_process(args, privacy: str, run_dir: Path) -> dict:
    from fedray.training.together import fit_together

    built, epochs = trainers([*base_overrides(args), *PRIVACY[privacy]], run_dir)
    start = built[0].export()

    def in_turn(round_idx):
        for trainer in built:
            trainer.fit(start, epochs=epochs, round_idx=round_idx)

    def together(round_idx):
        fit_together(built, [start] * len(built), epochs=epochs, round_idx=round_idx)

    times = {}
    for name, round_of in (("in_turn", in_turn), ("together", together)):
        round_of(1)  # warm-up: first-call costs (torch.func tracing, allocator)
        seconds = []
        for r in range(args.repeats):
            began = time.perf_counter()
            round_of(2 + r)
            seconds.append(time.perf_counter() - began)
        times[name] = statistics.median(seconds)
    return times


def whole_run(args, privacy: str, together: int, out: Path) -> dict:
    run_dir = out / f"{privacy}-{together}-{time.monotonic_ns()}"
    overrides = [*base_overrides(args), *PRIVACY[privacy], f"fl.rounds={args.rounds}",
                 f"fl.train_together={together}", f"hydra.run.dir={run_dir}"]
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fedray", *overrides], cwd=REPO_ROOT, capture_output=True,
                          text=True)
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"fedray {' '.join(overrides)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    per_round = pd.read_parquet(run_dir / "rounds.parquet").groupby("round")["round_seconds"].first()
    return {"round": float(per_round[per_round.index > 1].median()), "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hospitals", type=int, default=50, help="m: hospitals a round (all of K)")
    parser.add_argument("--records-per-hospital", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-runs", dest="runs", action="store_false", help="only the in-process measurement")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for privacy in PRIVACY:
            t = in_process(args, privacy, Path(tmp) / f"prep-{privacy}")
            row = [privacy, f"{t['in_turn']:.3f}", f"{t['together']:.3f}", f"{t['in_turn'] / t['together']:.1f}"]
            if args.runs:
                turn, group = whole_run(args, privacy, 1, Path(tmp)), whole_run(args, privacy, args.hospitals,
                                                                                 Path(tmp))
                row += [f"{turn['round']:.3f}", f"{group['round']:.3f}", f"{turn['round'] / group['round']:.1f}",
                        f"{turn['wall']:.1f}", f"{group['wall']:.1f}"]
            rows.append(row)
    print(f"EHR MLP, m = {args.hospitals} hospitals a round, {args.records_per_hospital} records each, batch "
          f"{args.batch_size}; {device_summary()}")
    headers = ["privacy", "in process: in turn (s)", "together (s)", "x faster"]
    if args.runs:
        headers += ["run round: in turn (s)", "together (s)", "x faster", "run wall: in turn (s)", "together (s)"]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
