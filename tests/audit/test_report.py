"""The audit speaks plainly: the CLI's lines carry integer counts, folds combine without a float count, one strongest.

Pure: no Ray, no training.
"""

from __future__ import annotations

import re

import numpy as np

from fedray.audit.pools import attack_report
from fedray.audit.report import combine_folds, count, summary_lines

GRADIENT = {"epsilon_lower_bound": 0.13, "confidence": 0.95, "m": 1000, "included": 508, "k_plus": 100,
            "k_minus": 100, "guesses": 200, "correct": 126, "flags": []}


def _audit(members: int = 42, nonmembers: int = 48) -> dict:
    strongest = {"attack": "loss_threshold", "auc": 0.49, "epsilon_lower_bound": 0.0, "confidence": 0.95,
                 "advantage": 0.01, "true_positives": 6, "n_members": members, "n_nonmembers": nonmembers}
    return {"strongest": strongest, "attacks": [strongest, {**strongest, "attack": "lira_offline"}],
            "n_choose": 90, "n_eval": 90, "canaries": {"gradient": dict(GRADIENT), "notes": {}}, "flags": []}


def test_a_canary_line_says_what_was_guessed_of_how_many_in_words():
    assert summary_lines(_audit())[0] == (
        "audit: white-box gradient canaries, each round's update: ε ≥ 0.13 at 95% confidence: of 1000 canaries (508 trained on), the "
        "attack guessed 200 (100 'in', 100 'out'), 126 right")


def test_a_canary_line_gives_the_fdp_bound_and_what_the_audit_could_show_at_most():
    audit = _audit()
    audit["canaries"]["gradient"].update(epsilon_lower_bound_fdp=0.4, ceiling=5.085, ceiling_fdp=8.803)
    assert summary_lines(audit)[0].startswith(
        "audit: white-box gradient canaries, each round's update: ε ≥ 0.13 at 95% confidence (f-DP: ε ≥ 0.40; this audit can show at "
        "most 5.08, f-DP 8.80): of 1000 canaries (508 trained on)")
    audit["canaries"]["gradient"].update(epsilon_lower_bound_fdp=None, ceiling_fdp=None)  # pure DP: no Gaussian ε
    assert "95% confidence (this audit can show at most 5.08): of 1000" in summary_lines(audit)[0]


def test_folds_report_each_kind_of_bound_at_its_smallest():
    low_fdp, low_steinke = _audit(), _audit()
    low_fdp["canaries"]["gradient"].update(epsilon_lower_bound=0.3, epsilon_lower_bound_fdp=0.5,
                                           mu_lower_bound_fdp=0.2, correct_fdp=120)
    low_steinke["canaries"]["gradient"].update(epsilon_lower_bound=0.1, epsilon_lower_bound_fdp=0.9,
                                               mu_lower_bound_fdp=0.3, correct_fdp=130)
    gradient = combine_folds([low_fdp, low_steinke])["canaries"]["gradient"]
    assert gradient["epsilon_lower_bound"] == 0.1 and gradient["epsilon_lower_bound_fdp"] == 0.5
    assert gradient["correct_fdp"] == 120 and gradient["correct"] == 126


def test_folds_report_the_largest_p_value_so_it_flags_with_the_smallest_bound():
    low, high = _audit(), _audit()
    low["canaries"]["gradient"].update(epsilon_lower_bound=0.1, p_value=0.2)
    high["canaries"]["gradient"].update(epsilon_lower_bound=0.3, p_value=0.01)
    assert combine_folds([high, low])["canaries"]["gradient"]["p_value"] == 0.2
    low["canaries"]["gradient"]["p_value"] = None  # a fold without a p-value (an infinite ε) leaves none
    assert combine_folds([high, low])["canaries"]["gradient"]["p_value"] is None
    assert "p_value" not in combine_folds([_audit(), _audit()])["canaries"]["gradient"]  # written before p-values


def test_the_membership_line_names_the_attack_its_records_and_their_integer_counts():
    line = summary_lines(_audit())[1]
    assert line == ("audit: membership attack loss_threshold: ε ≥ 0.00 at 95% confidence, AUC 0.490 (0.5 is chance) "
                    "on 90 records (42 members and 48 non-members), chosen as the strongest of 2 attacks on 90 others")


def test_folds_keep_whole_counts_integers_and_a_fractional_mean_one_decimal():
    combined = combine_folds([_audit(54, 36), _audit(54, 37)])
    strongest = combined["strongest"]
    assert strongest["n_members"] == 54 and isinstance(strongest["n_members"], int)
    assert strongest["n_nonmembers"] == 36.5 and isinstance(strongest["true_positives"], int)
    lines = summary_lines(combined)
    assert "54 members and 36.5 non-members on average" in lines[1] and "mean over the folds" in lines[1]
    assert lines[0].endswith("126 right (the smallest bound of 2 folds)")
    assert not any(re.search(r"\b\d+\.0\b", line) for line in lines)  # never "54.0 members"


def test_a_fold_without_an_attack_says_why_after_combining():
    small = {"strongest": None, "attacks": [], "attack_note": "a part of the audit pool has 0 members", "flags": []}
    combined = combine_folds([_audit(), small])
    assert summary_lines(combined) == ["audit: no membership attack: a part of the audit pool has 0 members"]


def test_count_prints_an_integer_or_one_decimal():
    assert (count(54), count(54.0), count(36.5), count(np.int64(7))) == ("54", "54", "36.5", "7")


def test_the_attack_report_has_one_strongest_block_and_no_duplicate():
    rng = np.random.default_rng(0)
    is_member = np.r_[np.ones(60), np.zeros(60)]
    scores = {"loss_threshold": rng.standard_normal(120), "leaky": is_member + rng.standard_normal(120)}
    report = attack_report(scores, is_member, delta=1e-5, confidence=0.95, seed=0)
    assert set(report) == {"strongest", "attacks", "max_over_attacks", "n_choose", "n_eval"}
    strongest = report["strongest"]
    same = next(a for a in report["attacks"] if a["attack"] == strongest["attack"])
    assert {k: strongest[k] for k in same} == same and "tpr_at_1pct_fpr" in strongest
    assert strongest["n_members"] + strongest["n_nonmembers"] == report["n_eval"]


def test_the_sample_known_step_view_names_the_epsilon_it_is_compared_with():
    audit = _audit()
    audit["canaries"]["gradient_step_sampled"] = {**GRADIENT, "published_sample_epsilon": 18.58}
    line = next(line for line in summary_lines(audit) if "sample known" in line)
    assert line.startswith("audit: white-box gradient canaries, every step with the sample known: ε ≥ 0.13")
    assert line.endswith("126 right; to compare with ε = 18.58 of DP-SGD with its sample published, not with the "
                         "accountant's")
