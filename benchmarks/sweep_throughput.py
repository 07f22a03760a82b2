"""Sweep throughput: trials per hour (and GPU utilisation) with trials packed onto shared GPUs vs one at a time.

Runs the real CLI twice in subprocesses, on the same grid:

- packed: ``python -m fedray +sweep=privacy_tradeoff <overrides> tune.out_dir=<tmp>/packed``:
  Tune starts every trial whose placement group (trial + driver + hospitals,
  each with its fraction of a GPU, see fedray/sweep/resources.py) fits, so
  several trials share a GPU;
- one at a time: the same plus ``tune.max_concurrent_trials=1``.

For each it reports wall-clock time (process start to exit, Ray start-up
included), the trials completed (``status == "completed"`` rows of
``<out_dir>/frontier.parquet``), trials per hour, and the GPU utilisation
sampled once a second with ``nvidia-smi`` (mean and mean while non-idle); "n/a
(no GPU)" without ``nvidia-smi``. With ``--repeats`` > 1 the two variants
alternate, and the order flips every repeat.

Defaults are a tiny CPU grid (small_cnn, 1 round, lr 0.05, epsilon 1 and inf,
2 trials); on a CPU the hospitals' and driver's CPU shares are
lowered so that two trials fit into 2 cores at once. ``--full`` runs the seed's
three backbones on ISIC (GPU machines).

    python benchmarks/sweep_throughput.py
    python benchmarks/sweep_throughput.py --full --data-root $ISIC_DIR
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import CONF_DIR, REPO_ROOT, markdown_table, save_json

TINY = ["sweep.space.backbone=[small_cnn]", "sweep.space.lr=[0.05]", "sweep.space.epsilon=[1.0,inf]",
        "fl.rounds=1"]
CPU_PACKING = ["resources.hospital.num_cpus=0.1", "resources.driver.num_cpus=0.1"]
SEED_BACKBONES = "[resnet50,vgg19,inception_v3]"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--full", action="store_true",
                   help="the seed's three backbones on ISIC (+sweep=privacy_tradeoff_full when that config "
                        f"exists, else +sweep=privacy_tradeoff data=isic sweep.space.backbone={SEED_BACKBONES}); "
                        "GPU machines")
    p.add_argument("--data-root", default=os.environ.get("ISIC_DIR"),
                   help="ISIC folder, for --full (default $ISIC_DIR)")
    p.add_argument("--hospital-gpu", type=float, default=None,
                   help="resources.hospital.num_gpus for both runs (default: conf's 0.15; 5 x 0.15 + 0.1 for the driver "
                        "= 0.85 GPU per trial, so only one trial fits on one GPU: use e.g. 0.08 with --driver-gpu "
                        "0.05 to pack two)")
    p.add_argument("--driver-gpu", type=float, default=None, help="resources.driver.num_gpus for both runs")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="any further Hydra override for both runs (repeatable), e.g. --set fl.rounds=2")
    p.add_argument("--repeats", type=int, default=1, help="runs of each variant, alternating")
    p.add_argument("--timeout", type=float, default=3600, help="seconds before one sweep is killed")
    p.add_argument("--keep", action="store_true", help="keep the sweep directories (printed) instead of deleting them")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def has_nvidia_smi() -> bool:
    return shutil.which("nvidia-smi") is not None


def base_overrides(args) -> list[str]:
    shares = [f"resources.hospital.num_gpus={args.hospital_gpu}"] if args.hospital_gpu is not None else []
    shares += [f"resources.driver.num_gpus={args.driver_gpu}"] if args.driver_gpu is not None else []
    args.extra = shares + args.extra
    if args.full:
        if not args.data_root:
            raise SystemExit("--full needs --data-root (or $ISIC_DIR)")
        if (CONF_DIR / "sweep" / "privacy_tradeoff_full.yaml").is_file():
            out = ["+sweep=privacy_tradeoff_full"]
        else:
            out = ["+sweep=privacy_tradeoff", "data=isic", f"sweep.space.backbone={SEED_BACKBONES}"]
        return out + [f"data.root={args.data_root}"] + args.extra
    return ["+sweep=privacy_tradeoff", *TINY, *([] if has_nvidia_smi() else CPU_PACKING), *args.extra]


class GpuSampler(threading.Thread):
    """``nvidia-smi`` utilisation (percent, all GPUs averaged) once a second until stopped."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=10).stdout
                values = [float(v) for v in out.split() if v.strip()]
                if values:
                    self.samples.append(sum(values) / len(values))
            except (OSError, subprocess.SubprocessError, ValueError):
                pass
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self.join(timeout=15)


