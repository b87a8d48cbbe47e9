"""OpenLineage in and out: a receiver of RunEvents and an exporter of Assetlog's events.

It maps OpenLineage datasets, runs and facets to Assetlog's events and back;
it publishes through `assetlog.producer` and never writes projection tables.
"""
