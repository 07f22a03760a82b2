"""Shared helpers of the benchmark scripts: config composition, statistics, tables, JSON.

The scripts run as ``python benchmarks/<name>.py``, so this module is imported
as ``_common`` (the script's own folder is first on ``sys.path``).
"""

from __future__ import annotations

import json
import math
import platform
import statistics
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"


def compose(overrides: list[str], run_dir: Path):
    """Compose conf/ like the CLI does: the typed, read-only :class:`fedray.config.Config` actors receive.

    Change a copy with ``fedray.config.replace(cfg, **{"resources.driver.num_gpus": 0.1})``.
    """
    from fedray.config import compose_config

    return compose_config(overrides, run_dir=run_dir)


def data_overrides(args) -> list[str]:
    """Hydra overrides for ``--data``, ``--data-root``, ``--image-size`` (and synthetic's ``--samples-per-class``)."""
    out = [f"data={args.data}"]
    if args.data == "isic":
        if not args.data_root:
            raise SystemExit("--data isic needs --data-root (the folder holding Train/<class>/*.jpg)")
        out.append(f"data.root={args.data_root}")
    if args.image_size is not None:
        out.append(f"data.image_size={args.image_size}")
    if args.data == "synthetic" and getattr(args, "samples_per_class", None):
        out.append(f"data.samples_per_class={args.samples_per_class}")
    return out


def median(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def device_summary() -> str:
    import torch

    if torch.cuda.is_available():
        return f"CUDA {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    return f"CPU ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} threads"


def cuda_sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    cells = [[fmt(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def add_workload_arguments(parser, *, data_root_default: str | None) -> None:
    """The federated workload flags ``flower_comparison.py`` and its Flower side share (stdlib only: both
    interpreters import this module). ``data_root_default=None`` makes ``--data-root`` required."""
    parser.add_argument("--data-root", default=data_root_default, required=data_root_default is None,
                        help="ISIC folder holding Train/<class>/*.jpg")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--hospitals", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)


def run_and_report(parse_args, run, render, argv=None) -> dict:
    """A benchmark script's ``main``: parse, measure, print the table, save ``--json`` if asked."""
    args = parse_args(argv)
    res = run(args)
    print(render(res))
    save_json(args.json, res)
    return res


def save_json(path: str | None, payload: dict) -> None:
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=_json_default))
    print(f"\nresults: {out}")


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
