"""Random structural damage to a JSON document, for property tests of the parsers."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.just([]),
    st.just({}),
)


def mutate(document: dict[str, Any], data: st.DataObject, max_changes: int = 4) -> dict[str, Any]:
    """Replaces up to `max_changes` randomly chosen nodes by random leaves."""
    doc = copy.deepcopy(document)
    for _ in range(data.draw(st.integers(1, max_changes))):
        node: Any = doc
        while True:
            keys = list(node.keys()) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            key = data.draw(st.sampled_from(keys))
            child = node[key]
            if isinstance(child, dict | list) and child and data.draw(st.booleans()):
                node = child
                continue
            node[key] = data.draw(LEAF)
            break
    return doc
