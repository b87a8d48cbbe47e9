-- The projection tables: what users query with SQL.
--
-- Every projected table is a deterministic function of the SET of events that
-- reached it (no now(), no serial ids), so a rebuild from the topics can be
-- compared with the live tables row for row. Tables are created in the first
-- schema of the connection's search_path (normally "public").

-- Current descriptive properties, last write wins by (event_time, event_id).
CREATE TABLE asset_properties (
    key text PRIMARY KEY,
    name text,
    description text,
    owners text[],
    url text,
    event_time timestamptz NOT NULL,
    event_id uuid NOT NULL
);
COMMENT ON TABLE asset_properties IS
    'Current properties of every asset that ever carried some (maintained by the properties consumer). '
    'Properties are replaced as a whole by the event with the greatest (event_time, event_id): a field absent '
    'from the newer properties becomes null. Events without properties (string keys) never touch a row.';
COMMENT ON COLUMN asset_properties.key IS 'Asset key, a URI stored verbatim (e.g. s3://bucket/data.csv).';
COMMENT ON COLUMN asset_properties.name IS 'Human-readable name; null when the newest properties had none.';
COMMENT ON COLUMN asset_properties.description IS 'Markdown description (at most 2500 characters); null when absent.';
COMMENT ON COLUMN asset_properties.owners IS 'Owners (people or teams); null when the newest properties had none.';
COMMENT ON COLUMN asset_properties.url IS 'Where a person can look at the asset; null when absent.';
COMMENT ON COLUMN asset_properties.event_time IS
    'event_time of the event that set these properties (a materialization of the asset, or a dependency '
    'naming it as an upstream given as a full Asset).';
COMMENT ON COLUMN asset_properties.event_id IS 'event_id of that event (tie-breaker when two event times are equal).';

-- One row per key ever seen.
CREATE TABLE assets (
    key text PRIMARY KEY,
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    last_materialized_at timestamptz,
    last_materialization_event_id uuid,
    last_status text CHECK (last_status IN ('SUCCEEDED', 'FAILED')),
    last_materialized_by text,
    last_error_type text,
    last_error_message text,
    metadata jsonb,
    metadata_time timestamptz,
    metadata_materialization_event_id uuid,
    metadata_event_id uuid,
    CHECK ((last_materialized_at IS NULL) = (last_materialization_event_id IS NULL)),
    CHECK ((last_materialized_at IS NULL) = (last_status IS NULL)),
    CHECK ((metadata IS NULL) = (metadata_event_id IS NULL))
);
COMMENT ON TABLE assets IS
    'Every asset key ever seen: materialized, referenced as an upstream, or given metadata (maintained by the '
    'properties consumer). Every column is order-independent: minimum, maximum or newest by (event_time, event_id).';
COMMENT ON COLUMN assets.key IS 'Asset key, a URI stored verbatim.';
COMMENT ON COLUMN assets.first_seen IS 'Earliest event_time of any event mentioning the key.';
COMMENT ON COLUMN assets.last_seen IS 'Latest event_time of any event mentioning the key.';
COMMENT ON COLUMN assets.last_materialized_at IS
    'event_time of the newest materialization (by event_time, then event_id); null if only ever referenced.';
COMMENT ON COLUMN assets.last_materialization_event_id IS 'event_id of that materialization (join lineage_history.event_id).';
COMMENT ON COLUMN assets.last_status IS 'SUCCEEDED or FAILED: outcome of that materialization; null if never materialized.';
COMMENT ON COLUMN assets.last_materialized_by IS 'The tool that materialized it (the by= argument, e.g. dbt), if given.';
COMMENT ON COLUMN assets.last_error_type IS 'Exception class name when the newest materialization FAILED, else null.';
COMMENT ON COLUMN assets.last_error_message IS 'Exception message when the newest materialization FAILED, else null.';
COMMENT ON COLUMN assets.metadata IS
    'Runtime metadata (a JSON object) of the newest materialization that recorded metadata, by (metadata_time, '
    'metadata_materialization_event_id). Compare metadata_materialization_event_id with '
    'last_materialization_event_id to know whether it belongs to the last materialization.';
