"""Drawing a graph as a Mermaid flowchart, optionally coloured by what a run did."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from prefect_beluga.orchestration._topology import GraphSpec

_START, _FINISH = "__start__", "__end__"


def _id(name: str) -> str:
    return re.sub(r"\W", "_", name) if name not in (_START, _FINISH) else name


def _label(name: str) -> str:
    return name.replace('"', "#quot;")


def graph_to_mermaid(
    graph: GraphSpec,
    *,
    ran: Mapping[str, int] | None = None,
    skipped: Collection[str] = (),
    failed: Collection[str] = (),
) -> str:
    """A Mermaid `flowchart TD` of `graph`.

    Solid arrows are edges, dotted arrows labelled with the router's key are conditional
    edges. With `ran`/`skipped`/`failed` (from a run), nodes are coloured and loop counts shown.
    """
    lines = ["flowchart TD", f"    {_START}([start])", f"    {_FINISH}([end])"]
    for name in graph.nodes:
        times = (ran or {}).get(name, 0)
        suffix = f" ×{times}" if times > 1 else ""
        lines.append(f'    {_id(name)}["{_label(name)}{suffix}"]')
    for entry in graph.entry_points:
        lines.append(f"    {_START} --> {_id(entry)}")
    for source, target in graph.edges:
        lines.append(f"    {_id(source)} --> {_id(target)}")
    for edge in graph.conditional_edges:
        if edge.path_map is None:  # any node: draw the router as a decision
            decision = f"{_id(edge.source)}__{_id(edge.router_name)}"
            lines.append(f'    {decision}{{{{"{_label(edge.router_name)}"}}}}')
            lines.append(f"    {_id(edge.source)} -.-> {decision}")
            continue
        for key, target in edge.path_map.items():
            lines.append(f"    {_id(edge.source)} -. {_label(str(key))} .-> {_id(target)}")
    for finish in graph.finish_points:
        lines.append(f"    {_id(finish)} --> {_FINISH}")
    if ran is not None:
        lines += [
            "    classDef ran fill:#d1fadf,stroke:#039855",
            "    classDef skipped fill:#f2f4f7,stroke:#98a2b3,stroke-dasharray:4 3,color:#667085",
            "    classDef failed fill:#fee4e2,stroke:#d92d20",
        ]
        for css, names in (("ran", [n for n in ran if n not in failed]), ("skipped", skipped), ("failed", failed)):
            if names:
                lines.append(f"    class {','.join(_id(n) for n in names)} {css}")
    return "\n".join(lines)
