"""From a composed Hydra config to the plain dict that actors and trials receive."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def to_plain(cfg: DictConfig, *, run_dir: str | Path) -> dict:
    """Resolve every interpolation, drop Hydra's own node, make paths absolute, set ``run_dir``.

    Hydra interpolations (``${hydra:...}``) do not survive into other
    processes, so nothing downstream of the CLI ever sees a DictConfig.
    """
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    container["run_dir"] = str(Path(run_dir).resolve())
    root = container.get("data", {}).get("root")
    if root and root != "???":
        container["data"]["root"] = str(Path(root).expanduser().resolve())
    return container
