"""Deprecated path: the topic policy moved to `assetlog.topics` (this one warns, and goes in the next release).

`compose/` runs the local stack's processes; which topics Assetlog needs and
with what settings is not its business (issue 12).
"""

from assetlog.projections._moved import moved

moved(__name__, "assetlog.topics")