def count_trials(out_dir: Path) -> tuple[int, int]:
    """(completed, all) trial rows of the sweep's frontier; (0, 0) without a frontier."""
    path = out_dir / "frontier.parquet"
    if not path.is_file():
        return 0, 0
    import pandas as pd

    frame = pd.read_parquet(path, columns=["status"])
    return int((frame["status"] == "completed").sum()), len(frame)


def run_sweep(overrides: list[str], out_dir: Path, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "fedray", *overrides, f"tune.out_dir={out_dir}", f"hydra.run.dir={out_dir}/hydra"]
    print("$ " + " ".join(cmd[1:]).replace(sys.executable, "python"), file=sys.stderr, flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    sampler = GpuSampler() if has_nvidia_smi() else None
    if sampler:
        sampler.start()
    log = out_dir / "sweep.log"
    started = time.perf_counter()
    with log.open("w") as handle:
        try:
            proc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.perf_counter() - started
    if sampler:
        sampler.stop()
    completed, total = count_trials(out_dir)
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    samples = sampler.samples if sampler else []
    busy = [s for s in samples if s > 0]
    return {
        "command": " ".join(["python", *cmd[1:]]), "returncode": rc, "wall_seconds": wall,
        "completed_trials": completed, "trials": total,
        "trials_per_hour": completed / wall * 3600 if wall > 0 else float("nan"),
        "gpu_util_mean": sum(samples) / len(samples) if samples else None,
        "gpu_util_mean_nonidle": sum(busy) / len(busy) if busy else None,
        "gpu_samples": len(samples), "log_tail": tail, "out_dir": str(out_dir),
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    overrides = base_overrides(args)
    variants = {"packed": overrides, "one at a time": overrides + ["tune.max_concurrent_trials=1"]}
    root = Path(tempfile.mkdtemp(prefix="fedray-sweep-bench-"))
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    try:
        for rep in range(args.repeats):
            order = list(variants) if rep % 2 == 0 else list(variants)[::-1]
            for name in order:
                res = run_sweep(variants[name], root / f"{name.replace(' ', '_')}_{rep}", args.timeout)
                runs[name].append(res)
                if res["returncode"] != 0 or res["completed_trials"] == 0:
                    print(f"warning: {name} sweep: rc={res['returncode']}, {res['completed_trials']}/{res['trials']} "
                          f"trials completed; log tail: {res['log_tail']}", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"sweep directories kept under {root}", file=sys.stderr)
    print(render(args, overrides, runs))
    save_json(args.json, {"overrides": overrides, "runs": runs})


def _best(results: list[dict]) -> dict:
    """The repeat with the most trials per hour (the least disturbed by other load)."""
    return max(results, key=lambda r: r["trials_per_hour"])


def render(args, overrides: list[str], runs: dict[str, list[dict]]) -> str:
    gpu = has_nvidia_smi()
    packed, serial = _best(runs["packed"]), _best(runs["one at a time"])
    rows = []
    for name, res in (("packed (Tune fits as many trials as resources allow)", packed),
                      ("one at a time (tune.max_concurrent_trials=1)", serial)):
        util = (f"{res['gpu_util_mean']:.0f}% (non-idle {res['gpu_util_mean_nonidle'] or 0:.0f}%)"
                if gpu and res["gpu_util_mean"] is not None else "n/a (no GPU)")
        rows.append([name, f"{res['completed_trials']}/{res['trials']}", res["wall_seconds"], res["trials_per_hour"],
                     res["trials_per_hour"] / serial["trials_per_hour"] if serial["trials_per_hour"] else float("nan"),
                     util])
    head = (f"sweep throughput: python -m fedray {' '.join(overrides)}; best of {args.repeats} alternating run(s) "
            "per variant; wall clock includes Ray start-up, data validation and the frontier")
    table = markdown_table(["variant", "completed/trials", "wall s", "trials/hour", "speed-up vs one at a time",
                            "GPU utilisation"], rows)
    return f"{head}\n\n{table}"


if __name__ == "__main__":
    main()
