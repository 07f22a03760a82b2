"""``tracking=mlflow``: every single run and every sweep trial as an MLflow run (``pip install 'fedray[tracking]'``).

Where. ``tracking.uri`` names a tracking server (``http://host:5000``); unset, the store is embedded: the SQLite
file ``tracking.store`` (``outputs/mlflow.db``), with each experiment's artifacts under ``tracking.artifacts``
(``outputs/mlartifacts``). No server is needed to write it; ``mlflow ui --backend-store-uri
sqlite:///outputs/mlflow.db`` shows it. A sweep's trials on other machines report to Tune's driver, and only the
driver writes, so the embedded store serves a cluster too (its files stay on the head node).

What. A single run (experiment ``tracking.experiment``, else ``fedray``) logs its resolved config as parameters
(dotted keys), the global model's validation and test metrics each round (step: the round), the final metrics
with the ledger's ε and δ and the audit's lower bounds, and the run directory's published files
(:data:`~fedray.tracking.base.RUN_FILES`: config, summary, rounds, learning curve, models). A sweep (experiment:
its name) logs each trial through Tune's :class:`~ray.air.integrations.mlflow.MLflowLoggerCallback`: the trial's
axis values as parameters, every report as metrics, then the trial's published files, and its frontier files
(``frontier.png``, ``report.md``, ...) in one more run named ``frontier``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedray.errors import FedrayError
from fedray.tracking.base import RUN_FILES, RunLog, Tracker, final_scalars, round_scalars, round_step

MAX_PARAM_CHARS = 6000  # MLflow's limit on a parameter's value
_STATUS = {"failed": "FAILED", "interrupted": "KILLED"}


class MLflowTracker(Tracker):
    def check(self) -> None:
        if importlib.util.find_spec("mlflow") is None:
            raise FedrayError("tracking=mlflow needs MLflow, which is not installed: pip install 'fedray[tracking]' "
                              "(or run with tracking=none)")

    @property
    def uri(self) -> str:
        return self.settings.uri or f"sqlite:///{self.settings.store}"

    def _client(self):
        from mlflow.tracking import MlflowClient

        if not self.settings.uri:
            Path(self.settings.store).parent.mkdir(parents=True, exist_ok=True)
        return MlflowClient(tracking_uri=self.uri)

    def _experiment_id(self, client, name: str) -> str:
        """The experiment ``name``'s id, created if new (in the embedded store, with its artifacts under
        ``tracking.artifacts`` rather than MLflow's default ``./mlruns`` in whatever folder the user stands in)."""
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None if self.settings.uri else (Path(self.settings.artifacts) / name).as_uri()
        return client.create_experiment(name, artifact_location=location)

    def open_run(self, cfg, *, experiment: str, run_name: str) -> RunLog:
        from mlflow.entities import Param

        client = self._client()
        experiment_id = self._experiment_id(client, self.settings.experiment or experiment)
        run = client.create_run(experiment_id, run_name=run_name, tags={"fedray.kind": "run"})
        params = [Param(key, str(value)[:MAX_PARAM_CHARS]) for key, value in _flat(dataclasses.asdict(cfg)).items()]
        client.log_batch(run.info.run_id, params=params)
        return _MLflowRun(client, run.info.run_id)

    def tune_callbacks(self, *, experiment: str, run_dir_key: str) -> list:
        name = self.settings.experiment or experiment
        self._experiment_id(self._client(), name)  # created here, so that its artifacts land where they should
        return [_trials_callback()(self.uri, experiment_name=name, tags={"fedray.kind": "trial"},
                                   run_dir_key=run_dir_key)]

    def after_sweep(self, *, experiment: str, files: Mapping[str, str]) -> None:
        client = self._client()
        run = client.create_run(self._experiment_id(client, self.settings.experiment or experiment),
                                run_name="frontier", tags={"fedray.kind": "frontier"})
        for path in files.values():
            client.log_artifact(run.info.run_id, path)
        client.set_terminated(run.info.run_id, "FINISHED")


class _MLflowRun(RunLog):
    def __init__(self, client, run_id: str):
        self.client, self.run_id, self.last_step = client, run_id, 0

    def round(self, record: Mapping[str, Any]) -> None:
        self.last_step = round_step(record)
        self._log(round_scalars(record), step=self.last_step)

    def finish(self, summary, run_dir: Path) -> None:
        self._log(final_scalars(summary), step=self.last_step)
        log_run_files(self.client, self.run_id, run_dir)
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, status: str) -> None:
        self.client.set_terminated(self.run_id, _STATUS.get(status, "FAILED"))

    def _log(self, scalars: dict[str, float], *, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in scalars.items()])


def log_run_files(client, run_id: str, run_dir: Path) -> None:
    """The run directory's published files as the run's artifacts (a tree run has no model file)."""
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            client.log_artifact(run_id, str(run_dir / name))


def _trials_callback():
    """Tune's MLflow logger, keeping each trial's published files instead of Tune's trial folder (its
    checkpoints hold secrets). A class made on first use: importing it imports MLflow."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class TrialsToMLflow(MLflowLoggerCallback):
        def __init__(self, tracking_uri: str, *, run_dir_key: str, **kwargs):
            super().__init__(tracking_uri, save_artifact=False, **kwargs)
            self.run_dir_key = run_dir_key

        def log_trial_end(self, trial, failed: bool = False):
            run_dir = (trial.last_result or {}).get(self.run_dir_key)
            if not failed and run_dir and Path(run_dir).is_dir():  # on this machine (else Tune's storage has it)
                from mlflow.tracking import MlflowClient

                log_run_files(MlflowClient(tracking_uri=self.tracking_uri), self._trial_runs[trial], Path(run_dir))
            super().log_trial_end(trial, failed=failed)

    return TrialsToMLflow


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat
