"""Lineage drawings: DOT rendered by Graphviz itself, Mermaid checked line by line; hostile labels."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from assetlog.query.models import LineageEdge, LineageGraph, LineageNode
from assetlog.query.render import dot, lineage_table, mermaid, table

T = datetime(2025, 1, 1, tzinfo=UTC)
ROOT = "s3://lake/gold/revenue.parquet"
HOSTILE_NAME = 'Revenue "by" region\\n <b>bold</b> #1;\nsecond line {x} [y] %% end'


def graph(truncated: bool = False) -> LineageGraph:
    keys = [ROOT, "s3://lake/silver/orders.parquet", "postgres://db/public/users", "s3://lake/bronze/o.parquet"]
    nodes = [
        LineageNode(key=keys[0], upstream_depth=0, name=HOSTILE_NAME, last_status="FAILED", last_materialized_at=T),
        LineageNode(key=keys[1], upstream_depth=1, name="Silver", last_status="SUCCEEDED", last_materialized_at=T),
        LineageNode(key=keys[2], upstream_depth=2),
        LineageNode(key=keys[3], upstream_depth=2, name="back\\slash"),
    ]
    edges = [
        LineageEdge(upstream=keys[1], downstream=keys[0], declared="inferred"),
        LineageEdge(upstream=keys[2], downstream=keys[1], declared="explicit"),
        LineageEdge(upstream=keys[3], downstream=keys[1], declared="inferred"),
    ]
    return LineageGraph(root=ROOT, direction="upstream", depth=None, limit=4, truncated=truncated, nodes=nodes,
                        edges=edges)


@pytest.fixture(scope="session")
def dot_program() -> str:
    """Graphviz's `dot`; installed from the distribution's packages when missing and we may."""
    found = shutil.which("dot")
    if found:
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.fail("Graphviz is needed to check DOT output: install it (e.g. `apt-get install graphviz`)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300"]
    install = [*apt, "install", "-y", "--no-install-recommends", "graphviz"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run([*apt, "update"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    return shutil.which("dot") or pytest.fail("apt-get installed graphviz but `dot` is not on PATH")


def render_svg(dot_program: str, source: str) -> ET.Element:
    done = subprocess.run([dot_program, "-Tsvg"], input=source, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    return ET.fromstring(done.stdout)


def test_dot_renders_with_graphviz_every_node_and_edge(dot_program: str) -> None:
    g = graph()
    svg = render_svg(dot_program, dot(g))
    ns = {"svg": "http://www.w3.org/2000/svg"}
    groups = {cls: [e.find("svg:title", ns).text for e in svg.iterfind(f".//svg:g[@class='{cls}']", ns)]
              for cls in ("node", "edge")}
    assert sorted(groups["node"]) == sorted(n.key for n in g.nodes)
    assert sorted(groups["edge"]) == sorted(f"{e.upstream}->{e.downstream}" for e in g.edges)
    texts = [t.text for t in svg.iterfind(".//svg:text", ns)]
    assert 'Revenue "by" region\\n <b>bold</b> #1;' in texts and "second line {x} [y] %% end" in texts
    assert "back\\slash" in texts


def test_a_truncated_drawing_says_so(dot_program: str) -> None:
    svg = render_svg(dot_program, dot(graph(truncated=True)))
    assert any("truncated at 4 assets" in (t.text or "") for t in svg.iter("{http://www.w3.org/2000/svg}text"))
    assert "truncated at 4 assets" in mermaid(graph(truncated=True))
    assert "truncated at 4 assets" in lineage_table(graph(truncated=True))


MERMAID_LINE = re.compile(
    r'^(flowchart LR|    %%.*|    (n\d+|truncated)\["[^"]*"\]|    n\d+ (-->|-\.->) n\d+|'
    r"    classDef \w+ [\w:#-]+|    class n\d+(,n\d+)* \w+)$")


def test_mermaid_is_well_formed_and_escapes_labels() -> None:
    g = graph()
    text = mermaid(g)
    lines = text.splitlines()
    assert all(MERMAID_LINE.match(line) for line in lines), [line for line in lines if not MERMAID_LINE.match(line)]
    declared = {m[1]: m[2] for m in re.finditer(r'^    (n\d+)\["([^"]*)"\]$', text, re.M)}
    assert len(declared) == len(g.nodes)
    used = set(re.findall(r"^    (n\d+) -[.-]*-?> (n\d+)$", text, re.M))
    assert {n for pair in used for n in pair} <= set(declared) and len(used) == len(g.edges)
    root_label = declared["n0"]
    assert root_label.startswith(ROOT + "<br/>") and "#quot;by#quot;" in root_label and "#lt;b#gt;" in root_label
    assert "\n" not in root_label and "#35;1;" in root_label
    assert "    n2 --> n1" in lines and "    n1 -.-> n0" in lines  # explicit solid, inferred dotted
    assert "    class n0 root" in lines and "    class n0 failed" in lines


def test_text_table_aligns_columns() -> None:
    text = table(["A", "LONGER"], [("x", None), ("yyyy", 2)])
    assert text.splitlines() == ["A     LONGER", "x     -", "yyyy  2"]
