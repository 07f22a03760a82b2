"""A resumed trial never reruns a round whose results it already reported (no Ray: Tune and the experiment are faked).

``run_trial`` runs with a fake ``tune`` (reports and checkpoints kept in
memory, as Tune persists them) and a fake ``run_experiment`` that walks the
rounds with the same reporting rule as
:func:`fedray.federation.experiment.run_experiment`: round ``r < total`` with
``r % tune.checkpoint_every == 0`` goes to ``on_checkpoint``, every other
round to ``on_round``. The trial is killed at every possible point (before
each round's release, after the study, after the final report) and restarted
from its last checkpoint, as a resumed sweep does. Under DP a rerun round
draws fresh noise: if its first result had been reported, the same records
would be released twice while the ledger counts them once.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import compose_typed, run_summary

import fedray.federation.study as study
import fedray.sweep.trial as trial
from fedray.federation.experiment import ExperimentResult, ExperimentState
from fedray.results.run_dir import RECORD_FILES


class Crash(Exception):
    """The trial's process dies here."""


class FakeCheckpoint:
    """A checkpoint's files, copied when reported (as Tune persists them before the report returns)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    @classmethod
    def from_directory(cls, folder) -> FakeCheckpoint:
        return cls({str(p.relative_to(folder)): p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()})

    @contextlib.contextmanager
    def as_directory(self):
        with tempfile.TemporaryDirectory() as folder:
            for name, data in self.files.items():
                (Path(folder) / name).parent.mkdir(parents=True, exist_ok=True)
                (Path(folder) / name).write_bytes(data)
            yield folder


class FakeTune:
    """What a trial sees of Tune: reports (kept across restarts) and the latest checkpoint."""

    Checkpoint = FakeCheckpoint

    def __init__(self) -> None:
        self.reports: list[tuple[dict, bool]] = []  # (metrics, carried a checkpoint)
        self.latest: FakeCheckpoint | None = None

    def get_context(self):
        return SimpleNamespace(get_trial_id=lambda: "trial_0")

    def report(self, metrics: dict, checkpoint: FakeCheckpoint | None = None) -> None:
        if checkpoint is not None:
            self.latest = checkpoint
        self.reports.append((dict(metrics), checkpoint is not None))

    def get_checkpoint(self) -> FakeCheckpoint | None:
        return self.latest


def _summary():
    return run_summary(privacy={"epsilon": 1.0})


class World:
    """The fakes of one trial across its restarts, and what happened."""

    def __init__(self, monkeypatch, cfg) -> None:
        self.tune = FakeTune()
        self.cfg = cfg
        self.attempt = 0
        self.executed: list[tuple[int, int, int]] = []  # (attempt, fold, round): a round's noised release
        self.crash_at: tuple | None = None  # ("round", fold, r) | ("write_run",) | ("after_final",)
        self.checkpoint_every_seen: set[int] = set()
        monkeypatch.setattr(trial, "tune", self.tune)
        monkeypatch.setattr(trial, "get_current_placement_group", lambda: None)
        monkeypatch.setattr(trial, "trial_config", lambda overrides, params, paths, run_dir: self.cfg)
        monkeypatch.setattr(trial, "write_run", self._trial_write_run)
        monkeypatch.setattr(study, "write_run", lambda *a, **k: None)
        monkeypatch.setattr(study, "run_experiment", self._run_experiment)
        monkeypatch.setattr(study, "combine_fold_summaries", lambda summaries: _summary())

    def _trial_write_run(self, run_dir: Path, *, summary, **kwargs) -> None:
        if self.crash_at == ("write_run",) and self.attempt == 1:
            raise Crash
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:  # what the final checkpoint copies
            (run_dir / name).write_text(summary.to_json() if name == "summary.json" else name)

    def _run_experiment(self, cfg, *, prepared=None, on_round=None, resume=None, on_checkpoint=None, **placement):
        """experiment.py's round loop and reporting rule, with rounds that only record that they ran."""
        self.checkpoint_every_seen.add(cfg.tune.checkpoint_every)
        fold = cfg.cv.fold if cfg.cv.folds > 1 else 0
        rounds = list(resume.rounds) if resume else []
        total = cfg.fl.rounds
        for r in range(len(rounds) + 1, total + 1):
            if self.crash_at == ("round", fold, r) and self.attempt == 1:
                raise Crash
            self.executed.append((self.attempt, fold, r))
            record = {"round": r, "total_rounds": total, "round_seconds": 0.0,
                      "val": {"accuracy": 0.1 * r}, "test": {"accuracy": 0.1 * r}}
            rounds.append(record)
            if on_checkpoint is not None and r < total and r % cfg.tune.checkpoint_every == 0:
                on_checkpoint(record, ExperimentState(
                    round=r, rounds=list(rounds), driver={}, input_map_state={}, preprocessing=[],
                    release_keys=[], seconds=0.0, audit=None))
            elif on_round is not None:
                on_round(record)
        return ExperimentResult(rounds=rounds, summary=_summary(), final_params=[], best_params=[], dealt=None)

    def run(self) -> bool:
        """One attempt of the trial; True when it finished."""
        self.attempt += 1
        try:
            trial.run_trial({}, overrides=[], paths={}, out_dir=tempfile.gettempdir())
        except Crash:
            return False
        if self.crash_at == ("after_final",) and self.attempt == 1:
            return False  # killed after its final report, before Tune recorded the trial as finished
        return True

    def reported_rounds(self, attempt_reports: list[tuple[dict, bool]]) -> list[tuple[int, int]]:
        return [(int(m.get("fold", 0)), int(m["round"])) for m, _ in attempt_reports if trial.RUN_DIR not in m]


