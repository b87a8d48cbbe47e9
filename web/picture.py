"""The lineage picture: the DOT the CLI prints, laid out by Graphviz, made safe and clickable.

Graphviz does the layout (`dot -Tsvg`); this module never places a node.
Its SVG is parsed and rebuilt from an allow-list of drawing elements and
attributes, so whatever a name or key contains ends up as escaped text and
nothing else (no script, no event handler, no foreign link). Each node is
wrapped in a link to its asset's page, made here from the key, and gets
classes for its health (ok, failed, unknown) that the stylesheet colours.

Pictures are kept (`CACHED_PICTURES` by default, `assetlog serve --pictures N`;
least recently used go first) keyed on
everything they are drawn from: the DOT, the root, each node's health and the
form. A popular page, a hub's above all, is laid out once, not at every view:
Graphviz on a hub's 150 assets takes 40-60 ms, half the page (bench/README.md
"Graph at 10M edges"). A graph that changed has another DOT or another health,
so it is drawn afresh.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from assetlog.query.models import LineageGraph, LineageNode
from assetlog.query.render import dot

SVG_NS = "http://www.w3.org/2000/svg"
DEFAULT_TIMEOUT = 20.0  # seconds for one layout
CACHED_PICTURES = 64  # drawn pictures kept per drawer (a hub's is about 100 kB)

# What Graphviz draws with; anything else in its output is dropped.
_ELEMENTS = {"svg", "g", "title", "polygon", "polyline", "path", "ellipse", "text"}
_ATTRIBUTES = {
    "width", "height", "viewBox", "transform", "fill", "stroke", "stroke-width", "stroke-dasharray",
    "stroke-opacity", "fill-opacity", "points", "d", "cx", "cy", "rx", "ry", "x", "y", "text-anchor",
    "font-family", "font-size", "font-weight", "font-style", "class",
}


@dataclass(frozen=True)
class Picture:
    """An SVG document as text, or why there is none (`problem`, for people)."""

    svg: str | None
    problem: str | None = None


def health(last_status: str | None) -> str:
    """ok: the last materialization succeeded; failed: it failed; unknown: only referenced, never materialized."""
    return {"SUCCEEDED": "ok", "FAILED": "failed"}.get(last_status or "", "unknown")


class GraphDrawer:
    """Runs Graphviz's `program` (None: there is none) on lineage graphs; `href(key)` links each node."""

    def __init__(self, href: Callable[[str], str], program: str | None, timeout: float = DEFAULT_TIMEOUT,
                 cached: int = CACHED_PICTURES) -> None:
        self.href = href
        self.cached = cached  # pictures kept; 0 lays out every one
        self.program = program
        self.timeout = timeout
        self.layouts = 0  # Graphviz runs so far (the pictures not found in the cache)
        self._cache: OrderedDict[tuple[object, ...], str] = OrderedDict()
        self._lock = threading.Lock()  # pages are drawn on the server's worker threads

    @classmethod
    def find(cls, href: Callable[[str], str], timeout: float = DEFAULT_TIMEOUT,
             cached: int = CACHED_PICTURES) -> GraphDrawer:
        """A drawer with the `dot` found on PATH, if any."""
        return cls(href, shutil.which("dot"), timeout, cached)

    def draw(self, graph: LineageGraph, *, standalone: bool = False) -> Picture:
        """The graph as SVG markup: to inline in HTML, or a file of its own when `standalone`."""
        if not self.program:
            return Picture(None, "The lineage picture needs Graphviz's dot program, which is not installed "
                                 "here (Debian/Ubuntu: apt-get install graphviz). The lists of upstream and "
                                 "downstream assets below do not need it.")
        source = dot(graph)
        drawn_from = (source, graph.root, tuple(health(node.last_status) for node in graph.nodes), standalone)
        with self._lock:
            svg = self._cache.get(drawn_from)
            if svg is not None:
                self._cache.move_to_end(drawn_from)
                return Picture(svg)
            self.layouts += 1
        try:
            done = subprocess.run([self.program, "-Tsvg"], input=source.encode("utf-8"),
                                  capture_output=True, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            return Picture(None, f"Graphviz took longer than {self.timeout:g}s to lay out {len(graph.nodes)} "
                                 "assets; choose a smaller depth.")
        except OSError as exc:
            return Picture(None, f"Graphviz could not be started ({exc.strerror}).")
        if done.returncode != 0:
            first = done.stderr.decode("utf-8", "replace").strip().splitlines()[:1]
            return Picture(None, f"Graphviz could not draw this graph ({first[0] if first else 'no message'}).")
        svg = self._rebuild(done.stdout, graph, standalone)
        with self._lock:  # only pictures: a timeout or a failure is tried again next time
            self._cache[drawn_from] = svg
            while len(self._cache) > self.cached:
                self._cache.popitem(last=False)
        return Picture(svg)

    def _rebuild(self, svg_bytes: bytes, graph: LineageGraph, standalone: bool) -> str:
        source = ET.fromstring(svg_bytes)
        nodes = {node.key: node for node in graph.nodes}
        out = _copy(source)
        for side in ("width", "height"):  # Graphviz's points drawn as pixels: a quarter smaller, still legible
            size = out.get(side, "")
            if size.endswith("pt"):
                out.set(side, size[:-2])
        out.set("role", "img")
        out.set("aria-label", f"Lineage of {graph.root}")
        out.set("class", "lineage")
        if standalone:
            out.set("xmlns", SVG_NS)
        for part in source:
            if _local(part.tag) == "g":
                out.append(self._graph_group(part, nodes, graph.root))
        return ET.tostring(out, encoding="unicode", method="xml")

    def _graph_group(self, group: ET.Element, nodes: dict[str, LineageNode], root: str) -> ET.Element:
        out = _copy(group)
        for part in group:
            tag = _local(part.tag)
            if tag == "g" and part.get("class") == "node":
                out.append(self._node(part, nodes, root))
            elif tag == "g":
                out.append(_sanitized(part))
            elif tag in ("polygon", "title"):  # the background; graph-level labels are left to the page
                out.append(_sanitized(part))
        return out

    def _node(self, group: ET.Element, nodes: dict[str, LineageNode], root: str) -> ET.Element:
        title = group.find(f"{{{SVG_NS}}}title")
        key = title.text if title is not None else None
        node = nodes.get(key or "")
        out = ET.Element("g")
        if node is None:  # not one of ours (cannot happen with DOT from render.dot): draw, do not link
            out.set("class", "node")
            out.extend(_sanitized(part) for part in group)
            return out
        out.set("class", f"node {health(node.last_status)}" + (" root" if node.key == root else ""))
        out.set("data-key", node.key)
        link = ET.SubElement(out, "a", {"href": self.href(node.key)})
        link.extend(_sanitized(part) for part in group)
        return out


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _copy(element: ET.Element) -> ET.Element:
    """The element without namespace, with allowed attributes only, no children."""
    copy = ET.Element(_local(element.tag))
    for name, value in element.attrib.items():
        if name in _ATTRIBUTES:
            copy.set(name, value)
    copy.text = element.text if _local(element.tag) in ("text", "title") else None
    return copy


def _sanitized(element: ET.Element) -> ET.Element:
    """A deep copy keeping allowed elements and attributes; anything else goes, with its children."""
    copy = _copy(element)
    for child in element:
        if _local(child.tag) in _ELEMENTS:
            copy.append(_sanitized(child))
    return copy
