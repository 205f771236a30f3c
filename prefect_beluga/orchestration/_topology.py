"""A graph's frozen description (`GraphSpec`) and everything about its shape (`Topology`).

`Graph` (the builder) produces a `GraphSpec`; `validate` checks it and `Topology.of` computes,
once, what both compiling and the executor need: successors, the one search for loops (back
edges), reachability and a topological order. Every walk here is iterative, so graphs of any
depth compile (a 10,000-node chain included) without touching Python's recursion limit.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from prefect.task_runners import TaskRunner

from prefect_beluga.core.errors import GraphValidationError
from prefect_beluga.core.runnable import Runnable
from prefect_beluga.orchestration._cache import CacheSettings
from prefect_beluga.orchestration._tasks import RetryPolicy

END = "__end__"
"""Route to END (from a router, or `add_edge(node, END)`) to finish a branch."""

START = "__start__"

Router = Callable[[dict[str, Any]], str | Sequence[str]]
Reducer = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class NodeSpec:
    """A node: its runnable, retry policy, Prefect tags and cross-run cache settings (None: uncached)."""

    name: str
    runnable: Runnable
    policy: RetryPolicy
    tags: tuple[str, ...] = ()
    cache: CacheSettings | None = None


@dataclass(frozen=True)
class ConditionalEdge:
    """Edges from `source` chosen at run time by `router(state)`.

    `path_map` maps the router's return values to node names (or END); without it the
    router returns node names directly.
    """

    source: str
    router: Router
    path_map: Mapping[Any, str] | None = None

    @property
    def router_name(self) -> str:
        return getattr(self.router, "__name__", type(self.router).__name__).replace("<lambda>", "router")

    def possible_targets(self, nodes: Sequence[str]) -> tuple[str, ...]:
        """Every node this edge may route to (all nodes when there is no path_map)."""
        if self.path_map is None:
            return tuple(nodes)
        return tuple(dict.fromkeys(t for t in self.path_map.values() if t != END))

    def resolve(self, choice: Any, nodes: Mapping[str, Any]) -> list[str]:
        """The targets (maybe END) for a router's return value, or a clear error."""
        choices = list(choice) if isinstance(choice, (list, tuple, set, frozenset)) else [choice]
        targets = []
        for item in choices:
            if self.path_map is not None and _hashable(item) and item in self.path_map:
                targets.append(self.path_map[item])
            elif item == END or (self.path_map is None and item in nodes):
                targets.append(item)
            else:
                allowed = list(self.path_map) if self.path_map is not None else [*nodes, END]
                raise GraphValidationError(
                    f"router {self.router_name!r} of node {self.source!r} returned {item!r}, "
                    f"which is not one of {allowed}"
                )
        return targets


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


@dataclass(frozen=True)
class GraphSpec:
    """What a `Graph` builder describes, frozen: nodes, edges, entry and finish points, settings."""

    name: str
    nodes: Mapping[str, NodeSpec]
    edges: tuple[tuple[str, str], ...]
    conditional_edges: tuple[ConditionalEdge, ...]
    entry_points: tuple[str, ...]
    finish_points: tuple[str, ...]
    reducers: Mapping[str, Reducer] = field(default_factory=lambda: MappingProxyType({}))
    recursion_limit: int = 25
    max_concurrency: int | None = None
    fail_fast: bool = True
    subflow: bool = True
    artifact: bool = True
    task_runner: TaskRunner | None = None
    usage_limits: Any = None  # a prefect_beluga.usage.UsageLimits


def validate(spec: GraphSpec) -> None:
    """Raise a `GraphValidationError` naming the offender for anything that cannot run."""
    where = f"graph {spec.name!r}"
    if not spec.nodes:
        raise GraphValidationError(f"{where} has no nodes; add some with add_node()")
    if not spec.entry_points:
        raise GraphValidationError(f"{where} has no entry point; call set_entry_point()")
    if not spec.finish_points:
        raise GraphValidationError(f"{where} has no finish point; call set_finish_point() or add_edge(node, END)")
    for what, names in (("entry point", spec.entry_points), ("finish point", spec.finish_points)):
        for name in names:
            if name not in spec.nodes:
                raise GraphValidationError(f"{where}: {what} {name!r} is not a node; nodes: {_some(spec.nodes)}")
    for source, target in spec.edges:
        for end in (source, target):
            if end not in spec.nodes:
                raise GraphValidationError(f"{where}: edge {source!r} -> {target!r} names unknown node {end!r}")
    for edge in spec.conditional_edges:
        if edge.source not in spec.nodes:
            raise GraphValidationError(f"{where}: conditional edges from unknown node {edge.source!r}")
        for key, target in (edge.path_map or {}).items():
            if target != END and target not in spec.nodes:
                raise GraphValidationError(
                    f"{where}: path_map of node {edge.source!r} sends {key!r} to unknown node {target!r}"
                )


def _some(names: Sequence[str] | Mapping[str, Any], limit: int = 20) -> str:
    listed = list(names)
    if len(listed) <= limit:
        return str(listed)
    return f"{listed[:limit]} and {len(listed) - limit} more"


