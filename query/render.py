"""Query results for people and for other tools: text tables, Mermaid and Graphviz DOT.

JSON is `model.to_json()`; everything here is text. Names and descriptions are
free text (quotes, newlines, angle brackets, bidi overrides), so every label is
escaped for the language it lands in (and bidi and terminal controls are shown
as `\\uXXXX`, see assetlog/visible.py), and a truncated graph says so in the
drawing too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from assetlog.query.models import AssetDetails, AssetPage, HistoryPage, LineageGraph, LineageNode
from assetlog.visible import visible


def when(value: datetime | None) -> str:
    """A time for people: UTC, to the second, ISO-8601."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces (no trailing blanks)."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else visible(str(c)) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _one_line(text: str | None, width: int = 60) -> str | None:
    if text is None:
        return None
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


# --- assets, show, history -------------------------------------------------------------------------

def assets_table(page: AssetPage) -> str:
    if not page.assets:
        return "no assets match"
    text = table(
        ["KEY", "NAME", "OWNERS", "STATUS", "LAST MATERIALIZED"],
        [(a.key, _one_line(a.name, 40), ", ".join(a.owners) if a.owners else None, a.last_status,
          when(a.last_materialized_at)) for a in page.assets],
    )
    if page.next_after:
        text += f"\n(more: add --after {page.next_after})"
    return text


def details_text(d: AssetDetails) -> str:
    rows: list[tuple[str, str]] = []
    if d.as_of:
        rows.append(("as of", when(d.as_of)))
    p = d.properties
    if p:
        rows += [("name", p.name or "-"), ("description", _one_line(p.description, 100) or "-"),
                 ("owners", ", ".join(p.owners) if p.owners else "-"), ("url", p.url or "-"),
                 ("properties set", f"{when(p.event_time)} (event {p.event_id})")]
    else:
        rows.append(("properties", "none (never declared with properties)"))
    rows += [("first seen", when(d.first_seen)), ("last seen", when(d.last_seen))]
    m = d.last_materialization
    if m:
        where = f" by task {m.task_name}" if m.task_name else ""
        where += f" in flow {m.flow_name}" if m.flow_name else ""
        rows.append(("last run", f"{m.status} at {when(m.event_time)}{where}" + (f" (by {m.by})" if m.by else "")))
        if m.error_type or m.error_message:
            rows.append(("error", f"{m.error_type or ''}: {_one_line(m.error_message, 100) or ''}"))
    else:
        rows.append(("last run", "never materialized (only referenced)"))
    if d.metadata:
        origin = "last run" if d.metadata_is_from_last_materialization else f"run at {when(d.metadata.event_time)}"
        rows.append(("metadata", f"{json.dumps(d.metadata.metadata, ensure_ascii=False)} (from the {origin})"))
    for side, items, count in (("upstream", d.upstream, d.upstream_count),
                               ("downstream", d.downstream, d.downstream_count)):
        listed = ", ".join(f"{n.key}{' (explicit)' if n.declared == 'explicit' else ''}" for n in items)
        more = f" … and {count - len(items)} more" if count > len(items) else ""
        rows.append((f"{side} ({count})", (listed + more) or "-"))
    width = max(len(label) for label, _ in rows)
    return "\n".join([d.key] + [f"  {label.ljust(width)}  {value}" for label, value in rows])


def history_table(page: HistoryPage) -> str:
    if not page.entries:
        return f"{page.key}: no materializations"
    text = table(
        ["TIME", "STATUS", "TASK", "FLOW", "BY", "METADATA", "UPSTREAMS"],
        [(when(e.run.event_time), e.run.status, e.run.task_name, e.run.flow_name, e.run.by,
          _one_line(json.dumps(e.metadata, ensure_ascii=False), 50) if e.metadata is not None else None,
          len(e.upstream_keys)) for e in page.entries],
    )
    if page.next_cursor:
        text += f"\n(more: add --before {page.next_cursor})"
    return text


