"""The collector's tuning for a running hub (services/collector.py): the young threshold
raised and start-up frozen while in use, cycles still collected, everything restored by
the last user."""

from __future__ import annotations

import gc
import weakref

from services import collector


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_tuned_while_in_use_and_restored_by_the_last_user() -> None:
    found = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    with collector.tuned():
        assert gc.get_threshold() == (max(collector.YOUNG, found[0]), *found[1:])
        frozen = gc.get_freeze_count()
        assert frozen > 0  # what existed at start-up is out of the collector's walks
        with collector.tuned():  # a second hub in the same process
            assert gc.get_freeze_count() == frozen
        assert gc.get_threshold()[0] == max(collector.YOUNG, found[0])
    assert gc.get_threshold() == found
    assert gc.get_freeze_count() == 0
    collector.restore()  # one too many: no effect
    assert gc.get_threshold() == found


def test_garbage_cycles_are_still_collected_while_tuned() -> None:
    with collector.tuned():
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        assert gone() is not None  # a cycle: reference counting alone cannot free it
        kept = [[] for _ in range(3 * collector.YOUNG)]  # allocations trigger a collection
        assert gone() is None
        del kept
