-- Read access for queries: the read-only role, and the indexes behind search and as-of answers.
--
-- Roles belong to the whole PostgreSQL cluster while the tables belong to one
-- database, so the role is created once (when missing) and granted in every
-- database that is migrated.

-- assetlog_reader: may connect and SELECT the projection tables, nothing else.
-- It is a LOGIN role without a password: on a server that asks for passwords
-- nobody can log in as it until an administrator sets one (ALTER ROLE ...
-- PASSWORD) or grants it to personal login roles (GRANT assetlog_reader TO alice).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'assetlog_reader') THEN
        BEGIN
            CREATE ROLE assetlog_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
            COMMENT ON ROLE assetlog_reader IS
                'Read-only access to the Assetlog projection tables (created by assetlog db migrate).';
            -- A second fence besides the grants: its sessions start read-only and give up on runaway queries.
            ALTER ROLE assetlog_reader SET default_transaction_read_only = on;
            ALTER ROLE assetlog_reader SET statement_timeout = '30s';
        EXCEPTION
            -- Another database's migrator created it at the same moment (advisory locks are per database).
            WHEN duplicate_object OR unique_violation THEN
                NULL;
            WHEN insufficient_privilege THEN
                RAISE WARNING 'assetlog_reader was not created: this user lacks CREATEROLE'
                    USING HINT = 'An administrator can run CREATE ROLE assetlog_reader LOGIN and the GRANTs '
                                 'documented in the README (Query section).';
        END;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'assetlog_reader') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO assetlog_reader', current_database());
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO assetlog_reader', current_schema());
        GRANT SELECT ON asset_properties, assets, asset_edges, lineage_history, schema_migrations
            TO assetlog_reader;
    END IF;
END
$$;

-- Lineage walks read (key, neighbour, declared) and nothing else: with these covering indexes each
-- hop is an index-only scan, which the planner keeps even for frontiers of thousands of keys.
-- `declared` rarely changes and last_seen (rewritten at every run) is in no index, so the
-- projection's edge updates stay HOT. The first replaces 0001's index of the same name (a superset).
DROP INDEX asset_edges_downstream;
CREATE INDEX asset_edges_downstream ON asset_edges (downstream_key, upstream_key) INCLUDE (declared);
CREATE INDEX asset_edges_upstream ON asset_edges (upstream_key, downstream_key) INCLUDE (declared);

-- Properties as of a time: the newest event carrying properties for a key, found without
-- walking the key's other events (an asset refreshed daily by a string key has many).
CREATE INDEX lineage_history_properties ON lineage_history (asset_key, event_time DESC, event_id DESC)
    WHERE event_type = 'materialization' AND jsonb_typeof(payload -> 'properties') = 'object';
CREATE INDEX lineage_history_upstream_properties ON lineage_history (upstream_key, event_time DESC, event_id DESC)
    WHERE event_type = 'dependency' AND jsonb_typeof(payload -> 'upstream_properties') = 'object';

-- Owner filter: owners @> ARRAY['team'].
CREATE INDEX asset_properties_owners ON asset_properties USING gin (owners);

-- Search text of an asset: one expression, so one trigram index serves key, name, description and owners.
CREATE FUNCTION assetlog_search_text(key text, name text, description text, owners text[])
    RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT concat_ws(E'\n', key, name, description, array_to_string(owners, E'\n')) $$;
COMMENT ON FUNCTION assetlog_search_text(text, text, text, text[]) IS
    'Key, name, description and owners as one text; `assetlog assets --search` matches it with ILIKE.';

-- Trigram indexes make ILIKE '%text%' an index search. pg_trgm ships with PostgreSQL's contrib
-- modules; where it is missing (or this user may not create it), search still works, by scanning.
DO $$
DECLARE
    trgm_schema name;
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pg_trgm is not available (%): asset search will scan instead of using an index', SQLERRM;
    END;
    SELECT n.nspname INTO trgm_schema
        FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm';
    IF trgm_schema IS NOT NULL THEN
        EXECUTE format('CREATE INDEX assets_key_trgm ON assets USING gin (key %I.gin_trgm_ops)', trgm_schema);
        EXECUTE format(
            'CREATE INDEX asset_properties_search_trgm ON asset_properties USING gin '
            '(assetlog_search_text(key, name, description, owners) %I.gin_trgm_ops)', trgm_schema);
    END IF;
END
$$;
