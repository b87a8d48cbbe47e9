"""Text shown to people with its invisible controls made visible, never applied.

Asset keys, names and descriptions are the workflow author's free text. A
bidirectional control (U+202E RIGHT-TO-LEFT OVERRIDE and its kin) makes a
terminal or a browser show `s3://a/<U+202E>txt.exe` as something else than it is,
and terminal controls (ESC, BEL, ...) can rewrite what a terminal shows. Every
place that shows such text to a person (CLI tables, the web page, the
lineage picture) passes it through `visible`, which writes each of them as
its `\\uXXXX` escape. Applied to a JSON document it gives the same
characters as JSON escapes, which decode to the original text (they can only
occur inside JSON strings).
"""

from __future__ import annotations

import re

# Bidirectional formatting characters (Unicode's Bidi_Control property): ALM, LRM, RLM, the
# embeddings and overrides (LRE RLE PDF LRO RLO) and the isolates (LRI RLI FSI PDI).
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# C0 controls but tab and line feed (which tables and pages already handle), DEL and C1 controls.
TERMINAL_CONTROLS = "".join(chr(c) for c in [*range(0x00, 0x09), *range(0x0b, 0x20), *range(0x7f, 0xa0)])

_HIDDEN = re.compile(f"[{re.escape(BIDI_CONTROLS + TERMINAL_CONTROLS)}]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def visible(text: str) -> str:
    """`text` with every bidi or terminal control written as `\\uXXXX` (e.g. `\\u202e`)."""
    return _HIDDEN.sub(_escape, text)
