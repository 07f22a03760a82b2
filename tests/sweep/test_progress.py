"""The sweep's console progress prints a plain line per trial event and nothing when nothing changed (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fedray.sweep.progress import ChangeReporter


@dataclass
class FakeTrial:
    trial_id: str
    config: dict
    status: str = "PENDING"
    last_result: dict = field(default_factory=dict)


def reported(reporter: ChangeReporter, trials: list[FakeTrial], capsys) -> list[str]:
    if reporter.should_report(trials):
        reporter.report(trials, False)
    return capsys.readouterr().out.splitlines()


def test_lines_come_on_starts_rounds_and_ends_only(capsys):
    reporter = ChangeReporter(params=["lr", "epsilon"], columns={"round": "round", "test_balanced_accuracy":
                                                                 "test bal acc", "epsilon_spent": "eps spent"},
                              round_every_s=0.0)
    reporter.setup(total_samples=2)
    trials = [FakeTrial("a", {"lr": 0.05, "epsilon": float("inf")}), FakeTrial("b", {"lr": 0.05, "epsilon": 1.0})]
    assert reported(reporter, trials, capsys) == []
    trials[0].status = "RUNNING"
    assert reported(reporter, trials, capsys) == [
        "[trial 1/2] started: lr=0.05 epsilon=inf", "sweep: 0 of 2 finished, 1 running, 0 failed, 1 pending"]
    assert reported(reporter, trials, capsys) == []  # nothing changed: nothing printed
    trials[0].last_result = {"round": 1, "total_rounds": 2, "test_balanced_accuracy": 0.41234}
    assert reported(reporter, trials, capsys) == ["[trial 1/2] round 1/2: test bal acc 0.412"]
    assert reported(reporter, trials, capsys) == []  # the same round is not repeated
    trials[0].status, trials[0].last_result = "TERMINATED", {"round": 2, "test_balanced_accuracy": 0.5,
                                                            "epsilon_spent": 0.99, "time_total_s": 41.2}
    trials[1].status = "ERROR"
    lines = reported(reporter, trials, capsys)
    assert lines == ["[trial 1/2] finished in 41 s: test bal acc 0.5, eps spent 0.99",
                     "[trial 2/2] failed: lr=0.05 epsilon=1", "sweep: 1 of 2 finished, 0 running, 1 failed, 0 pending"]
    assert not any("\x1b[" in line for line in lines)  # no ANSI escapes, in a terminal or a log
