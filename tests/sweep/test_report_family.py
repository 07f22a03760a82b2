"""report.md's audit flags across the sweep: how many trials raised a flag, and how many survive Holm's correction."""

from __future__ import annotations

import math

from test_frontier import _record

from fedray.sweep.frontier import frontier_frame, write_frontier
from fedray.sweep.report import render_report

AXES = ["backbone", "lr", "epsilon"]
SECTION = "## Audit flags across the sweep"


def _audited(trial_id: str, p_value: float | None, *, flagged: bool, epsilon: float = 1.0) -> dict:
    record = _record(trial_id, lr=0.05, epsilon=epsilon, balanced=0.6)
    # A point advantage above the ceiling within its interval is no violation: it is not counted.
    flags = ["violation: made up for the test"] if flagged else ["consistent with noise: made up for the test"]
    record["summary"].audit.update(canaries={"input": {"p_value": p_value}, "notes": {}}, flags=flags)
    return record


def _records() -> list[dict]:
    """Two trials flagged at 95 % (p = 0.004 and 0.02), two not, one non-private (no p-value): Holm over the four
    p-values keeps only t-a at α = 0.05 (0.004 < 0.05/4; 0.02 >= 0.05/3 stops), and none at α = 0.01."""
    return [_audited("t-a", 0.004, flagged=True), _audited("t-b", 0.02, flagged=True),
            _audited("t-c", 0.4, flagged=False), _audited("t-d", 0.7, flagged=False),
            _audited("t-e", None, flagged=False, epsilon=math.inf)]


def _section(report: str) -> str:
    return report.split(SECTION)[1].split("## ")[0]


def test_the_report_counts_flags_and_the_trials_that_survive_holm():
    frame = frontier_frame(_records(), axes=AXES, sweep_name="family")
    section = _section(render_report(frame, sweep_name="family", utility="val_balanced_accuracy"))
    assert "2 of 5 audited trials raised a per-trial violation flag" in section and "at 95% confidence" in section
    assert "1 of the 4 trials whose one-run audits give a p-value survives Holm's family-wise correction at " \
           "α = 0.05 (trial t-a)" in section
    assert "A flag that does not survive reads as the noise expected among that many audits" in section
    assert "violation of the accountant's claim at 95% family-wise confidence" in section


def test_the_family_is_corrected_at_the_audits_own_confidence(tmp_path):
    records = _records()
    for record in records:
        record["config"]["audit"] = {"confidence": 0.99}
    section = _section(write_frontier(tmp_path, records, axes=AXES, sweep_name="family")["report"].read_text(
        encoding="utf-8"))
    assert "at 99% confidence" in section
    assert "0 of the 4 trials whose one-run audits give a p-value survive Holm's family-wise correction at " \
           "α = 0.01." in section


def test_no_audited_trial_no_section():
    frame = frontier_frame([_record("t-1", lr=0.05, epsilon=1.0, balanced=0.6, attack=False)], axes=AXES)
    assert SECTION not in render_report(frame, sweep_name="family", utility="val_balanced_accuracy")


def test_the_report_gives_each_white_box_view_its_bound_and_the_sample_known_its_own_epsilon():
    def one_run(bound, fdp, **extra):
        return {"epsilon_lower_bound": bound, "epsilon_lower_bound_fdp": fdp, "m": 1000, "included": 500,
                "ceiling": 5.085, "ceiling_fdp": 8.803, "flags": [], **extra}

    record = _record("t-a", lr=0.05, epsilon=10.0, balanced=0.6)
    record["summary"].audit.update(canaries={
        "gradient": one_run(1.49, 2.02), "gradient_step": one_run(2.06, 2.86),
        "gradient_step_sampled": one_run(3.87, 6.05, published_sample_epsilon=26.77), "notes": {}})
    frame = frontier_frame([record, _audited("t-b", 0.5, flagged=False)], axes=AXES, sweep_name="views")
    report = render_report(frame, sweep_name="views", utility="val_balanced_accuracy")
    section = report.split("## White-box audit: what each view certifies")[1].split("## ")[0]
    assert "*Round*: the driver" in section and "never with ε spent" in section
    row = next(line for line in section.splitlines() if line.startswith("| 10 | t-a"))
    assert row.endswith("| 1.49 | 2.02 | 2.06 | 2.86 | 5.085 | 8.803 | 6.05 | 26.77 |")
    no_step_view = frontier_frame([_audited("t-b", 0.5, flagged=False)], axes=AXES, sweep_name="views")
    assert "White-box audit" not in render_report(no_step_view, sweep_name="views", utility="val_balanced_accuracy")
