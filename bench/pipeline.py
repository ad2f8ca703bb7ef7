"""CPU per referral of the hub's own pipelines, in this process, without a broker: the
bench's referrals and consents (bench/workload.py) through the intake and consent
pipelines as the hub applies polled batches (`BatchPipeline.handle`), into a fresh SQLite
store per run, with the hub's log lines (JSON, at INFO) written to /dev/null. No consumer,
no outbox relay: what is left is parsing, validation, the consent gate, the store and the
log lines, about four fifths of the hub's CPU in the bench's throughput run.

A tool for comparing two versions of that code, where the full bench's figures move with
the broker and the machine: a few seconds a run, runs alternated by hand (A, B, A, B, ...).

    python -m bench.pipeline [--referrals 3000] [--runs 3] [--batch 256]

For counts that do not move with the machine at all, run it under valgrind's cachegrind
(`--tool=cachegrind --cache-sim=no`) with two sizes; the difference of the instruction
counts over the difference of the sizes is the instructions per referral.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from adapters.logging import configure_logging
from adapters.participants import load_participants
from adapters.storage.store import Store
from bench import workload
from schemas.messages import InboundRecord
from schemas.topics import Topics
from services import collector
from services.consent.handlers import consent_pipeline
from services.intake.handlers import intake_pipeline
from services.runtime import Hub
from services.settings import DEMO_PARTICIPANTS, HubSettings

PARTITIONS = 3


def records(topics: Topics, n: int, run: str) -> tuple[list[InboundRecord], list[InboundRecord]]:
    """The referrals and the consents, as the hub's consumers would hand them over."""
    stamp = int(time.time() * 1000)
    referrals, consents = [], []
    for i in range(n):
        who = workload.trajectory(i)
        rid = workload.referral_id(run, i)
        for out, message in (
            (referrals, workload.referral(topics.referral_created, rid, who)),
            (consents, workload.consent(topics.consent_granted, rid, who)),
        ):
            out.append(
                InboundRecord(
                    message.topic,
                    i % PARTITIONS,
                    i // PARTITIONS,
                    message.key,
                    message.value,
                    message.headers,
                    stamp,
                )
            )
    return referrals, consents


async def one_run(folder: Path, n: int, batch: int, run: str) -> tuple[float, int]:
    """(CPU seconds, releases stored) for `n` referrals and their consents."""
    url = f"sqlite:///{folder / f'{run}.db'}"
    settings = HubSettings(
        kafka_bootstrap_servers="127.0.0.1:9",  # never connected to
        database_url=url,
        topic_prefix=run,
        participants=DEMO_PARTICIPANTS,
        http_enabled=False,
    )
    store = Store(url)
    try:
        store.migrate()
        topics = Topics(run)
        hub = Hub(
            settings=settings,
            participants=load_participants(DEMO_PARTICIPANTS),
            store=store,
            topics=topics,
        )
        intake, consent = intake_pipeline(hub), consent_pipeline(hub)
        referrals, consents = records(topics, n, run)
        with collector.tuned():
            started = time.process_time()
            # the two consumers' polls take turns, the referrals a poll ahead
            for start in range(0, n, batch):
                await intake.handle(referrals[start : start + batch])
                await consent.handle(consents[start : start + batch])
            cpu = time.process_time() - started
        with store.engine.connect() as conn:
            released = int(conn.exec_driver_sql("select count(*) from releases").scalar() or 0)
    finally:
        store.dispose()
    return cpu, released


async def measure(n: int, runs: int, batch: int, out: TextIO) -> list[float]:
    """Milliseconds of CPU per referral, one figure per run."""
    per_referral: list[float] = []
    with tempfile.TemporaryDirectory(prefix="schakel-bench-pipeline-") as tmp:
        for i in range(runs):
            cpu, released = await one_run(Path(tmp), n, batch, f"pipe{i}")
            if released != n:
                raise RuntimeError(f"run {i + 1}: {released} releases stored for {n} referrals")
            per_referral.append(cpu / n * 1000)
            print(f"run {i + 1}/{runs}: {per_referral[-1]:.3f} ms CPU per referral", file=out)
    return per_referral


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--referrals", type=int, default=3000, help="per run (default 3000)")
    parser.add_argument("--runs", type=int, default=3, help="fresh stores (default 3)")
    parser.add_argument("--batch", type=int, default=256, help="records per poll (default 256)")
    args = parser.parse_args(argv)
    for name in ("referrals", "runs", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    configure_logging("INFO", "json", open(os.devnull, "w"))  # noqa: SIM115 - for the run
    print(f"{args.referrals} referrals and their consents per run, polls of {args.batch} records")
    try:
        figures = asyncio.run(measure(args.referrals, args.runs, args.batch, sys.stdout))
    except RuntimeError as exc:  # the pipelines did not release every referral: no figure
        print(f"python -m bench.pipeline: {exc}", file=sys.stderr)
        return 1
    print(
        f"CPU per referral: median {statistics.median(figures):.3f} ms, "
        f"lowest {min(figures):.3f} ms over {len(figures)} runs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
