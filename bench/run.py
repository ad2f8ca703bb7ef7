"""The bench: every measurement of issue #9, side by side with a raw aiokafka baseline, on
one broker, in one run.

    python3 dev.py bench             # the full run (a soak of 1M events: plan on an hour)
    python3 dev.py bench --smoke     # tiny sizes, under a minute (what CI runs)
    python -m bench --help           # sizes, rates, output folder, --profile

The broker is KAFKA_BOOTSTRAP_SERVERS when set, else an embedded Tansu started for the
run. Each measured system (the hub, the raw pipe, the offline commands) runs in a process
of its own (bench/sut.py), started fresh per phase; this process is the load generator
and the stopwatch. Each phase uses topics of its own, deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from adapters.broker.admin import TopicSpec, cluster_info, delete_topics, ensure_topics
from adapters.broker.consumer import ConsumerTuning
from adapters.broker.embedded import EmbeddedBroker
from adapters.participants import load_participants
from bench import report
from bench.clients import (
    Counter,
    by_ce_type,
    header,
    pace,
    preload,
    producer,
)
from bench.stores import StoreError, Stores
from bench.workload import (
    ORGANISATIONS,
    Message,
    consent,
    feedback,
    referral,
    referral_id,
    retarget,
    trajectories,
    trajectory,
)
from schemas.topics import (
    CE_FEEDBACK_FORWARDED,
    CE_REFERRAL_RELEASED,
    CE_REFERRAL_UPDATED,
    Topics,
)
from services import collector
from services.hub import topic_specs
from services.settings import DEMO_PARTICIPANTS, HubSettings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MAX_RECORDS = 500  # records per poll: the hub's default (SCHAKEL_*_MAX_RECORDS)
MIB = 2**20
REPLY_BYTES = 64 * MIB
"""Longest reply line from a measured process (the commit times of a latency round: about
40 bytes a release; asyncio's default limit is 64 KiB)."""


@dataclass(frozen=True)
class Sizes:
    referrals: int = 10_000
    latency_seconds: float = 10.0
    rates: tuple[int, ...] = (500, 1_000, 2_000)
    latency_repeats: int = 3
    """Rounds of every offered rate, the raw pipe's and the hub's taking turns; the table
    gives the median of the rounds' percentiles."""
    soak_events: int = 1_000_000
    audit_entries: int = 200_000
    partitions: int = 6
    hub_processes: int = 1
    """Hub processes sharing the throughput run's work (one consumer group, one store)."""
    raw_records: int = 40_000
    """The raw pipe moves at least this many records (the hub's pairs, repeated), so that its
    rate is a steady one and not its start-up."""
    calibration_referrals: int = 3_000
    calibration_runs: int = 3
    """The machine's speed for the hub's Python, at the start and at the end of the run:
    `python -m bench.pipeline` (this many referrals a run, this many runs, polls of 64) in a
    process of its own. The raw pipe's CPU does not always tell it: on one day it was as low
    as on fast days while the pipelines took 30% more CPU for the same instructions."""


SMOKE = Sizes(
    referrals=60,
    latency_seconds=0.1,
    latency_repeats=2,
    soak_events=300,
    audit_entries=1_000,
    partitions=3,
    raw_records=0,
    calibration_referrals=30,
    calibration_runs=1,
)
PHASES = ("calibration", "throughput", "offline", "latency", "soak")
CALIBRATION_BATCH = 64


class BenchError(Exception):
    pass


@dataclass
class Done:
    """Events done so far in a soak (read by the RSS sampler)."""

    events: int = 0


class Sends:
    """A producer's sends, not awaited one by one; every 2,000 the acknowledgements are
    collected, so that a failed send stops the bench."""

    def __init__(self, client: AIOKafkaProducer) -> None:
        self.client = client
        self.pending: list[asyncio.Future[Any]] = []

    async def send(self, m: Message) -> None:
        self.pending.append(
            await self.client.send(m.topic, m.value, key=m.key, headers=list(m.headers))
        )
        if len(self.pending) >= 2_000:
            await self.flush()

    async def flush(self) -> None:
        pending, self.pending = self.pending, []
        await asyncio.gather(*pending)


STARTED = time.monotonic()


def say(text: str) -> None:
    print(f"[bench {time.monotonic() - STARTED:6.1f}s] {text}", flush=True)


class Child:
    """A bench/sut.py process: one JSON command per line in, one JSON reply per line out."""

    def __init__(
        self, name: str, proc: asyncio.subprocess.Process, log_path: Path, code: Path
    ) -> None:
        self.name, self.proc, self.log_path, self.code = name, proc, log_path, code

    @classmethod
    async def spawn(cls, name: str, log_dir: Path, code: Path) -> Child:
        """`python -m bench.sut` in `code`: its packages come first on sys.path."""
        log_path = log_dir / f"bench-{name}.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.sut",
                cwd=code,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                limit=REPLY_BYTES,
            )
        return cls(name, proc, log_path, code)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def call(self, cmd: str, wait: float = 120.0, **args: Any) -> dict[str, Any]:
        """Send a command and wait up to `wait` seconds for its reply."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(orjson.dumps({"cmd": cmd, **args}) + b"\n")
        await self.proc.stdin.drain()
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), wait)
        except TimeoutError:
            raise BenchError(f"{self.name}: no answer to {cmd} in {wait:.0f} s") from None
        if not line:
            raise BenchError(f"{self.name} exited during {cmd}; its log: {self.log_path}")
        reply: dict[str, Any] = orjson.loads(line)
        if "error" in reply:
            raise BenchError(f"{self.name}: {reply['error']} (log: {self.log_path})")
        if "code" in reply and Path(reply["code"]) != self.code.resolve():
            raise BenchError(f"{self.name} runs the code in {reply['code']}, not the snapshot")
        return reply

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"cmd": "exit"}\n')
                await self.proc.stdin.drain()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()  # our own child, by its handle
                await self.proc.wait()


def snapshot(work: Path, revision: str | None) -> Path:
    """The code the measured processes run: a copy of the packages taken when the run
    starts, from the working tree as it is or (`revision`) from a commit. The tree is
    shared, and a module edited half-way through a run would otherwise be measured in
    some phases and not in others."""
    import subprocess
    import tarfile

    root = work / "code"
    if revision is None:
        for name in report.CODE:
            shutil.copytree(
                ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "results")
            )
        return root
    archive = work / "code.tar"
    try:
        subprocess.run(
            ["git", "archive", "--output", str(archive), revision, "--", *report.CODE],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as exc:  # e.g. a commit from before bench/ existed
        said = (exc.stderr or "").strip().splitlines()
        raise BenchError(
            f"--code {revision}: git archive of {', '.join(report.CODE)} failed"
            + (f" ({said[0]})" if said else "")
        ) from None
    root.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return root


def rss_of(pid: int | None) -> int | None:
    import psutil

    if pid is None:
        return None
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


def cpu_of(pid: int | None) -> float | None:
    import psutil

    if pid is None:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def per(value: float | None, count: int) -> float | None:
    return None if value is None or count == 0 else value / count


class Bench:
    def __init__(
        self,
        bootstrap: str,
        broker_pid: int | None,
        sizes: Sizes,
        work: Path,
        log_dir: Path,
        out: Path,
        profile: bool,
        stores: Stores,
        revision: str | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.broker_pid = broker_pid
        self.sizes = sizes
        self.work = work
        self.log_dir = log_dir
        self.out = out
        self.profile = profile
        self.stores = stores
        self.run_id = stores.run_id
        self.code = snapshot(work, revision)
        self.participants = load_participants(DEMO_PARTICIPANTS)
        self.tuning: ConsumerTuning | None = None
        self.results: dict[str, Any] = {}
        self._kept: tuple[str, Topics, str, int, int] | None = None

    @contextlib.asynccontextmanager
    async def child(self, name: str):  # type: ignore[no-untyped-def]
        process = await Child.spawn(name, self.log_dir, self.code)
        try:
            yield process
        finally:
            await process.close()

    # --- broker housekeeping -------------------------------------------------------------

    def prefix(self, phase: str) -> str:
        return f"bench{self.run_id}-{phase}."

    def hub_settings(self, prefix: str) -> HubSettings:
        return HubSettings(
            kafka_bootstrap_servers=self.bootstrap,
            topic_prefix=prefix,
            participants=DEMO_PARTICIPANTS,
            topic_partitions=self.sizes.partitions,
        )

    async def create_hub_topics(self, prefix: str) -> Topics:
        """Every topic the hub will use, created before any client asks for it (the embedded
        broker auto-creates an unknown topic with 4 partitions)."""
        topics = Topics(prefix)
        await ensure_topics(
            self.bootstrap, topic_specs(self.hub_settings(prefix), self.participants, topics)
        )
        return topics

    async def create_pipe_topics(self, prefix: str) -> tuple[str, str]:
        source, target = prefix + "in", prefix + "out"
        await ensure_topics(
            self.bootstrap,
            [TopicSpec(source, self.sizes.partitions), TopicSpec(target, self.sizes.partitions)],
        )
        return source, target

    async def drop(self, prefix: str) -> None:
        """Delete a phase's topics (the embedded broker keeps records in memory)."""
        from adapters.broker.admin import _admin

        admin = _admin(self.bootstrap, 15_000)
        await admin.start()
        try:
            names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        finally:
            await admin.close()
        if names:
            await delete_topics(self.bootstrap, names)

    def welfare_topics(self, topics: Topics) -> list[str]:
        return [topics.welfare_referrals(o.welfare_id) for o in ORGANISATIONS]

    def pipe_args(self, prefix: str, source: str, target: str) -> dict[str, Any]:
        assert self.tuning is not None
        return {
            "bootstrap": self.bootstrap,
            "source": source,
            "target": target,
            "group": prefix + "pipe",
            "tuning": asdict(self.tuning),
            "max_records": MAX_RECORDS,
        }

    def hub_args(self, prefix: str, store: str, **extra: Any) -> dict[str, Any]:
        return {
            "bootstrap": self.bootstrap,
            "prefix": prefix,
            "database_url": self.stores.url(store),
            "partitions": self.sizes.partitions,
            **extra,
        }

    def released(self) -> Callable[[Any], bytes | None]:
        """One record per referral on a welfare topic: its release (or, for a referral that
        joined an open registration, the update that carries it)."""
        return by_ce_type(CE_REFERRAL_RELEASED, CE_REFERRAL_UPDATED)

    def pairs(self, topics: Topics, run: str, count: int) -> tuple[list[Message], list[Message]]:
        referrals, consents = [], []
        for i in range(count):
            rid, who = referral_id(run, i), trajectory(i)
            referrals.append(referral(topics.referral_created, rid, who))
            consents.append(consent(topics.consent_granted, rid, who))
        return referrals, consents

    # --- phases ----------------------------------------------------------------------------

    async def run(self, phases: tuple[str, ...]) -> dict[str, Any]:
        info = await cluster_info(self.bootstrap)
        self.tuning = ConsumerTuning.choose(
            embedded=info.is_embedded,
            session_timeout_ms=None,
            heartbeat_interval_ms=None,
            fetch_max_wait_ms=HubSettings().fetch_max_wait_ms,
            max_message_bytes=HubSettings().max_message_bytes,
        )
        self.results["store"] = {"kind": self.stores.kind, "url": self.stores.shown_url}
        self.results["broker"] = {
            "bootstrap_embedded": self.broker_pid is not None,
            "cluster_id": info.cluster_id,
            "tuning": asdict(self.tuning),
        }
        if self.sizes.referrals > trajectories():
            say(
                f"note: {self.sizes.referrals} referrals but {trajectories()} fictional "
                "patient x organisation trajectories: the rest join open registrations"
            )
        steps = {
            "throughput": self.throughput,
            "offline": self.offline,
            "latency": self.latency,
            "soak": self.soak,
            "profile": self.profiled,
        }
        took: dict[str, float] = {}
        self.results["phase_seconds"] = took

        async def timed(name: str, step: Callable[[], Awaitable[None]]) -> None:
            started = time.monotonic()
            await step()
            took[name] = took.get(name, 0.0) + time.monotonic() - started

        if "calibration" in phases:
            await timed("calibration", lambda: self.calibrate("start"))
        for name, step in steps.items():
            if name in phases or (name == "profile" and self.profile):
                await timed(name, step)
        if "calibration" in phases:
            await timed("calibration", lambda: self.calibrate("end"))
        if self._kept is not None:  # the throughput run's topics, when nothing replayed them
            await self.drop(self._kept[0])
        return self.results

    async def calibrate(self, when: str) -> None:
        """The hub's pipelines in-process (bench/pipeline.py), in a fresh process: how fast
        the machine runs the hub's Python now, beside the figures it moves."""
        n, runs = self.sizes.calibration_referrals, self.sizes.calibration_runs
        if '"pipeline": pipeline' not in (self.code / "bench" / "sut.py").read_text("utf-8"):
            say(f"calibration ({when}): not in the measured code (`--code` older than d0ad990)")
            return
        say(f"calibration ({when}): the hub's pipelines in-process, {runs} x {n} referrals")
        async with self.child(f"calibration-{when}") as sut:
            measured = await sut.call(
                "pipeline",
                referrals=n,
                runs=runs,
                batch=CALIBRATION_BATCH,
                wait=60 + n * runs / 100,
            )
        self.results.setdefault("calibration", {})[when] = measured
        runs_text = ", ".join(f"{x:.3f}" for x in measured["ms_per_referral"])
        say(f"  {measured['median_ms']:.3f} ms CPU per referral, median of {runs_text}")

    async def throughput(self) -> None:
        n = self.sizes.referrals
        say(
            f"throughput: raw aiokafka pipe, the hub's {n} referrals + {n} consents "
            f"(repeated to at least {self.sizes.raw_records:,} records)"
        )
        raw = await self.raw_throughput(n)
        say(
            f"  raw pipe: {raw['events']} records in {raw['seconds']:.2f} s = "
            f"{raw['rate']:,.0f} msg/s; {raw['cpu_ms_per_event']:.3f} ms CPU/msg"
        )
        say(f"throughput: the hub, {n} referrals + {n} consents pre-loaded -> {n} releases")
        hub = await self.hub_throughput(n, keep=True)
        say(
            f"  hub: {hub['events']} events in {hub['seconds']:.2f} s = {hub['rate']:,.0f} events/s "
            f"({hub['releases_per_s']:,.0f} releases/s); {hub['cpu_ms_per_referral']:.3f} ms "
            f"CPU/referral; {hub['rate'] / raw['rate']:.2f}x raw"
        )
        self.results["throughput"] = {"raw": raw, "hub": hub}

    async def raw_throughput(self, n: int) -> dict[str, Any]:
        prefix = self.prefix("raw-tp")
        source, target = await self.create_pipe_topics(prefix)
        referrals, consents = self.pairs(Topics(prefix), f"R{self.run_id}", n)
        pairs = [
            retarget(m, source) for pair in zip(referrals, consents, strict=True) for m in pair
        ]
        rounds = max(1, math.ceil(self.sizes.raw_records / len(pairs)))
        mixed = [
            Message(m.topic, m.key + f"/{r}".encode(), m.value, m.headers)
            for r in range(rounds)
            for m in pairs
        ]
        loaded, load_s = await preload(self.bootstrap, mixed)
        counter = await Counter(
            self.bootstrap, [target], lambda r: r.key + b"|" + (header(r, "ce_type") or b"")
        ).start()
        try:
            async with self.child("raw-throughput") as sut:
                broker0 = cpu_of(self.broker_pid)
                ready = await sut.call("pipe-start", **self.pipe_args(prefix, source, target))
                last = await counter.until(loaded, timeout=60 + loaded / 50)
                end = await sut.call("cpu")
                broker1 = cpu_of(self.broker_pid)
                await sut.call("pipe-stop")
                rss = rss_of(sut.pid)
        finally:
            await counter.stop()
            await self.drop(prefix)
        seconds = last - ready["t0"]
        cpu = end["cpu"] - ready["cpu0"]
        return {
            "events": loaded,
            "preload_seconds": load_s,
            "seconds": seconds,
            "rate": loaded / seconds,
            "cpu_seconds": cpu,
            "cpu_ms_per_event": cpu / loaded * 1000,
            "cpu_ms_per_pair": cpu / loaded * 2000,
            "broker_cpu_ms_per_event": None
            if broker0 is None or broker1 is None
            else (broker1 - broker0) / loaded * 1000,
            "rss_bytes": rss,
        }

    async def hub_throughput(
        self, n: int, *, keep: bool, spy: str | None = None, stacks: Path | None = None
    ) -> dict[str, Any]:
        prefix = self.prefix("hub-tp" if keep else "hub-prof")
        topics = await self.create_hub_topics(prefix)
        referrals, consents = self.pairs(topics, f"T{self.run_id}", n)
        loaded, load_s = await preload(self.bootstrap, [*referrals, *consents])
        counter = await Counter(
            self.bootstrap, self.welfare_topics(topics), self.released()
        ).start()
        db = "throughput" if keep else "profiled"
        name = "hub-throughput" if keep else "hub-profiled"
        k = self.sizes.hub_processes
        try:
            async with contextlib.AsyncExitStack() as stack:
                suts = [
                    await stack.enter_async_context(
                        self.child(name if i == 0 else f"{name}-{i + 1}")
                    )
                    for i in range(k)
                ]
                args = self.hub_args(prefix, db)  # the store is created before the clock runs
                broker0, store0 = cpu_of(self.broker_pid), self.stores.server_cpu()
                # Several processes start together: one consumer group, the partitions divided.
                readies = await asyncio.gather(*(sut.call("hub-start", **args) for sut in suts))
                sut, ready = suts[0], min(readies, key=lambda r: r["t0"])
                sampler = await start_py_spy(spy, sut.pid, stacks) if spy and stacks else None
                last = await counter.until(n, timeout=60 + n / 20)
                # Every process drains (only the relay lock's holder publishes, the others' rows too).
                drains = [await s.call("hub-drain") for s in suts]
                if sampler is not None:
                    await stop_py_spy(sampler)
                broker1, store1 = cpu_of(self.broker_pid), self.stores.server_cpu()
                rss = rss_of(sut.pid)
                for s in suts:
                    await s.call("hub-stop")
        finally:
            await counter.stop()
            if not keep:
                await self.drop(prefix)
        seconds = last - ready["t0"]
        cpu = sum(d["cpu"] - r["cpu0"] for d, r in zip(drains, readies, strict=True))
        drained = {"audit_entries": max(d["audit_entries"] for d in drains)}
        result = {
            "processes": k,
            "referrals": n,
            "events": loaded,
            "preload_seconds": load_s,
            "startup_seconds": max(r["started"] - r["called"] for r in readies),
            "seconds": seconds,
            "rate": loaded / seconds,
            "releases_per_s": n / seconds,
            "duplicates": counter.duplicates,
            "releases_counted": counter.count,
            "audit_entries": drained["audit_entries"],
            "cpu_seconds": cpu,
            "cpu_ms_per_referral": cpu / n * 1000,
            "broker_cpu_ms_per_referral": None
            if broker0 is None or broker1 is None
            else (broker1 - broker0) / n * 1000,
            "store_cpu_ms_per_referral": None
            if store0 is None or store1 is None
            else (store1 - store0) / n * 1000,
            "rss_bytes": rss,
        }
        if keep:
            self._kept = (prefix, topics, db, drained["audit_entries"], loaded)
        return result

    async def offline(self) -> None:
        """Replay and audit verify, each against a plain consumer reading the same topic."""
        if self._kept is None:
            n = self.sizes.referrals
            say(f"offline: first a hub run to replay ({n} referrals)")
            await self.hub_throughput(n, keep=True)
        assert self._kept is not None
        prefix, topics, db, audit_entries, inbound = self._kept
        inbound_topics = [
            topics.referral_created,
            topics.consent_granted,
            topics.consent_withdrawn,
            topics.feedback_returned,
        ]
        live = self.stores.url(db)
        try:
            async with self.child("offline") as sut:
                say(f"replay: raw read of the inbound topics ({inbound} records)")
                raw_in = await sut.call(
                    "consume",
                    bootstrap=self.bootstrap,
                    topics=inbound_topics,
                    expected=inbound,
                    min_records=self.sizes.raw_records,
                    timeout=120 + inbound / 1000,
                    wait=130 + inbound / 1000,
                )
                say(f"  raw read: {raw_in['rate']:,.0f} records/s ({raw_in['passes']} passes)")
                say("replay: schakel replay of the same topics into a fresh store")
                replayed = await sut.call(
                    "replay",
                    bootstrap=self.bootstrap,
                    prefix=prefix,
                    database_url=live,
                    into=f"sqlite:///{self.work / 'replay.db'}",
                    wait=600 + inbound / 50,
                )
                say(
                    f"  replay: {replayed['records']} records in {replayed['seconds']:.2f} s = "
                    f"{replayed['rate']:,.0f} records/s; {replayed['differences']} differences "
                    f"with the live store; {replayed['rate'] / raw_in['rate']:.3f}x raw read"
                )
                say(f"audit verify: raw read of the audit topic ({audit_entries} records)")
                raw_audit = await sut.call(
                    "consume",
                    bootstrap=self.bootstrap,
                    topics=[topics.audit],
                    expected=audit_entries,
                    min_records=self.sizes.raw_records,
                    timeout=120 + audit_entries / 1000,
                    wait=130 + audit_entries / 1000,
                )
                say(
                    f"  raw read: {raw_audit['rate']:,.0f} records/s ({raw_audit['passes']} passes)"
                )
                verified = await sut.call("audit-verify", database_url=live, wait=600)
                say(
                    f"  audit verify of the hub's chain: {verified['entries']} entries, "
                    f"{verified['rate']:,.0f} entries/s"
                )
                m = self.sizes.audit_entries
                say(f"audit verify: {m} entries filled by bench/audit_verify.py")
                filled = await sut.call("audit-verify", fill=m, wait=600 + m / 500)
                say(f"  audit verify: {filled['rate']:,.0f} entries/s")
        finally:
            await self.drop(prefix)
            self._kept = None
        self.results["replay"] = {"raw_read": raw_in, "replay": replayed}
        self.results["audit"] = {"raw_read": raw_audit, "hub_chain": verified, "filled": filled}

    async def latency(self) -> None:
        """Each rate in rounds: the raw pipe, then the hub, then the next rate; all rates
        again in the next round. Each measurement gets fresh topics (and the hub a fresh
        store); the two measured processes stay up, idle while the other one runs."""
        seconds, repeats = self.sizes.latency_seconds, self.sizes.latency_repeats
        warmup = min(1.0, seconds / 5)
        rounds: dict[str, dict[str, list[dict[str, Any]]]] = {
            kind: {str(rate): [] for rate in self.sizes.rates} for kind in ("raw", "hub")
        }
        async with self.child("raw-latency") as raw, self.child("hub-latency") as hub:
            for round_ in range(1, repeats + 1):
                suffix = f" (round {round_} of {repeats})" if repeats > 1 else ""
                for rate in self.sizes.rates:
                    stats = await self.raw_latency(raw, rate, seconds, warmup, round_)
                    rounds["raw"][str(rate)].append(stats)
                    say(f"latency raw pipe @ {rate}/s{suffix}: {report.latency_line(stats)}")
                    stats = await self.hub_latency(hub, rate, seconds, warmup, round_)
                    rounds["hub"][str(rate)].append(stats)
                    say(f"latency hub @ {rate}/s{suffix}: {report.latency_line(stats)}")
        out: dict[str, Any] = {
            "seconds": seconds,
            "warmup_seconds": warmup,
            "repeats": repeats,
            **{
                kind: {rate: report.latency_summary(runs) for rate, runs in by_rate.items()}
                for kind, by_rate in rounds.items()
            },
        }
        if repeats > 1:
            for rate in self.sizes.rates:
                for kind in ("raw", "hub"):
                    stats = out[kind][str(rate)]
                    say(
                        f"latency {'raw pipe' if kind == 'raw' else 'hub'} @ {rate}/s, median of "
                        f"{repeats} rounds: {report.latency_line(stats)}; {report.rounds_text(stats)}"
                    )
        self.results["latency"] = out

    async def raw_latency(
        self, sut: Child, rate: int, seconds: float, warmup: float, round_: int = 1
    ) -> dict[str, Any]:
        count = max(1, int(rate * seconds))
        prefix = self.prefix(f"raw-lat{rate}r{round_}")
        source, target = await self.create_pipe_topics(prefix)
        _, consents = self.pairs(Topics(prefix), f"L{rate}r{round_}{self.run_id}", count)
        counter = await Counter(self.bootstrap, [target], lambda r: r.key).start()
        try:
            await sut.call("pipe-start", **self.pipe_args(prefix, source, target))
            return await self.measure(
                counter, [retarget(m, source) for m in consents], rate, warmup, sut
            )
        finally:
            await sut.call("pipe-stop")
            await counter.stop()
            await self.drop(prefix)

    async def hub_latency(
        self, sut: Child, rate: int, seconds: float, warmup: float, round_: int = 1
    ) -> dict[str, Any]:
        """The referrals go first and wait for consent; then the consents are sent at the
        offered rate. Latency: from a consent's send time to its release being read."""
        count = max(1, int(rate * seconds))
        prefix = self.prefix(f"hub-lat{rate}r{round_}")
        topics = await self.create_hub_topics(prefix)
        referrals, consents = self.pairs(topics, f"L{rate}r{round_}{self.run_id}", count)
        counter = await Counter(
            self.bootstrap, self.welfare_topics(topics), self.released()
        ).start()
        try:
            await sut.call(
                "hub-start",
                **self.hub_args(prefix, f"latency-{rate}-{round_}", count_waiting=True),
            )
            await preload(self.bootstrap, referrals)
            limit = 120 + count / 20
            await sut.call("hub-wait-waiting", count=count, timeout=limit, wait=limit + 10)
            return await self.measure(counter, consents, rate, warmup, sut, split=True)
        finally:
            await sut.call("hub-stop")
            await counter.stop()
            await self.drop(prefix)

    async def measure(
        self,
        counter: Counter,
        messages: list[Message],
        rate: int,
        warmup: float,
        sut: Child,
        *,
        split: bool = False,
    ) -> dict[str, Any]:
        """Send at `rate`, wait for every output; with the measured process's CPU from the
        first send to the last output. This process's collector is tuned as the hub's while
        it does (`services.collector`): untuned, its full collections here took 26-115 ms
        each, a pause of the sender and of the arrivals' clock alike. `split` (a hub): the
        latency also split at the hub's commit of each release (`report.latency_split`)."""
        complete = True
        with collector.tuned():
            before = await sut.call("cpu")
            paced = await pace(self.bootstrap, messages, rate)
            try:
                await counter.until(len(messages), timeout=60 + len(messages) / 30)
            except TimeoutError:
                complete = False
            after = await sut.call("cpu")
        stats = report.latency_stats(paced, counter.arrivals, warmup, complete)
        stats |= report.cpu_during(before, after, len(messages))
        if split:
            reply = await sut.call("hub-commits")
            commits = {rid.encode(): at for rid, at in reply["commits"].items()}
            stats |= report.latency_split(paced, commits, counter.arrivals, warmup)
        return stats

    async def soak(self) -> None:
        events = self.sizes.soak_events
        say(
            f"soak: the hub, {events} events in closed-loop trajectories (referral, consent, feedback)"
        )
        hub = await self.hub_soak(events)
        say(f"  hub: {report.soak_line(hub)}")
        say(f"soak: raw pipe, {events} records")
        raw = await self.raw_soak(events)
        say(f"  raw pipe: {report.soak_line(raw)}")
        self.results["soak"] = {"hub": hub, "raw": raw}

    async def sample_rss(
        self, pid: int, progress: Callable[[], int], stop: asyncio.Event, samples: list[list[float]]
    ) -> None:
        """RSS of the measured process (and the broker's) with the events done so far, until
        `stop`, and once more then."""
        started = time.monotonic()
        interval = 0.05 if self.sizes.soak_events < 100_000 else 1.0
        while True:
            samples.append(
                [
                    time.monotonic() - started,
                    progress(),
                    rss_of(pid) or 0,
                    rss_of(self.broker_pid) or 0,
                ]
            )
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def soaking(
        self,
        name: str,
        prefix: str,
        counter: Counter,
        start: tuple[str, dict[str, Any]],
        stop_cmd: str,
        drive: Callable[[Child, AIOKafkaProducer, Done], Awaitable[None]],
    ) -> dict[str, Any]:
        """The frame of a soak: the measured process started, its RSS sampled while `drive`
        sends the load (and counts what is done), its CPU over the whole soak."""
        load = producer(self.bootstrap, client_id="bench-soak")
        await load.start()
        samples: list[list[float]] = []
        stop, done = asyncio.Event(), Done()
        try:
            async with self.child(name) as sut:
                ready = await sut.call(start[0], **start[1])
                sampler = asyncio.create_task(
                    self.sample_rss(sut.pid, lambda: done.events, stop, samples)
                )
                started = time.monotonic()
                await drive(sut, load, done)
                seconds = time.monotonic() - started
                end = await sut.call("cpu")
                stop.set()
                await sampler
                await sut.call(stop_cmd)
        finally:
            stop.set()
            await load.stop()
            await counter.stop()
            await self.drop(prefix)
        return report.soak_stats(samples, done.events, seconds, end["cpu"] - ready["cpu0"])

    async def hub_soak(self, events: int) -> dict[str, Any]:
        """Trajectories run to the end and patients come back: referral and consent, the
        release read, completed feedback sent, the GP's copy read; then the trajectory is
        free for a new referral. At most `window` are under way, so the backlog stays small
        and what grows is the hub's history, not a queue."""
        cycles = math.ceil(events / 3)
        prefix = self.prefix("hub-soak")
        topics = await self.create_hub_topics(prefix)
        window = min(trajectories(), 1_000)
        free = deque(range(trajectories()))
        under_way: dict[bytes, int] = {}
        fed: set[bytes] = set()
        feedback_due: list[bytes] = []
        finished: list[bytes] = []
        wake = asyncio.Event()

        def arrived(record: Any, _now: float) -> None:
            if header(record, "ce_type") == CE_FEEDBACK_FORWARDED.encode():
                finished.append(record.key)
            else:
                feedback_due.append(record.key)
            wake.set()

        gp_topics = [topics.his_feedback(o.practice_id) for o in ORGANISATIONS]
        counter = await Counter(
            self.bootstrap,
            self.welfare_topics(topics) + gp_topics,
            by_ce_type(CE_REFERRAL_RELEASED, CE_REFERRAL_UPDATED, CE_FEEDBACK_FORWARDED),
            remember=False,
            on_arrival=arrived,
        ).start()

        async def drive(sut: Child, load: AIOKafkaProducer, done: Done) -> None:
            sent = cycles_done = 0
            sends = Sends(load)
            last_report = last_progress = started = time.monotonic()
            while cycles_done < cycles:
                while free and sent < cycles and len(under_way) < window:
                    slot, rid = free.popleft(), referral_id(f"S{self.run_id}", sent)
                    who = trajectory(slot)
                    await sends.send(referral(topics.referral_created, rid, who))
                    await sends.send(consent(topics.consent_granted, rid, who))
                    under_way[rid.encode()] = slot
                    sent += 1
                while feedback_due:
                    key = feedback_due.pop()
                    if key not in under_way or key in fed:
                        continue  # a record read twice: its feedback went already
                    fed.add(key)
                    who = trajectory(under_way[key])
                    await sends.send(feedback(topics.feedback_returned, key.decode(), who))
                while finished:
                    key = finished.pop()
                    if key not in under_way:
                        continue
                    fed.discard(key)
                    free.append(under_way.pop(key))
                    cycles_done += 1
                    done.events = cycles_done * 3
                    last_progress = time.monotonic()
                now = time.monotonic()
                if now - last_report > 10:
                    say(
                        f"  soak: {done.events:,} of {cycles * 3:,} events, "
                        f"{done.events / (now - started):,.0f}/s, hub RSS "
                        f"{(rss_of(sut.pid) or 0) / MIB:.0f} MiB"
                    )
                    last_report = now
                if now - last_progress > 120:
                    raise BenchError(f"soak stalled at {cycles_done} of {cycles} trajectories")
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), 1.0)
            await sends.flush()

        start = ("hub-start", self.hub_args(prefix, "soak"))
        return await self.soaking("hub-soak", prefix, counter, start, "hub-stop", drive)

    async def raw_soak(self, events: int) -> dict[str, Any]:
        """The same number of records through the raw pipe, at most `window` in flight."""
        prefix = self.prefix("raw-soak")
        source, target = await self.create_pipe_topics(prefix)
        who = trajectory(0)
        templates = [
            referral(source, "VERW-template", who),
            consent(source, "VERW-template", who),
            feedback(source, "VERW-template", who),
        ]
        counter = await Counter(self.bootstrap, [target], lambda r: r.key, remember=False).start()
        window = 1_000

        async def drive(sut: Child, load: AIOKafkaProducer, done: Done) -> None:
            sends = Sends(load)
            sent, last_report = 0, time.monotonic()
            while counter.count < events:
                while sent < events and sent - counter.count < window:
                    t = templates[sent % 3]
                    await sends.send(Message(source, f"S{sent}".encode(), t.value, t.headers))
                    sent += 1
                done.events = counter.count
                if time.monotonic() - last_report > 10:
                    say(
                        f"  soak: {counter.count:,} of {events:,} records, raw pipe RSS "
                        f"{(rss_of(sut.pid) or 0) / MIB:.0f} MiB"
                    )
                    last_report = time.monotonic()
                await counter.until(min(events, counter.count + 1), timeout=120)
            done.events = counter.count
            await sends.flush()

        start = ("pipe-start", self.pipe_args(prefix, source, target))
        return await self.soaking("raw-soak", prefix, counter, start, "pipe-stop", drive)

    async def profiled(self) -> None:
        """A separate hub throughput run sampled by py-spy (every thread, only while on the
        CPU); its timings are not used in the table (the sampler takes CPU of its own)."""
        n = self.sizes.referrals
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        if spy is None:
            say("profile: needs py-spy (`.venv/bin/pip install py-spy`); not profiled")
            self.results["profile"] = {"error": "py-spy is not installed"}
            return
        stacks = self.log_dir / "hub-profile.txt"
        say(f"profile: a separate hub throughput run under py-spy ({n} referrals)")
        run = await self.hub_throughput(n, keep=False, spy=spy, stacks=stacks)
        self.out.mkdir(parents=True, exist_ok=True)
        text, top = report.profile_summary(stacks, run, n)
        (self.out / "latest-profile.txt").write_text(text)
        self.results["profile"] = top
        say(f"  profile written to {self.out / 'latest-profile.txt'}; top of the hub's own code:")
        for row in top["hub_own"][:12]:
            say(f"    {row['share'] * 100:5.1f}%  {row['function']}")


