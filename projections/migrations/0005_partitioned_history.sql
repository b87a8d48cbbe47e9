-- Partitioned history: lineage_history is partitioned by RANGE (event_time), one partition per month.
--
-- The conversion itself is this migration's online step (projections/history_migration.py), run by
-- `assetlog db migrate` just before this file, outside any long transaction: by the time this file
-- runs, lineage_history is the partitioned table (primary key (event_id, event_time), the index
-- names of 0001 and 0002, monthly partitions and a DEFAULT one) and the old table waits as
-- lineage_history_unpartitioned. Partitions are created ahead and on demand by the writers and by
-- `assetlog db partitions create`; see projections/partitions.py for the rule.

DROP TABLE IF EXISTS lineage_history_unpartitioned;
DROP FUNCTION IF EXISTS assetlog_forward_history();

-- Name the history table in the refusal, not the partition the row happens to be in.
CREATE OR REPLACE FUNCTION assetlog_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    root text := (SELECT relname FROM pg_class WHERE oid = pg_partition_root(TG_RELID));
BEGIN
    RAISE EXCEPTION '% is append-only: % refused%', coalesce(root, TG_TABLE_NAME), TG_OP,
        CASE WHEN root IS NOT NULL AND root <> TG_TABLE_NAME THEN ' (partition ' || TG_TABLE_NAME || ')' ELSE '' END
        USING ERRCODE = 'restrict_violation',
              HINT = 'History is never rewritten; rebuild projections from the topics instead.';
END;
$$;

COMMENT ON TABLE lineage_history IS
    'Append-only: one row per event ever projected (materializations succeeded and failed, dependencies, '
    'metadata), maintained by the lineage consumer. Partitioned by event_time, one partition per month (UTC) '
    'plus a DEFAULT partition for times outside the months created (see `assetlog db partitions list`). '
    'UPDATE, DELETE and TRUNCATE are refused by triggers on every partition. A redelivered event (same '
    'event_id and event_time) is ignored: the first delivery, i.e. the lowest offset, stays; the same event_id '
    'with another event_time is dead-lettered (reason conflicting-event-time). Give the event_time with an '
    'event_id in lookups, so that only its partition is read.';
COMMENT ON COLUMN lineage_history.event_id IS
    'The event''s UUID, unique across all event types; the primary key is (event_id, event_time) because '
    'PostgreSQL wants the partition key in it, and the consumers keep one event_time per event_id.';
COMMENT ON COLUMN dead_letters.reason IS
    'Short code: empty, bad-magic, unknown-schema, truncated, malformed, trailing-bytes (not decodable), '
    'wrong-topic, invalid-key, invalid-uuid, invalid-metadata, invalid-text (decodes but invalid), '
    'unprocessable, unstorable (refused by PostgreSQL), conflicting-event-time (event_id stored with another time).';

-- lineage_event_ids, created and filled by the online step: PostgreSQL cannot make event_id unique
-- across partitions, this table does, and it tells the consumers an id's stored time with one index probe.
COMMENT ON TABLE lineage_event_ids IS
    'Every event_id in lineage_history with its event_time (maintained by the lineage consumer): the '
    'primary key keeps event_id unique across the history''s partitions, so a redelivery is recognised and '
    'the same id with another time dead-lettered. Ids of detached partitions stay (their events are not '
    'stored again).';
COMMENT ON COLUMN lineage_event_ids.event_id IS 'An event_id stored in lineage_history (or in a detached month of it).';
COMMENT ON COLUMN lineage_event_ids.event_time IS 'Its event_time: the partition its row is in.';
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'assetlog_reader') THEN
        GRANT SELECT ON lineage_event_ids TO assetlog_reader;
    END IF;
END
$$;