COMMENT ON COLUMN assets.metadata_time IS 'event_time of the metadata event (the task run''s end).';
COMMENT ON COLUMN assets.metadata_materialization_event_id IS 'event_id of the materialization the metadata belongs to.';
COMMENT ON COLUMN assets.metadata_event_id IS 'event_id of the metadata event itself.';

-- The dependency graph.
CREATE TABLE asset_edges (
    upstream_key text NOT NULL,
    downstream_key text NOT NULL,
    declared text NOT NULL CHECK (declared IN ('inferred', 'explicit')),
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    last_event_id uuid NOT NULL,
    PRIMARY KEY (upstream_key, downstream_key)
);
CREATE INDEX asset_edges_downstream ON asset_edges (downstream_key, upstream_key);
COMMENT ON TABLE asset_edges IS
    'The dependency graph: one row per (upstream, downstream) pair ever declared by a dependency event '
    '(maintained by the lineage consumer). Edges accumulate; an edge not seen for a while keeps its row, '
    'its last_seen tells how current it is.';
COMMENT ON COLUMN asset_edges.upstream_key IS 'The asset read (upstream).';
COMMENT ON COLUMN asset_edges.downstream_key IS 'The asset materialized from it (downstream).';
COMMENT ON COLUMN asset_edges.declared IS
    'explicit if any dependency event declared it in asset_deps, else inferred (from the task graph).';
COMMENT ON COLUMN asset_edges.first_seen IS 'Earliest event_time of a dependency event for this pair.';
COMMENT ON COLUMN asset_edges.last_seen IS 'Latest event_time of a dependency event for this pair.';
COMMENT ON COLUMN asset_edges.last_event_id IS
    'event_id of the newest dependency event for this pair, by (event_time, event_id) (join lineage_history.event_id).';

-- Every event ever projected; the database itself refuses changes.
CREATE TABLE lineage_history (
    event_id uuid PRIMARY KEY,
    event_type text NOT NULL CHECK (event_type IN ('materialization', 'dependency', 'metadata')),
    event_time timestamptz NOT NULL,
    asset_key text NOT NULL,
    upstream_key text,
    status text NOT NULL CHECK (status IN ('SUCCEEDED', 'FAILED')),
    materialization_event_id uuid NOT NULL,
    flow_run_id uuid,
    flow_name text,
    task_run_id uuid NOT NULL,
    task_name text NOT NULL,
    payload jsonb NOT NULL,
    kafka_topic text,
    kafka_partition integer,
    kafka_offset bigint,
    CHECK ((event_type = 'dependency') = (upstream_key IS NOT NULL))
);
CREATE INDEX lineage_history_asset_time ON lineage_history (asset_key, event_time DESC, event_id DESC);
CREATE INDEX lineage_history_upstream_time ON lineage_history (upstream_key, event_time DESC) WHERE upstream_key IS NOT NULL;
CREATE INDEX lineage_history_materialization ON lineage_history (materialization_event_id);
COMMENT ON TABLE lineage_history IS
    'Append-only: one row per event ever projected (materializations succeeded and failed, dependencies, '
    'metadata), maintained by the lineage consumer. UPDATE, DELETE and TRUNCATE are refused by triggers. '
    'A redelivered event (same event_id) is ignored: the first delivery, i.e. the lowest offset, stays.';
COMMENT ON COLUMN lineage_history.event_id IS 'The event''s UUID, unique across all event types.';
COMMENT ON COLUMN lineage_history.event_type IS 'materialization, dependency or metadata.';
COMMENT ON COLUMN lineage_history.event_time IS 'When the task run finished (all events of one task run share it).';
COMMENT ON COLUMN lineage_history.asset_key IS
    'The asset the event is about: the materialized asset, the downstream of a dependency, or the asset given metadata.';
COMMENT ON COLUMN lineage_history.upstream_key IS 'For a dependency event, the upstream asset; null otherwise.';
COMMENT ON COLUMN lineage_history.status IS 'SUCCEEDED or FAILED: outcome of the materialization the event belongs to.';
COMMENT ON COLUMN lineage_history.materialization_event_id IS
    'event_id of the materialization the event belongs to (its own event_id for a materialization), so one '
    'query on this column returns a materialization with its dependencies and metadata.';
