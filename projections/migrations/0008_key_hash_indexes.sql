-- Hash indexes on the asset key of `assets` and `asset_properties`, for the read side's lookups by
-- key: a lineage answer looks up every node's row in both tables (1,000 nodes: 2,000 lookups, about
-- half of a 10-hop walk at 10M edges), as do `show`, the web view's pages and `require_asset`.
-- A btree lookup reads three index pages and compares the key with about 25 others on the way
-- (in the profile of that query: _bt_compare 19%, buffer lookups 12%, the comparisons' memcmp and
-- strcmp 11%); a hash lookup reads one bucket page and compares one hash. Measured at 1M assets
-- (bench/README.md, "Hash indexes for the answer's rows"): the rows of a 900-1,000-node walk answer
-- in 7.2-7.8 against 9.8-10.5 ms p50 (PostgreSQL's part 5.1-5.5 against 7.8).
--
-- The primary keys stay: they enforce uniqueness, serve the consumers' ON CONFLICT (key) upserts
-- and every ordered read (search, pages by key). A hash index costs writes only for row versions
-- that are not HOT updates (the key never changes; 0007 keeps most updates HOT), that is mostly
-- for new assets.
--
-- Online: both indexes are built first with CREATE INDEX CONCURRENTLY (projections/online_indexes.py,
-- outside any transaction: writes go on); this file only describes them.
COMMENT ON INDEX assets_key_hash IS
    'Lookups of an asset''s row by key (lineage answers, show, the web view): one bucket page instead '
    'of a btree descent (migration 0008).';
COMMENT ON INDEX asset_properties_key_hash IS
    'Lookups of an asset''s properties by key (lineage answers, show, the web view): one bucket page '
    'instead of a btree descent (migration 0008).';