# --- lineage ---------------------------------------------------------------------------------------

def _hops(node: LineageNode) -> str:
    parts = []
    if node.upstream_depth:
        parts.append(f"up {node.upstream_depth}")
    if node.downstream_depth:
        parts.append(f"down {node.downstream_depth}")
    return ", ".join(parts) or "root"


def _truncation_note(g: LineageGraph) -> str:
    return f"truncated at {g.limit} assets: raise --limit or lower --depth to see the rest"


def lineage_table(g: LineageGraph) -> str:
    text = table(
        ["HOPS", "KEY", "NAME", "STATUS", "LAST MATERIALIZED"],
        [(_hops(n), n.key, _one_line(n.name, 40), n.last_status, when(n.last_materialized_at)) for n in g.nodes],
    )
    summary = f"{len(g.nodes)} assets, {len(g.edges)} edges" + (f", as of {when(g.as_of)}" if g.as_of else "")
    text += f"\n({summary})"
    if g.truncated:
        text += f"\n({_truncation_note(g)})"
    return text


def _mermaid_text(text: str) -> str:
    """Mermaid label text inside double quotes: entity codes for what would end or break it."""
    out = visible(text).replace("#", "#35;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    return " ".join(out.split())


def mermaid(g: LineageGraph) -> str:
    """A Mermaid flowchart, upstream on the left; explicit edges solid, inferred dotted."""
    ids = {node.key: f"n{i}" for i, node in enumerate(g.nodes)}
    lines = ["flowchart LR"]
    if g.truncated:
        lines.append(f"    %% {_truncation_note(g)}")
    for node in g.nodes:
        label = _mermaid_text(node.key)
        if node.name:
            label += "<br/>" + _mermaid_text(node.name)
        lines.append(f'    {ids[node.key]}["{label}"]')
    for edge in g.edges:
        arrow = "-->" if edge.declared == "explicit" else "-.->"
        lines.append(f"    {ids[edge.upstream]} {arrow} {ids[edge.downstream]}")
    if g.truncated:
        lines.append(f'    truncated["… {_mermaid_text(_truncation_note(g))}"]')
    lines.append("    classDef root stroke-width:3px")
    lines.append("    classDef failed stroke:#c00")
    lines.append(f"    class {ids[g.root]} root")
    failed = [ids[n.key] for n in g.nodes if n.last_status == "FAILED"]
    if failed:
        lines.append(f"    class {','.join(failed)} failed")
    return "\n".join(lines)


def _dot_string(text: str) -> str:
    """A DOT double-quoted string: backslash and quote escaped, line breaks as \\n."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n") + '"'


def dot(g: LineageGraph) -> str:
    """A Graphviz digraph, upstream on the left; render with `dot -Tsvg`."""
    lines = ["digraph lineage {", "  rankdir=LR;", '  node [shape=box, fontname="Helvetica"];']
    if g.truncated:
        lines.append(f"  label={_dot_string(_truncation_note(g))};")
    for node in g.nodes:
        label = visible(node.key + (f"\n{node.name}" if node.name else ""))  # ids stay exact (the web links by them)
        attributes = [f"label={_dot_string(label)}"]
        if node.key == g.root:
            attributes.append("penwidth=3")
        if node.last_status == "FAILED":
            attributes.append("color=red")
        lines.append(f"  {_dot_string(node.key)} [{', '.join(attributes)}];")
    for edge in g.edges:
        style = "" if edge.declared == "explicit" else " [style=dashed]"
        lines.append(f"  {_dot_string(edge.upstream)} -> {_dot_string(edge.downstream)}{style};")
    lines.append("}")
    return "\n".join(lines)


def lineage_text(g: LineageGraph, fmt: str) -> str:
    """`--format` dispatch: table, json, mermaid or dot."""
    if fmt == "json":
        return visible(json.dumps(g.to_json(), indent=2, ensure_ascii=False))
    return visible({"table": lineage_table, "mermaid": mermaid, "dot": dot}[fmt](g))
