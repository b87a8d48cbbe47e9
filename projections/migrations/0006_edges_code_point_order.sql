-- A hub's lineage picture without sorting its dependants: the downstream covering index orders each
-- asset's dependants by code point (COLLATE "C"), the order the lineage walk keeps the first
-- candidates of a hop in (query/graph.py, as Python sorts keys). A hop out of a hub with 113k
-- dependants then reads its first 151 index entries instead of sorting all of them (70 ms -> under
-- 1 ms at 10M edges, bench/README.md "Graph at 10M edges"). The equality on upstream_key (every other
-- downstream hop) is served by it as before, still index-only. Neighbour pages in the database's
-- collation keep using the primary key (upstream_key, downstream_key).
--
-- Rebuilding the index blocks writes to asset_edges while it runs (about a minute per 10M edges);
-- reads go on.
DROP INDEX asset_edges_upstream;
CREATE INDEX asset_edges_upstream ON asset_edges (upstream_key, downstream_key COLLATE "C") INCLUDE (declared);
COMMENT ON INDEX asset_edges_upstream IS
    'Dependants of an asset in code-point order: the lineage walk''s first candidates of a hub''s hop '
    'come off it without a sort (migration 0006).';