async def start_py_spy(spy: str, pid: int, output: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        spy,
        "record",
        "--pid",
        str(pid),
        "--rate",
        "200",
        "--format",
        "raw",
        "--function",
        "--nonblocking",
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def stop_py_spy(proc: asyncio.subprocess.Process) -> None:
    """SIGINT makes py-spy write what it sampled; it is our own child, stopped by its handle."""
    import signal

    proc.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(proc.wait(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def parse(argv: list[str]) -> tuple[argparse.Namespace, Sizes]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes (under a minute): checks the bench works"
    )
    parser.add_argument(
        "--referrals", type=int, help="referrals in the throughput run (default 10,000)"
    )
    parser.add_argument(
        "--latency-seconds", type=float, help="seconds per offered rate (default 10)"
    )
    parser.add_argument(
        "--rates", help="offered rates, events/s, comma-separated (default 500,1000,2000)"
    )
    parser.add_argument(
        "--latency-repeats",
        type=int,
        help="rounds of every offered rate, the raw pipe and the hub taking turns; the table "
        "gives the median (default 3)",
    )
    parser.add_argument(
        "--soak-events", type=int, help="events in the memory soak (default 1,000,000)"
    )
    parser.add_argument(
        "--audit-entries", type=int, help="entries filled for audit verify (default 200,000)"
    )
    parser.add_argument("--partitions", type=int, help="partitions of every topic (default 6)")
    parser.add_argument(
        "--hub-processes",
        type=int,
        help="hub processes sharing the throughput run (default 1; more need --store: SQLite "
        "is one file for one process)",
    )
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"which to run (default {','.join(PHASES)})"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile a hub throughput run with py-spy: latest-profile.txt",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help="where latest.{md,json,png} go (default bench/results)",
    )
    parser.add_argument("--log-dir", type=Path, help="keep the logs of the measured processes here")
    parser.add_argument(
        "--store",
        metavar="POSTGRESQL_URL",
        help="run the hubs on PostgreSQL (the production store): a fresh database per run on "
        "this server, created through the URL's database and dropped at the end (default: a "
        "fresh SQLite file per run, the embedded default)",
    )
    parser.add_argument(
        "--code",
        metavar="REVISION",
        help="measure the code of this commit (e.g. HEAD) instead of the working tree as it is",
    )
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else Sizes()
    changes = {
        "referrals": args.referrals,
        "latency_seconds": args.latency_seconds,
        "rates": _rates(parser, args.rates) if args.rates else None,
        "latency_repeats": args.latency_repeats,
        "soak_events": args.soak_events,
        "audit_entries": args.audit_entries,
        "partitions": args.partitions,
        "hub_processes": args.hub_processes,
    }
    sizes = replace(sizes, **{k: v for k, v in changes.items() if v is not None})
    for name in (
        "referrals",
        "latency_repeats",
        "soak_events",
        "audit_entries",
        "partitions",
        "hub_processes",
    ):
        if getattr(sizes, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be 1 or more")
    if not 0 < sizes.latency_seconds < math.inf:
        parser.error("--latency-seconds must be a number of seconds above 0")
    if sizes.hub_processes > 1 and not args.store:
        parser.error(
            "--hub-processes above 1 needs --store (PostgreSQL): several hubs share a store "
            "only on PostgreSQL (deploy/README.md, Scale-out)"
        )
    if sizes.hub_processes > sizes.partitions:
        parser.error(
            f"--hub-processes {sizes.hub_processes} is more than the {sizes.partitions} "
            "partitions per topic: the rest would get no work"
        )
    unknown = set(args.phases.split(",")) - set(PHASES)
    if unknown:
        parser.error(
            f"unknown phase(s) {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}"
        )
    if args.code is not None:
        problem = _not_a_commit(args.code)
        if problem:
            parser.error(f"--code {args.code}: {problem}")
    for flag, folder in (("--out", args.out), ("--log-dir", args.log_dir)):
        problem = _unwritable(folder) if folder is not None else None
        if problem:
            parser.error(f"{flag} {folder}: cannot write there ({problem})")
    return args, sizes


def _not_a_commit(revision: str) -> str | None:
    """Why `revision` names no commit of this checkout, or None."""
    import subprocess

    if not revision or revision.startswith("-"):  # git would read it as an option
        return "not a commit of this repository"
    try:
        found = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
            cwd=ROOT,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"git could not be asked ({type(exc).__name__})"
    return None if found.returncode == 0 else "not a commit of this repository"


def _unwritable(folder: Path) -> str | None:
    """Why nothing can be written in `folder` (made if missing), or None: said before a run
    of up to an hour rather than when it writes its results."""
    if folder.exists() and not folder.is_dir():
        return "not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _rates(parser: argparse.ArgumentParser, text: str) -> tuple[int, ...]:
    """`--rates 500,1000`: whole events/s above 0, each once, in the order given."""
    rates: list[int] = []
    for part in text.split(","):
        try:
            rate = int(part.strip())
        except ValueError:
            parser.error(f"--rates takes whole events/s separated by commas, not {part.strip()!r}")
        if rate < 1:
            parser.error(f"--rates: {rate} is not an offered rate (1 event/s or more)")
        if rate not in rates:
            rates.append(rate)
    return tuple(rates)


async def _main(
    args: argparse.Namespace, sizes: Sizes, work: Path, log_dir: Path
) -> dict[str, Any]:
    try:  # a store that cannot be used is said before a broker starts
        stores = Stores(work, uuid.uuid4().hex[:6], args.store)
    except StoreError as exc:
        raise BenchError(str(exc)) from None
    embedded: EmbeddedBroker | None = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        embedded = EmbeddedBroker(log_dir=log_dir)
        bootstrap = await asyncio.to_thread(embedded.start)
        say(
            f"embedded broker (Tansu) at {bootstrap}, pid {embedded.proc.pid if embedded.proc else '?'}"
        )
    else:
        say(f"broker: KAFKA_BOOTSTRAP_SERVERS={bootstrap}")
    try:
        bench = Bench(
            bootstrap,
            embedded.proc.pid if embedded and embedded.proc else None,
            sizes,
            work,
            log_dir,
            args.out,
            args.profile,
            stores,
            args.code,
        )
        say(f"store: {bench.stores.kind}")
        phases = tuple(p for p in PHASES if p in args.phases.split(","))
        return await bench.run(phases)
    except StoreError as exc:
        raise BenchError(str(exc)) from None
    finally:
        stores.drop_all()
        if embedded is not None:
            embedded.stop()


def main(argv: list[str]) -> int:
    args, sizes = parse(argv)
    say(f"sizes: {asdict(sizes)}{' (smoke)' if args.smoke else ''}")
    work = Path(tempfile.mkdtemp(prefix="schakel-bench-"))
    log_dir = args.log_dir or work
    log_dir.mkdir(parents=True, exist_ok=True)
    environment = report.environment(smoke=args.smoke, revision=args.code)
    started = time.monotonic()
    try:
        results = asyncio.run(_main(args, sizes, work, log_dir))
    except (BenchError, TimeoutError) as exc:
        say(f"FAILED: {exc}")
        say(f"logs and stores kept in {work}")
        return 1
    environment["seconds"] = time.monotonic() - started
    environment["load_after"] = os.getloadavg()
    paths = report.write(args.out, sizes=asdict(sizes), environment=environment, results=results)
    for path in paths:
        say(f"wrote {path}")
    shutil.rmtree(work, ignore_errors=True)
    say(f"done in {environment['seconds']:.0f} s")
    return 0
