-- Generations: the fence between a replay's swap and the live consumers.
--
-- `assetlog replay` rebuilds a projection's tables from the topics into a
-- shadow schema and swaps them in, with the stored offsets, in one
-- transaction that also advances the projection's generation. Every live
-- consumer reads the generation with its offsets and re-checks it (FOR SHARE)
-- first thing in each batch's transaction: a batch decoded before the swap is
-- refused instead of writing stale offsets or effects, and the consumer
-- re-reads the swapped offsets and goes on from there.

CREATE TABLE projection_generations (
    projection text PRIMARY KEY,
    generation bigint NOT NULL DEFAULT 0 CHECK (generation >= 0),
    replayed_at timestamptz
);
COMMENT ON TABLE projection_generations IS
    'One row per projection: how many times `assetlog replay` swapped its tables. Live consumers check it in '
    'every batch''s transaction, so a batch read before a swap never lands after it.';
COMMENT ON COLUMN projection_generations.projection IS 'properties or lineage.';
COMMENT ON COLUMN projection_generations.generation IS
    'Advanced by each replay swap, in the transaction that swaps the tables and the stored offsets.';
COMMENT ON COLUMN projection_generations.replayed_at IS 'When the last replay swapped the tables in (null: never).';

INSERT INTO projection_generations (projection) VALUES ('properties'), ('lineage');

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'assetlog_reader') THEN
        GRANT SELECT ON projection_generations TO assetlog_reader;
    END IF;
END
$$;
