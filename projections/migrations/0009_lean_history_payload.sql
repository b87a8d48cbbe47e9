-- From this version on, `lineage_history.payload` holds only the event's fields that have no column of
-- their own: the event id, time, keys, status, materialization id and the run's ids and names are in the
-- row's columns already, and repeating them made up 70% of a payload's bytes. PostgreSQL parses every
-- payload into jsonb, so the repeats cost half the CPU of the history COPY (a replay's biggest statement)
-- and 4.5 CPU-s per 1M events of the live lineage consumer's COPY (bench/README.md, issue 15, "Ninth
-- pass"). Rows written before keep their whole payloads; nothing is rewritten.
--
-- `assetlog_lineage_event(...)` gives the whole event back from a row of either kind, as the payload held
-- it before: the Avro record with its field names, ids as lowercase text, event_time as ISO-8601 text in
-- UTC as Python writes it (`2025-01-01T00:00:05+00:00`, `2025-01-01T00:00:05.500000+00:00`).
-- The fields it puts back are those `projections/events.py` leaves out (FIELDS_IN_COLUMNS); a test builds
-- the whole event both ways for generated events of every type and compares them.
CREATE FUNCTION assetlog_lineage_event(
    event_type text, event_id uuid, event_time timestamptz, asset_key text, upstream_key text, status text,
    materialization_event_id uuid, flow_run_id uuid, flow_name text, task_run_id uuid, task_name text,
    payload jsonb)
    RETURNS jsonb LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT (payload - '{event_id,event_time,asset_key,upstream_key,downstream_key,status,materialization_event_id}'::text[])
        || jsonb_build_object(
            'event_id', event_id,
            'event_time', to_char(event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
                || CASE WHEN date_part('microseconds', event_time)::integer % 1000000 = 0 THEN ''
                        ELSE to_char(event_time AT TIME ZONE 'UTC', '.US') END
                || '+00:00',
            'status', status,
            'run', COALESCE(payload -> 'run', '{}'::jsonb) || jsonb_build_object(
                'flow_run_id', flow_run_id, 'flow_name', flow_name, 'task_run_id', task_run_id,
                'task_name', task_name))
        || CASE event_type
            WHEN 'materialization' THEN jsonb_build_object('asset_key', asset_key)
            WHEN 'dependency' THEN jsonb_build_object('upstream_key', upstream_key, 'downstream_key', asset_key,
                                                      'materialization_event_id', materialization_event_id)
            ELSE jsonb_build_object('asset_key', asset_key, 'materialization_event_id', materialization_event_id)
        END
    $$;
COMMENT ON FUNCTION assetlog_lineage_event(text, uuid, timestamptz, text, text, text, uuid, uuid, text, uuid, text,
                                           jsonb) IS
    'The whole event of a lineage_history row (its columns and its payload), as JSON with the Avro field '
    'names: SELECT assetlog_lineage_event(event_type, event_id, event_time, asset_key, upstream_key, status, '
    'materialization_event_id, flow_run_id, flow_name, task_run_id, task_name, payload) FROM lineage_history.';

COMMENT ON COLUMN lineage_history.payload IS
    'The event''s fields that have no column of their own, as JSON with the Avro field names (properties, '
    'upstream_properties, declared, by, upstream_keys, error, producer, task_version, ...); a metadata '
    'event''s metadata_json string is stored parsed, as the object "metadata". Rows written before migration '
    '0009 hold the whole event. assetlog_lineage_event(...) gives the whole event for either.';
