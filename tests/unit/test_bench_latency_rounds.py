"""The bench's latency rounds (issue #9): several rounds at one offered rate become one
figure, the median of the rounds' percentiles, with every round kept and shown."""

from __future__ import annotations

from typing import Any

import pytest

from bench import report


def _round(p50: float | None, p99: float | None, **changes: Any) -> dict[str, Any]:
    stats = {
        "sent": 1_000,
        "measured": 900,
        "missing": 0,
        "complete": True,
        "offered_rate": 1_000.0,
        "sender_max_lag_ms": 3.0,
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": None if p99 is None else p99 + 10,
        "mean_ms": p50,
    }
    return {**stats, **changes}


def test_percentiles_are_the_median_of_the_rounds_and_counts_add_up() -> None:
    rounds = [
        _round(20, 80, sender_max_lag_ms=2.0),
        _round(30, 600, sender_max_lag_ms=90.0),
        _round(25, 95),
    ]
    summary = report.latency_summary(rounds)
    assert summary["p50_ms"] == 25
    assert summary["p99_ms"] == 95  # one noisy round does not make the figure
    assert summary["max_ms"] == 610
    assert summary["sender_max_lag_ms"] == 90.0
    assert summary["sent"] == 3_000 and summary["measured"] == 2_700
    assert summary["mean_ms"] == pytest.approx(25)
    assert summary["complete"] is True
    assert summary["rounds"] == 3 and summary["runs"] == rounds
    assert report.rounds_text(summary) == "p99 of 3 rounds 80, 600, 95 ms"


def test_a_round_with_lost_releases_counts_as_infinitely_late() -> None:
    lost = _round(40, None, missing=12, complete=False)
    two_of_three = report.latency_summary([_round(20, 80), lost, _round(25, 95)])
    assert two_of_three["p99_ms"] == 95  # the median still lands on a measured round
    assert two_of_three["missing"] == 12 and two_of_three["complete"] is False
    assert "missing" in report.rounds_text(two_of_three)

    most_lost = report.latency_summary([lost, lost, _round(25, 95)])
    assert most_lost["p99_ms"] is None  # reported missing, never as a number


def test_one_round_is_that_round_and_no_rounds_is_an_error() -> None:
    only = _round(20, 80)
    summary = report.latency_summary([only])
    assert (summary["p50_ms"], summary["p99_ms"]) == (20, 80)
    assert report.rounds_text(summary) == ""
    with pytest.raises(ValueError, match="no latency rounds"):
        report.latency_summary([])


def test_the_goal_and_the_table_show_every_round() -> None:
    hub = report.latency_summary([_round(60, 150), _round(70, 900), _round(65, 170)])
    raw = report.latency_summary([_round(20, 70), _round(22, 80), _round(21, 75)])
    results = {"latency": {"seconds": 10, "repeats": 3, "hub": {"1000": hub}, "raw": {"1000": raw}}}
    goal = next(g for g in report.goals(results) if g["goal"].startswith("p99"))
    assert goal["measured"] == 170
    assert goal["target"] == "<= 122.5 ms"  # 1.5 x the raw median 75 + 10
    assert goal["pass"] is False
    assert "hub p99 of 3 rounds 150, 900, 170 ms" in goal["detail"]
    assert "raw p99 of 3 rounds 70, 80, 75 ms" in goal["detail"]
