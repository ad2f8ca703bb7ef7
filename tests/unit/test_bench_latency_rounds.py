"""The bench's latency rounds (issue #9): several rounds at one offered rate become one
figure, the median of the rounds' percentiles, with every round kept and shown."""

from __future__ import annotations

import warnings
from pathlib import Path
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


def test_the_cpu_while_taking_the_rate_is_per_event_and_a_share_of_a_core() -> None:
    cpu = report.cpu_during({"t": 100.0, "cpu": 7.0}, {"t": 112.0, "cpu": 16.0}, 10_000)
    assert cpu["cpu_ms_per_event"] == pytest.approx(0.9)
    assert cpu["cpu_share"] == pytest.approx(0.75)
    assert report.cpu_during({"t": 1.0, "cpu": 1.0}, {"t": 1.0, "cpu": 1.0}, 0) == {
        "cpu_ms_per_event": None,
        "cpu_share": None,
    }
    rounds = [
        _round(20, 80, cpu_ms_per_event=0.9, cpu_share=0.75),
        _round(30, 90, cpu_ms_per_event=0.5, cpu_share=0.95),
        _round(25, 95, cpu_ms_per_event=0.7, cpu_share=0.4),
    ]
    summary = report.latency_summary(rounds)
    assert (summary["cpu_ms_per_event"], summary["cpu_share"]) == (0.7, 0.75)
    assert "CPU 0.700 ms per event, 75% of a core" in report.latency_line(summary)
    assert report.latency_summary([_round(20, 80)])["cpu_ms_per_event"] is None
    results = {
        "latency": {"seconds": 10, "repeats": 3, "hub": {"1000": summary}, "raw": {"1000": summary}}
    }
    row = next(r for r in report.figures(results) if r["figure"].startswith("CPU per consent"))
    assert (row["hub"], row["raw"], row["ratio"]) == (0.7, 0.7, 1.0)


def test_the_hub_latency_is_split_at_its_commit() -> None:
    from bench.clients import Paced

    # five consents due 10 ms apart from t=100 s; the first falls in the warm-up
    due = {f"r{i}".encode(): 100.0 + i / 100 for i in range(5)}
    paced = Paced(due, 100.0, 0.05, 0.0)
    commits = {k: at + 0.040 + i / 1000 for i, (k, at) in enumerate(due.items())}
    arrivals = {k: commits[k] + 0.015 for k in due}
    del arrivals[b"r4"]  # never read: not in the split (the latency reports it missing)
    commits[b"r0"] = 100.5  # in the warm-up: not measured, however late
    split = report.latency_split(paced, commits, arrivals, warmup=0.005)
    assert split["split_measured"] == 3  # r1, r2, r3
    assert split["until_commit_p50_ms"] == pytest.approx(42)  # 41, 42, 43 ms
    assert split["until_commit_p99_ms"] == pytest.approx(42.98)
    assert split["after_commit_p50_ms"] == pytest.approx(15)
    assert split["after_commit_p99_ms"] == pytest.approx(15)
    assert report.latency_split(paced, {}, arrivals, warmup=0.005) == {
        "split_measured": 0,
        "until_commit_p50_ms": None,
        "until_commit_p99_ms": None,
        "after_commit_p50_ms": None,
        "after_commit_p99_ms": None,
        "transactions": 0,
        "transactions_per_s": None,
        "releases_per_transaction_mean": None,
        "releases_per_transaction_median": None,
    }

    hub_rounds = [
        _round(60, 150, **split),
        _round(70, 900, **(split | {"after_commit_p99_ms": 80.0})),
    ]
    hub = report.latency_summary(hub_rounds)
    assert hub["after_commit_p99_ms"] == pytest.approx((15 + 80) / 2)
    line = report.latency_line(hub)
    assert "until its commit p50 42.0 ms, p99 43.0 ms, after it p50 15.0 ms, p99 47.5 ms" in line
    raw = report.latency_summary([_round(20, 70)])
    assert raw["until_commit_p50_ms"] is None and "commit" not in report.latency_line(raw)
    results = {"latency": {"seconds": 10, "repeats": 2, "hub": {"500": hub}, "raw": {"500": raw}}}
    rows = {r["figure"]: r for r in report.figures(results)}
    until = rows["p50 from the consent's due time until the hub committed its release @ 500/s"]
    after = rows["p99 from that commit until the release was read (relay, broker) @ 500/s"]
    assert (until["hub"], until["raw"], until["ratio"]) == (pytest.approx(42), None, None)
    assert after["hub"] == pytest.approx(47.5)


def test_the_hub_transactions_are_told_by_their_commit_stamps() -> None:
    # one stamp per commit: releases stamped alike were committed together (warm-up too)
    commits = {b"r0": 10.0, b"r1": 10.0, b"r2": 10.0, b"r3": 10.5, b"r4": 11.0, b"r5": 11.0}
    found = report.transactions(commits)
    assert found == {
        "transactions": 3,
        "transactions_per_s": pytest.approx(2.0),  # two intervals over one second
        "releases_per_transaction_mean": pytest.approx(2.0),  # 3, 1, 2
        "releases_per_transaction_median": 2,
    }
    one = report.transactions({b"r0": 5.0, b"r1": 5.0})
    assert (one["transactions"], one["transactions_per_s"]) == (1, None)
    assert one["releases_per_transaction_mean"] == 2

    rounds = [_round(60, 150, **found), _round(70, 900, **(found | {"transactions_per_s": 4.0}))]
    hub = report.latency_summary(rounds)
    assert hub["transactions_per_s"] == pytest.approx(3.0)  # the median of the rounds
    assert "3 transactions/s of 2.0 releases on average (median 2)" in report.latency_line(hub)
    results = {"latency": {"seconds": 10, "repeats": 2, "hub": {"500": hub}}}
    rows = {r["figure"]: r for r in report.figures(results)}
    assert rows["the hub's transactions @ 500/s (that released)"]["hub"] == pytest.approx(3.0)
    assert rows["releases per transaction @ 500/s, mean"]["hub"] == pytest.approx(2.0)


def test_a_plot_with_no_release_measured_draws_no_empty_legend(tmp_path: Path) -> None:
    """A rate at which no release was measured (`--rates 1 --latency-seconds 0.05`) has no
    line to label: matplotlib would warn of an empty legend in the run's output."""
    missing = report.latency_summary(
        [_round(None, None, measured=0), _round(None, None, measured=0)]
    )
    document = {
        "environment": {"date": "2026-12-07T00:00:00+00:00", "smoke": True},
        "results": {"latency": {"raw": {"1": missing}, "hub": {"1": missing}}},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report.plot(document, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0
