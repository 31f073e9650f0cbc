-- HTTP API keys: each app has its own, several at a time (rotation), each
-- revocable. Only the SHA-256 of a key's token is stored: the token is 32
-- random bytes (256 bits), so no dictionary or brute-force attack applies and
-- a slow password hash would only add latency to every request; a unique
-- index on the hash finds a key in one lookup. The database never sees a
-- token (the caller hashes it). Writes go through the functions of
-- sql/70_api_keys.sql; ledger_app and ledger_reader cannot read this table.
-- depends: 0005_result_types

CREATE TABLE ledger.api_keys (
    key_id       text PRIMARY KEY
                 CONSTRAINT api_keys_key_id_format CHECK (key_id ~ '^key_[a-z0-9]{8,32}$'),
    app          text NOT NULL REFERENCES ledger.apps (app),
    token_sha256 bytea NOT NULL
                 CONSTRAINT api_keys_token_sha256_length CHECK (octet_length(token_sha256) = 32),
    label        text CONSTRAINT api_keys_label_length CHECK (length(label) <= 255),
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    revoked_at   timestamptz,
    CONSTRAINT api_keys_token_sha256_unique UNIQUE (token_sha256)
);
CREATE INDEX api_keys_app ON ledger.api_keys (app);

-- What list_api_keys() shows of a key: never its hash.
CREATE TYPE ledger.api_key_info AS (
    key_id     text,
    app        text,
    label      text,
    created_at timestamptz,
    revoked_at timestamptz
);

ALTER TABLE ledger.api_keys OWNER TO ledger_owner;
ALTER TYPE ledger.api_key_info OWNER TO ledger_owner;
