-- Lineage walks as of a time read `asset_edges`, not the history: an edge existed at T if it was first
-- seen by then, and it was explicit at T if its first explicit dependency event is that old. That time
-- is the new column `explicit_since`, kept by the lineage projection with the rest of the edge
-- (projections/edge_merge.py). Before, each hop of such a walk grouped the frontier's dependency events
-- out of `lineage_history`, reading a history row per event (bench/README.md, "As-of walks from the
-- edges").
--
-- The online step before this file (projections/explicit_since_migration.py) adds the column (no default,
-- so no row is written; the table is asked for with a short lock_timeout, again and again), gives the
-- explicit edges already stored their time from the history, a few thousand per short transaction
-- (about 140 s for the 2.2M explicit edges of 10M here), and builds the covering indexes below. An
-- explicit edge left without it (written meanwhile by a consumer of an older version, or whose events are
-- all in detached partitions) means "not known": a walk as of a time then looks its declaration up in
-- the history, as before (`edge_merge.DECLARED_AS_OF`).
COMMENT ON COLUMN asset_edges.explicit_since IS
    'event_time of the first dependency event that declared this edge explicitly; NULL while it is inferred, '
    'or, for an explicit edge, not known (written by a consumer of a version before migration 0010, or its '
    'events all detached): walks as of a time then look in lineage_history.';

-- The walks' covering indexes also carry first_seen and explicit_since, so a hop as of a time is an
-- index-only scan like a hop "now" (13% larger at 10M edges: 1,527 against 1,346 MB each). Without
-- them an upstream hop read a heap page per edge. Built concurrently by the same step
-- (`..._with_times`), swapped in here under the names of 0002 and 0006.
DROP INDEX asset_edges_upstream;
DROP INDEX asset_edges_downstream;
ALTER INDEX asset_edges_upstream_with_times RENAME TO asset_edges_upstream;
ALTER INDEX asset_edges_downstream_with_times RENAME TO asset_edges_downstream;
COMMENT ON INDEX asset_edges_upstream IS
    'Dependants of an asset in code-point order, with what a walk reads of each edge now and as of a time '
    '(migrations 0006 and 0010).';
COMMENT ON INDEX asset_edges_downstream IS
    'Upstreams of an asset, with what a walk reads of each edge now and as of a time (migrations 0002 and 0010).';