COMMENT ON COLUMN lineage_history.flow_run_id IS 'UUID of the flow run; null for a task called outside a flow.';
COMMENT ON COLUMN lineage_history.flow_name IS 'Name of the flow; null outside a flow.';
COMMENT ON COLUMN lineage_history.task_run_id IS 'UUID of the task run.';
COMMENT ON COLUMN lineage_history.task_name IS 'Name of the task.';
COMMENT ON COLUMN lineage_history.payload IS
    'The whole event as JSON, with the Avro field names (event_time as ISO-8601 text); a metadata event''s '
    'metadata_json string is stored parsed, as the object "metadata".';
COMMENT ON COLUMN lineage_history.kafka_topic IS 'Topic the event was read from (null if projected without Kafka).';
COMMENT ON COLUMN lineage_history.kafka_partition IS 'Partition the event was read from.';
COMMENT ON COLUMN lineage_history.kafka_offset IS 'Offset of the event in that partition (its first delivery).';

CREATE FUNCTION assetlog_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'History is never rewritten; rebuild projections from the topics instead.';
END;
$$;
COMMENT ON FUNCTION assetlog_refuse_change() IS
    'Trigger function that refuses UPDATE, DELETE and TRUNCATE on append-only tables (lineage_history).';
CREATE TRIGGER lineage_history_append_only BEFORE UPDATE OR DELETE ON lineage_history
    FOR EACH ROW EXECUTE FUNCTION assetlog_refuse_change();
CREATE TRIGGER lineage_history_no_truncate BEFORE TRUNCATE ON lineage_history
    FOR EACH STATEMENT EXECUTE FUNCTION assetlog_refuse_change();

-- Where each consumer is, per partition; written in the same transaction as the projection's rows.
CREATE TABLE consumer_offsets (
    projection text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL CHECK (next_offset >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);
COMMENT ON TABLE consumer_offsets IS
    'Position of each projection in each partition, committed in the same transaction as the projection''s '
    'writes: a consumer that starts (or is assigned a partition) resumes exactly here.';
COMMENT ON COLUMN consumer_offsets.projection IS 'properties or lineage (the consumer group is <prefix>.<projection>).';
COMMENT ON COLUMN consumer_offsets.topic IS 'Kafka topic.';
COMMENT ON COLUMN consumer_offsets.partition IS 'Kafka partition.';
COMMENT ON COLUMN consumer_offsets.next_offset IS 'Offset of the next message to project: every earlier one is projected or dead-lettered.';
COMMENT ON COLUMN consumer_offsets.updated_at IS 'When the offset was last written (wall clock; not part of any projection).';

-- Messages a projection skipped, and why.
CREATE TABLE dead_letters (
    projection text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    "offset" bigint NOT NULL,
    reason text NOT NULL,
    detail text NOT NULL,
    dead_letter_topic text NOT NULL,
    message_key bytea,
    message_value bytea,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition, "offset")
);
COMMENT ON TABLE dead_letters IS
    'Messages a consumer could not project (undecodable or invalid), also written to <topic>.dlq. Each '
    'projection records the messages it skipped, so a poison message read by both consumers has two rows.';
COMMENT ON COLUMN dead_letters.projection IS 'The projection (consumer) that skipped the message.';
COMMENT ON COLUMN dead_letters.topic IS 'Topic the message was read from.';
COMMENT ON COLUMN dead_letters.partition IS 'Its partition.';
COMMENT ON COLUMN dead_letters."offset" IS 'Its offset.';
COMMENT ON COLUMN dead_letters.reason IS
    'Short code: empty, bad-magic, unknown-schema, truncated, malformed, trailing-bytes (not decodable), '
    'wrong-topic, invalid-key, invalid-uuid, invalid-metadata, invalid-text (decodes but invalid).';
COMMENT ON COLUMN dead_letters.detail IS 'What exactly is wrong, for a person.';
COMMENT ON COLUMN dead_letters.dead_letter_topic IS 'Where the message was copied (<topic>.dlq).';
COMMENT ON COLUMN dead_letters.message_key IS 'The message key, verbatim.';
COMMENT ON COLUMN dead_letters.message_value IS 'The message value, verbatim.';
COMMENT ON COLUMN dead_letters.recorded_at IS 'When it was recorded (wall clock).';
