"""Experiment tracking: single runs and sweep trials logged to MLflow or TensorBoard (``tracking=<name>``).

``conf/tracking/<name>.yaml`` picks a tracker of :data:`TRACKERS`: ``none`` (the default), ``mlflow``
(:mod:`.mlflow_tracker`; ``pip install 'fedray[tracking]'``) or ``tensorboard`` (:mod:`.tensorboard_tracker`).
Nothing else branches on a tracker's name: :func:`tracker` builds the one the config names, and the run
(:func:`fedray.api.run`) and the sweep (:mod:`fedray.sweep.runner`) call it through :class:`Tracker`.

What a tracker receives is what the run already publishes, nothing more:

- each round, the global model's validation and test metrics (:func:`round_scalars`: the lines the CLI prints,
  the reports a sweep trial makes to Tune, which under a DP claim are all checkpointed first);
- at the end, the final metrics, the ledger's ε and δ and the audit's lower bounds (:func:`final_scalars`);
- as files, the run directory's published outputs (:data:`RUN_FILES`) and a sweep's frontier files.

Never a checkpoint: Tune's checkpoints hold the hospitals' release keys and the audit's secret choices
(``fedray/sweep/trial.py``), so Tune's own "save the trial folder" option stays off.

Importing this package registers the settings (:mod:`.settings`) and imports neither MLflow nor tensorboardX:
each tracker loads its library when it is used.
"""

from __future__ import annotations

from fedray.tracking.base import (RUN_FILES, RunLog, Tracker, final_scalars, privacy_scalars, round_scalars,
                                  round_step, summary_scalars)
from fedray.tracking.mlflow_tracker import MLflowTracker
from fedray.tracking.settings import MLflowTracking, NoTracking, TensorBoardTracking
from fedray.tracking.tensorboard_tracker import TensorBoardTracker

# settings class (conf/tracking/<name>.yaml's schema) -> tracker
TRACKERS: dict[type, type[Tracker]] = {NoTracking: Tracker, MLflowTracking: MLflowTracker,
                                       TensorBoardTracking: TensorBoardTracker}


def tracker(settings) -> Tracker:
    """The tracker ``settings`` (``cfg.tracking``) names."""
    return TRACKERS[type(settings)](settings)


__all__ = ["RUN_FILES", "TRACKERS", "RunLog", "Tracker", "final_scalars", "privacy_scalars", "round_scalars",
           "round_step", "summary_scalars", "tracker"]
