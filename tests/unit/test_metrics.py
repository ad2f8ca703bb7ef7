"""The hub's metrics: one registry per hub, counted from committed events, labels free of
personal data (issue #10)."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from adapters.broker.lag import partition_lag
from schemas.registration import MessageDeadLettered, ReferralReleased, ReferralRevoked
from schemas.topics import Topics
from services.metrics import HubMetrics

AT = datetime(2026, 12, 1, tzinfo=UTC)


def _samples(metrics: HubMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client import generate_latest

    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for s in family.samples
    }


def _released(referral_id: str, kind: str = "welfare") -> ReferralReleased:
    return ReferralReleased(
        referral_id=referral_id,
        registration_id="reg-1",
        recipient_id="welzijn-hoogeveen",
        recipient_kind=kind,  # type: ignore[arg-type]
        consent_id="c-1",
        released_at=AT,
    )


def test_each_hub_counts_in_its_own_registry_without_personal_labels() -> None:
    first, second = HubMetrics(), HubMetrics()
    topics = Topics("acc1.")
    first.count(
        [
            _released("VERW-SECRET-1"),
            _released("VERW-SECRET-2", "municipality"),
            ReferralRevoked(
                referral_id="VERW-SECRET-1",
                registration_id="reg-1",
                recipient_id="welzijn-hoogeveen",
                revoked_at=AT,
                cause="c-1",
            ),
            MessageDeadLettered(
                topic="acc1.referral-created",
                partition=0,
                offset=3,
                key="VERW-SECRET-3",
                reason="invalid-bsn",
                detail="BSN [BSN] fails",
            ),
        ],
        topics,
    )
    second.count([_released("VERW-SECRET-4")], topics)
    a, b = _samples(first), _samples(second)
    welfare = ("schakel_releases_total", frozenset({("recipient_kind", "welfare")}))
    assert a[welfare] == 1 and b[welfare] == 1
    assert a[("schakel_releases_total", frozenset({("recipient_kind", "municipality")}))] == 1
    assert a[("schakel_revoke_notices_total", frozenset({("recipient_kind", "welfare")}))] == 1
    dead = frozenset({("reason", "invalid-bsn"), ("topic", "referral-created")})
    assert a[("schakel_dead_letters_total", dead)] == 1
    assert ("schakel_dead_letters_total", dead) not in b
    labels = {v for _, ls in a for _, v in ls}
    assert not [v for v in labels if "SECRET" in v or "reg-1" in v]


def test_batch_latency_is_observed_per_topic() -> None:
    """Latency runs from each record's broker timestamp to the moment the batch committed
    (`observe_batch` is called just after the commit), read from the metrics' wall clock."""
    committed_at = 1_700_000_002.0  # seconds since the epoch, as the broker's timestamps
    metrics = HubMetrics(wall_clock=lambda: committed_at)
    now_ms = int(committed_at * 1000)
    metrics.observe_batch("referral-created", 0.02, [now_ms - 1500, now_ms - 500, None])
    s = _samples(metrics)
    topic = frozenset({("topic", "referral-created")})
    assert s[("schakel_handler_batch_seconds_count", topic)] == 1
    assert s[("schakel_handler_batch_seconds_sum", topic)] == 0.02
    assert s[("schakel_records_processed_total", topic)] == 3
    assert s[("schakel_record_latency_seconds_count", topic)] == 2, "no timestamp, no latency"
    assert s[("schakel_record_latency_seconds_sum", topic)] == 2.0  # 1.5 s + 0.5 s

    def bucket(le: str) -> float:
        return s[("schakel_record_latency_seconds_bucket", topic | {("le", le)})]

    assert (bucket("0.25"), bucket("0.5"), bucket("1.0"), bucket("2.5")) == (0, 1, 1, 2)


def test_partition_lag_is_never_negative() -> None:
    assert partition_lag(10, 4, 0) == 6
    assert partition_lag(10, None, 2) == 8, "never committed: from the first offset"
    assert partition_lag(10, -1, 0) == 10
    assert partition_lag(1, 10, 0) == 0, "the embedded broker's end offset can read low"
