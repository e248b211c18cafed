"""Graph helpers: ComfyUI's execution order and cache signatures.

The order of the ``executing`` messages matters to clients that follow progress, so the double picks
nodes the way ComfyUI's ``ExecutionList`` does (``comfy_execution/graph.py``): nodes are registered by
a depth-first walk from the output node (links to cached nodes are not followed), and among the nodes
whose inputs are ready ComfyUI prefers an output node, then a node feeding an output node, then a node
two steps from one, else the first registered. For the recorded workflow this yields exactly the
recorded order ``6, 1, 2, 3, 5, 4, 7, 8, 10, 12, 14, 9, 11, 13, 15, 16, 17``.

Cache signatures follow ``CacheKeySetInputSignature``: class, ``IS_CHANGED`` value, the node id for
classes taking ``UNIQUE_ID``, every input value, and the signatures of linked nodes, recursively.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any


def is_link(value: Any) -> bool:
    """A ``[node_id, output_slot]`` reference, as ComfyUI's ``is_link``."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


class ExecutionOrder:
    """ComfyUI's ``ExecutionList``: stage the next node, complete it, until empty."""

    def __init__(
        self,
        prompt: Mapping[str, Any],
        is_output: Callable[[str], bool],
        is_cached: Callable[[str], bool],
    ) -> None:
        self._prompt = prompt
        self._is_output = is_output
        self._is_cached = is_cached
        self._pending: dict[str, None] = {}  # insertion-ordered set
        self._block_count: dict[str, int] = {}
        self._blocking: dict[str, dict[str, None]] = {}

    def add_node(self, node_id: str) -> None:
        stack = [node_id]
        links: list[tuple[str, str]] = []
        while stack:
            current = stack.pop()
            if current in self._pending:
                continue
            self._pending[current] = None
            self._block_count[current] = 0
            self._blocking[current] = {}
            for value in self._prompt[current]["inputs"].values():
                if is_link(value) and not self._is_cached(value[0]):
                    stack.append(value[0])
                    links.append((value[0], current))
        for source, target in links:
            if target not in self._blocking[source]:
                self._blocking[source][target] = None
                self._block_count[target] += 1

    def is_empty(self) -> bool:
        return not self._pending

    def next_node(self) -> str:
        ready = [n for n in self._pending if self._block_count[n] == 0]
        if not ready:
            raise RuntimeError("dependency cycle in the prompt")
        for node_id in ready:
            if self._is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self._is_output(b) for b in self._blocking[node_id]):
                return node_id
        for node_id in ready:
            for blocked in self._blocking[node_id]:
                if any(self._is_output(b) for b in self._blocking[blocked]):
                    return node_id
        return ready[0]

    def complete(self, node_id: str) -> None:
        del self._pending[node_id]
        for blocked in self._blocking.pop(node_id):
            self._block_count[blocked] -= 1


class _Unique:
    """Stands for an ``IS_CHANGED`` that raised: never equal to anything (ComfyUI uses NaN)."""

    def __eq__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return id(self)


NEVER_EQUAL = _Unique


def hashable(value: Any) -> Hashable:
    """Turn JSON-like values into something usable as (part of) a dict key."""
    if isinstance(value, dict):
        return ("__dict__", tuple(sorted((str(k), hashable(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("__list__", tuple(hashable(v) for v in value))
    if isinstance(value, float) and value != value:  # NaN
        return _Unique()
    return value  # type: ignore[no-any-return]


def node_signatures(
    prompt: Mapping[str, Any],
    is_changed: Mapping[str, Any],
    includes_node_id: Callable[[str], bool],
) -> dict[str, Hashable]:
    """A hashable signature per node: equal signatures mean a cached result may be reused."""
    memo: dict[str, Hashable] = {}

    def signature(node_id: str, trail: frozenset[str]) -> Hashable:
        if node_id in memo:
            return memo[node_id]
        node = prompt[node_id]
        class_type = node["class_type"]
        parts: list[Hashable] = [class_type, hashable(is_changed.get(node_id))]
        if includes_node_id(class_type):
            parts.append(("__node_id__", node_id))
        for name in sorted(node["inputs"]):
            value = node["inputs"][name]
            if is_link(value) and value[0] in prompt and value[0] not in trail:
                parts.append((name, ("ANCESTOR", signature(value[0], trail | {node_id}), value[1])))
            else:
                parts.append((name, hashable(value)))
        memo[node_id] = tuple(parts)
        return memo[node_id]

    return {node_id: signature(node_id, frozenset()) for node_id in prompt}
