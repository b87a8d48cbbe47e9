"""The read-only web view: asset list, asset pages with their lineage picture, and the same as JSON.

It only reads, through `LineageStore` (READ ONLY sessions, ideally as the
`assetlog_reader` role); it never writes to PostgreSQL nor talks to Kafka.
"""

from assetlog.web.app import create_app
from assetlog.web.picture import GraphDrawer, Picture

__all__ = ["GraphDrawer", "Picture", "create_app"]