@dataclass(frozen=True)
class Topology:
    """A validated graph's shape, computed once at compile time.

    Back edges (found by the one depth-first search, from the entry points) close loops; all
    other edges are forward edges. A node waits for its forward parents; a back edge re-runs its
    target and everything forward-reachable from it (`region`). `order` ranks the nodes in a
    topological order of the forward edges (ties: the order nodes were added).
    """

    static_targets: Mapping[str, tuple[str, ...]]
    conditional: Mapping[str, tuple[ConditionalEdge, ...]]
    successors: Mapping[str, tuple[str, ...]]
    forward_parents: Mapping[str, frozenset[str]]
    back_edges: frozenset[tuple[str, str]]
    order: Mapping[str, int]
    forward_reach: Mapping[str, frozenset[str]]
    """For each target of a back edge: the nodes a loop back to it runs again."""

    @classmethod
    def of(cls, spec: GraphSpec) -> Topology:
        """Validate `spec` and compute its topology; a `GraphValidationError` names what is wrong."""
        validate(spec)
        where = f"graph {spec.name!r}"
        names = list(spec.nodes)
        static: dict[str, list[str]] = {n: [] for n in names}
        for source, target in spec.edges:
            static[source].append(target)
        conditional: dict[str, list[ConditionalEdge]] = {n: [] for n in names}
        for edge in spec.conditional_edges:
            conditional[edge.source].append(edge)
        successors = {
            n: tuple(dict.fromkeys([*static[n], *(t for e in conditional[n] for t in e.possible_targets(names))]))
            for n in names
        }
        cycle = _static_cycle(names, static)
        if cycle:
            raise GraphValidationError(
                f"{where} has a cycle without a conditional edge: {' -> '.join(cycle)}; "
                "loops must leave through add_conditional_edges so they can end"
            )
        reached, back = _search(spec.entry_points, successors)
        unreachable_finish = [n for n in spec.finish_points if n not in reached]
        if unreachable_finish:
            raise GraphValidationError(
                f"{where}: finish point(s) {unreachable_finish} cannot be reached from the entry point(s) "
                f"{list(spec.entry_points)}"
            )
        unreachable = [n for n in names if n not in reached]
        if unreachable:
            raise GraphValidationError(
                f"{where}: node(s) {_some(unreachable)} cannot be reached from the entry point(s) "
                f"{list(spec.entry_points)}"
            )
        forward = {n: [t for t in successors[n] if (n, t) not in back] for n in names}
        parents: dict[str, set[str]] = {n: set() for n in names}
        for node in names:
            for target in forward[node]:
                parents[target].add(node)
        order = _topological_order(names, forward, parents)
        reach = {target: frozenset(_reachable([target], forward)) for _, target in back}
        return cls(
            static_targets=MappingProxyType({n: tuple(t) for n, t in static.items()}),
            conditional=MappingProxyType({n: tuple(e) for n, e in conditional.items()}),
            successors=MappingProxyType(successors),
            forward_parents=MappingProxyType({n: frozenset(p) for n, p in parents.items()}),
            back_edges=frozenset(back),
            order=MappingProxyType(order),
            forward_reach=MappingProxyType(reach),
        )


def _static_cycle(names: Sequence[str], static: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle of unconditional edges as [a, b, ..., a], or None (Kahn's algorithm, no search:
    every node left over sits on or behind a cycle, and walking back through left-over
    parents must come round)."""
    indegree = dict.fromkeys(names, 0)
    for node in names:
        for target in static[node]:
            indegree[target] += 1
    ready = deque(n for n in names if indegree[n] == 0)
    while ready:
        node = ready.popleft()
        for target in static[node]:
            indegree[target] -= 1
            if indegree[target] == 0:
                ready.append(target)
    left = {n for n in names if indegree[n] > 0}
    if not left:
        return None
    parent_in_left = {t: s for s in names if s in left for t in static[s] if t in left}
    node, walk, seen = next(n for n in names if n in left), [], {}
    while node not in seen:
        seen[node] = len(walk)
        walk.append(node)
        node = parent_in_left[node]
    loop = walk[seen[node]:] + [node]
    return loop[::-1]


def _search(entries: Sequence[str], successors: Mapping[str, Sequence[str]]) -> tuple[set[str], set[tuple[str, str]]]:
    """The one depth-first search: the nodes reached from `entries`, and the back edges (an
    edge to a node still on the search path closes a loop). Iterative, with an explicit stack."""
    on_path: set[str] = set()
    reached: set[str] = set()
    back: set[tuple[str, str]] = set()
    for entry in entries:
        if entry in reached:
            continue
        reached.add(entry)
        on_path.add(entry)
        stack = [(entry, iter(successors[entry]))]
        while stack:
            node, targets = stack[-1]
            for target in targets:
                if target in on_path:
                    back.add((node, target))
                elif target not in reached:
                    reached.add(target)
                    on_path.add(target)
                    stack.append((target, iter(successors[target])))
                    break
            else:
                stack.pop()
                on_path.discard(node)
    return reached, back


def _topological_order(
    names: Sequence[str], forward: Mapping[str, Sequence[str]], parents: Mapping[str, set[str]]
) -> dict[str, int]:
    """Rank of each node in a topological order of the forward edges; ties by order added."""
    added = {n: i for i, n in enumerate(names)}
    waiting = {n: len(parents[n]) for n in names}
    ready = [(added[n], n) for n in names if waiting[n] == 0]
    heapq.heapify(ready)
    order: dict[str, int] = {}
    while ready:
        _, node = heapq.heappop(ready)
        order[node] = len(order)
        for target in forward[node]:
            waiting[target] -= 1
            if waiting[target] == 0:
                heapq.heappush(ready, (added[target], target))
    return order


def _reachable(starts: Sequence[str], successors: Mapping[str, Sequence[str]]) -> set[str]:
    seen: set[str] = set()
    stack = list(starts)
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(successors[node])
    return seen


__all__ = ["END", "START", "ConditionalEdge", "GraphSpec", "NodeSpec", "Topology", "validate"]
