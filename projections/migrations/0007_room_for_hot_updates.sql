-- Room on each page for the projections' updates, so most of them are HOT.
--
-- The properties consumer rewrites a row of `assets` for nearly every key a batch names (last_seen
-- moves on at every run), `asset_properties` when a newer event carries properties, and the lineage
-- consumer an `asset_edges` row for every dependency seen again. None of these updates changes an
-- indexed column (the keys; the search text and owners only when the properties do; `declared` rarely),
-- so PostgreSQL can write them as heap-only tuples on the same page, adding nothing to the indexes,
-- but only where the page has room. Where one did not fit, it added an entry to every index of the
-- table, among them the trigram GIN indexes on `assets.key` and the properties' search text, about
-- 45 entries per key. Measured on the P2 events (bench/README.md, issue 15, "Fourth pass"): the live
-- properties consumer's HOT updates of `assets` from 83% to 94%, of `asset_properties` from 62% to
-- 100%; PostgreSQL's CPU for rows seen again 7-23% lower, about the same for new rows.
--
-- Online: ALTER TABLE ... SET (fillfactor) only records the setting (SHARE UPDATE EXCLUSIVE lock:
-- reads and writes go on). It applies to pages written from now on; pages already full get room as
-- VACUUM frees their dead rows, and at once when a replay rebuilds the tables (shadow tables copy
-- the setting, projections/shadow.py).
ALTER TABLE assets SET (fillfactor = 70);
ALTER TABLE asset_properties SET (fillfactor = 70);
ALTER TABLE asset_edges SET (fillfactor = 70);
