"""A running hub keeps the collector tuned (services/collector.py) and stopping it restores
what it found."""

from __future__ import annotations

import gc
from pathlib import Path

from services import collector
from tests.integration.helpers import running, settings_for, unique_prefix


async def test_the_hub_tunes_the_collector_while_it_runs(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    found = gc.get_threshold()
    settings = settings_for(kafka_bootstrap, f"sqlite:///{tmp_path / 'hub.db'}", unique_prefix())
    async with running(settings):
        assert gc.get_threshold()[0] == max(collector.YOUNG, found[0])
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == found
    assert gc.get_freeze_count() == 0
