"""The state a graph node runs on, built from the finished runs of its ancestors.

A node's input is the graph input updated with the outputs of all its ancestors, applied in
an order that does not depend on timing (by depth — an ancestor is always shallower — then the
graph's topological order), so a reducer sees the same order on every run. A node with one
parent simply takes the parent's state; only a join walks its ancestors (iteratively, through
each activation's parents), so a long chain costs the same per node however deep it is. Two
ancestors that are concurrent (neither is an ancestor of the other) writing different values to
one key is a `StateConflictError`, unless the graph has a reducer for the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prefect_beluga.core.errors import StateConflictError
from prefect_beluga.orchestration._topology import Reducer


@dataclass(frozen=True)
class Activation:
    """One finished run of a node."""

    node: str
    number: int  # 1 for the first run of the node, 2 for its first re-run in a loop, ...
    id: int  # order of completion: ancestors always have smaller ids
    output: dict[str, Any]  # the very object the node's task returned (Prefect links it)
    state: dict[str, Any]  # the state after this node
    parents: tuple[int, ...]  # ids of the activations it ran after
    depth: int  # 0 for an entry point; more than any ancestor's
    future: Any = None  # the Prefect future, when the node was submitted to a task runner


class NodeStates:
    """The activations of one graph run, and the states its nodes run on."""

    def __init__(
        self, name: str, input: dict[str, Any], reducers: Mapping[str, Reducer], rank: Mapping[str, int]
    ) -> None:
        self.name = name
        self.input = input
        self.reducers = reducers
        self.rank = rank  # a topological order; ties: order added
        self.activations: dict[int, Activation] = {}

    def add(self, activation: Activation) -> None:
        self.activations[activation.id] = activation

    def _merge_order(self, activation_id: int) -> tuple[int, int, int]:
        """An order that does not depend on timing: ancestors are shallower, then topological."""
        activation = self.activations[activation_id]
        return activation.depth, self.rank[activation.node], activation.number

    def ancestors(self, parents: list[Activation]) -> set[int]:
        """The ids of `parents` and all their ancestors (an iterative walk)."""
        seen: set[int] = set()
        stack = [p.id for p in parents]
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self.activations[current].parents)
        return seen

    def is_ancestor(self, earlier: Activation, later: Activation) -> bool:
        """Whether `earlier` ran before `later` on a path of edges (ids only grow along one)."""
        seen: set[int] = set()
        stack = list(later.parents)
        while stack:
            current = stack.pop()
            if current == earlier.id:
                return True
            if current > earlier.id and current not in seen:
                seen.add(current)
                stack.extend(self.activations[current].parents)
        return False

    def input_for(self, node: str, parents: list[Activation]) -> dict[str, Any]:
        """The state `node` runs on."""
        if not parents:
            return dict(self.input)
        if len(parents) == 1:
            return parents[0].state
        state = dict(self.input)
        writers: dict[str, Activation] = {}
        for ancestor in sorted(self.ancestors(parents), key=self._merge_order):
            written = self.activations[ancestor]
            for key, value in written.output.items():
                if key in self.reducers:
                    state[key] = self.reducers[key](state[key], value) if key in state else value
                    continue
                previous = writers.get(key)
                if previous is not None and state[key] != value and not self.is_ancestor(previous, written):
                    raise StateConflictError(
                        f"graph {self.name!r}: nodes {previous.node!r} and {written.node!r} ran "
                        f"concurrently and wrote different values to state key {key!r} (joined at "
                        f"node {node!r}); declare a reducer, e.g. Graph(reducers={{{key!r}: operator.add}}), "
                        "or write distinct keys"
                    )
                state[key] = value
                writers[key] = written
        return state

    def apply(self, state: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
        """The state after a node: `state` updated with `output` (reducers combine their keys)."""
        reducers = self.reducers
        if not reducers:
            return {**state, **output}
        after = dict(state)
        for key, value in output.items():
            after[key] = reducers[key](after[key], value) if key in reducers and key in after else value
        return after
