-- A hub's lineage picture without sorting its dependants: the downstream covering index orders each
-- asset's dependants by code point (COLLATE "C"), the order the lineage walk keeps the first
-- candidates of a hop in (query/graph.py, as Python sorts keys). A hop out of a hub with 113k
-- dependants then reads its first 151 index entries instead of sorting all of them (70 ms -> under
-- 1 ms at 10M edges, bench/README.md "Graph at 10M edges"). The equality on upstream_key (every other
-- downstream hop) is served by it as before, still index-only. Neighbour pages in the database's
-- collation keep using the primary key (upstream_key, downstream_key).
--
-- Online: the new index is built first with CREATE INDEX CONCURRENTLY (projections/edges_migration.py,
-- outside any transaction: writes to asset_edges go on); this file only swaps it in under the old name.
DROP INDEX asset_edges_upstream;
ALTER INDEX asset_edges_upstream_code_points RENAME TO asset_edges_upstream;
COMMENT ON INDEX asset_edges_upstream IS
    'Dependants of an asset in code-point order: the lineage walk''s first candidates of a hub''s hop '
    'come off it without a sort (migration 0006).';