def _cfg(tmp_path, *, privacy: list[str], rounds: int = 5, folds: int = 1, every: int = 2):
    return compose_typed(["data=ehr_synthetic", "model=logreg", *privacy, f"fl.rounds={rounds}",
                          f"cv.folds={folds}", f"tune.checkpoint_every={every}"], tmp_path)


DP = ["privacy=dpsgd", "privacy.epsilon=1.0"]
NO_DP = ["privacy=none"]


def _crash_points(rounds: int, folds: int) -> list[tuple]:
    points = [("round", f, r) for f in range(folds) for r in range(1, rounds + 1)]
    return points + [("write_run",), ("after_final",)]


@pytest.mark.parametrize("folds", [1, 3])
def test_under_dp_no_reported_round_is_rerun_after_any_crash(tmp_path, monkeypatch, folds):
    cfg = _cfg(tmp_path, privacy=DP, rounds=5, folds=folds, every=2)
    for point in _crash_points(5, folds):
        world = World(monkeypatch, cfg)
        world.crash_at = point
        assert not world.run(), point
        first_reports = list(world.tune.reports)
        assert world.run(), point  # the resumed attempt finishes
        reported_before = set(world.reported_rounds(first_reports))
        rerun = {(f, r) for attempt, f, r in world.executed if attempt == 2}
        assert not reported_before & rerun, f"crash at {point}: rounds reported, then rerun: {reported_before & rerun}"
        # Every report of a round carried the checkpoint that lets a resume skip that round ...
        assert all(with_checkpoint for _, with_checkpoint in world.tune.reports), point
        # ... so no round was reported twice, and every round was reported (the last in the final report).
        all_rounds = world.reported_rounds(world.tune.reports)
        assert len(all_rounds) == len(set(all_rounds)), point
        final = [m for m, _ in world.tune.reports if trial.RUN_DIR in m]
        assert final and all(m == final[0] for m in final), point  # a repeated final report repeats, never redraws
        expected = {(f, r) for f in range(folds) for r in range(1, 6)} - {(folds - 1, 5)}
        assert set(all_rounds) == expected, point


def test_under_dp_the_experiment_checkpoints_every_round(tmp_path, monkeypatch):
    world = World(monkeypatch, _cfg(tmp_path, privacy=DP, every=3))
    assert world.run()
    assert world.checkpoint_every_seen == {1}


def test_a_resume_after_the_final_report_reruns_nothing(tmp_path, monkeypatch):
    world = World(monkeypatch, _cfg(tmp_path, privacy=DP, folds=2))
    world.crash_at = ("after_final",)
    assert not world.run() and world.run()
    assert [e for e in world.executed if e[0] == 2] == []


def test_without_dp_the_checkpoint_interval_is_the_configured_one(tmp_path, monkeypatch):
    world = World(monkeypatch, _cfg(tmp_path, privacy=NO_DP, every=2))
    assert world.run()
    assert world.checkpoint_every_seen == {2}
    # Rounds between checkpoints are reported without one (a rerun of them draws no privacy noise).
    assert [c for m, c in world.tune.reports if trial.RUN_DIR not in m] == [False, True, False, True]


def test_an_infinite_epsilon_is_no_dp_claim(tmp_path, monkeypatch):
    world = World(monkeypatch, _cfg(tmp_path, privacy=["privacy=dpsgd", "privacy.epsilon=inf"], every=2))
    assert world.run()
    assert world.checkpoint_every_seen == {2}


def test_a_finished_study_state_resumes_to_the_same_result(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, privacy=DP, folds=2, rounds=3)
    world = World(monkeypatch, cfg)
    assert world.run()
    state = pickle.loads(world.tune.latest.files[trial.CHECKPOINT_FILE])
    assert state.fold == 2 and state.experiment is None and len(state.done) == 2
    result = study.run_study(cfg, resume=state)
    assert [r["round"] for r in result.rounds] == [1, 2, 3, 1, 2, 3]
    assert not math.isnan(result.summary.privacy["epsilon"])
