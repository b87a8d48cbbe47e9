"""Adapters between Assetlog and outside lineage systems.

Each subpackage translates another system's lineage (Prefect's asset events,
OpenLineage RunEvents) into Assetlog's own events, or Assetlog's events into
theirs. They publish through `assetlog.producer`'s publisher and read through
the consumers' machinery; they never write the projection tables directly.
"""
