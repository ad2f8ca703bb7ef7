"""CPython's cyclic garbage collector, tuned while a hub or a replay runs (issue #9, bench).

The hub allocates many short-lived containers per record (parsed JSON, pydantic models,
rows), nearly all freed by reference counting the moment they are done with; cycles are
rare. With the default thresholds the collector still walks them every 700 allocations,
and every so often walks every object the process holds: measured in a hub throughput run
of 5,000 referrals, 1,223 young, 111 middle and 7 full collections took 0.56 s of 5.2 s
CPU, each full one ~60 ms on the event loop (a pause every record in flight waits out).

While tuned: what start-up built (modules, compiled statements, the models' validators)
is moved out of the collector's reach (`gc.freeze`), so a full collection walks only what
the hub made since; and a young collection waits for `YOUNG` allocations instead of 700.
Garbage cycles are still collected, later (memory: the bench soak's RSS stays flat).
Nested uses (several hubs in one process, as in the tests) count: the last one to finish
restores the thresholds it found and unfreezes.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

YOUNG = 10_000
"""Allocations between young collections (CPython's default: 700)."""

_users = 0
_found: tuple[int, int, int] | None = None


def tune() -> None:
    global _users, _found
    if _users == 0:
        _found = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(max(YOUNG, _found[0]), *_found[1:])
    _users += 1


def restore() -> None:
    global _users
    if _users == 0:
        return
    _users -= 1
    if _users == 0 and _found is not None:
        gc.set_threshold(*_found)
        gc.unfreeze()


@contextlib.contextmanager
def tuned() -> Iterator[None]:
    tune()
    try:
        yield
    finally:
        restore()
