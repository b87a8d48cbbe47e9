-- Access tokens: who may read the lineage through Assetlog's listeners (the web view and its JSON API).
--
-- A token is shown once, when `assetlog tokens create` makes it; only its SHA-256 is kept. Tokens are
-- 256 random bits, so a fast hash is as good as a slow one here: there is no password to guess.
-- The read-only role may SELECT the table (that is how `assetlog serve` checks a token on its
-- read-only connection); only the writer's role creates and revokes.

CREATE TABLE access_tokens (
    token_id text PRIMARY KEY CHECK (token_id ~ '^[0-9a-f]{16}$'),
    name text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
COMMENT ON TABLE access_tokens IS
    'Bearer tokens for the web view and the JSON API (`assetlog tokens create|list|revoke`); only hashes are stored.';
COMMENT ON COLUMN access_tokens.token_id IS 'The public part of the token (alt_<token_id>_<secret>), used to find the row.';
COMMENT ON COLUMN access_tokens.name IS 'Who or what the token is for.';
COMMENT ON COLUMN access_tokens.secret_sha256 IS 'SHA-256 of the secret part; the secret itself is never stored.';
COMMENT ON COLUMN access_tokens.revoked_at IS 'When it was revoked (null: valid).';

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'assetlog_reader') THEN
        GRANT SELECT ON access_tokens TO assetlog_reader;
    END IF;
END
$$;
