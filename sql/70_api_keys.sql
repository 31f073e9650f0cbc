-- HTTP API keys (table in migrations/0006_api_keys.sql). Keys are made,
-- listed and revoked by the ledger_owner role (the `ledger keys` command);
-- the web service (ledger_app) may only ask which app a token hash names.
-- Tokens never reach the database: callers pass SHA-256(token).

-- create_api_key gained a trailing scope; the old signature goes.
DROP FUNCTION IF EXISTS ledger.create_api_key(text, text, bytea, text);

CREATE OR REPLACE FUNCTION ledger.create_api_key(
    app          text,
    key_id       text,
    token_sha256 bytea,
    label        text DEFAULT NULL,
    scope        text DEFAULT 'app')
RETURNS ledger.api_key_info
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key ledger.api_key_info;
BEGIN
    PERFORM ledger._require_app(create_api_key.app);
    IF create_api_key.key_id IS NULL OR create_api_key.key_id !~ '^key_[a-z0-9]{8,32}$' THEN
        RAISE EXCEPTION 'invalid argument: key_id must look like key_ followed by 8 to 32 lowercase letters or digits'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'key_id', 'reason', 'format')::text;
    END IF;
    IF create_api_key.token_sha256 IS NULL OR octet_length(create_api_key.token_sha256) <> 32 THEN
        RAISE EXCEPTION 'invalid argument: token_sha256 must be a 32-byte SHA-256 digest'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'token_sha256', 'reason', 'format')::text;
    END IF;
    IF create_api_key.scope IS NULL OR create_api_key.scope NOT IN ('app', 'audit') THEN
        RAISE EXCEPTION 'invalid argument: scope must be app or audit'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'scope', 'reason', 'invalid')::text;
    END IF;
    IF length(create_api_key.label) > 255 THEN
        RAISE EXCEPTION 'invalid argument: label is longer than 255 characters'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'label', 'reason', 'too long')::text;
    END IF;
    INSERT INTO ledger.api_keys AS k (key_id, app, token_sha256, label, scope)
    VALUES (create_api_key.key_id, create_api_key.app, create_api_key.token_sha256,
            create_api_key.label, create_api_key.scope)
    RETURNING k.key_id, k.app, k.label, k.created_at, k.revoked_at, k.scope INTO v_key;
    RETURN v_key;
END
$$;
COMMENT ON FUNCTION ledger.create_api_key(text, text, bytea, text, text) IS $$
Stores a new active key of an existing app (LG011 otherwise) under the id
key_id, with the SHA-256 digest of its token (the token itself never
reaches the database). LG007 for a malformed key id, digest, label or
scope. Scope 'app' (the default) acts for the app; 'audit' reads every
app's private fields and writes nothing.$$;

-- PL/pgSQL, as every function that reads the ledger's tables (Citus cannot
-- plan SQL functions over them); the clock is read into a variable, never
-- inside the UPDATE.
DROP FUNCTION IF EXISTS ledger.list_api_keys();
CREATE FUNCTION ledger.list_api_keys()
RETURNS SETOF ledger.api_key_info
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
        SELECT k.key_id, k.app, k.label, k.created_at, k.revoked_at, k.scope
        FROM ledger.api_keys k
        ORDER BY k.created_at, k.key_id;
END
$$;
COMMENT ON FUNCTION ledger.list_api_keys() IS $$
Every key, active and revoked, oldest first; never a digest. Read-only.$$;

DROP FUNCTION IF EXISTS ledger.revoke_api_key(text);
CREATE FUNCTION ledger.revoke_api_key(key_id text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_at timestamptz := clock_timestamp();
BEGIN
    UPDATE ledger.api_keys k SET revoked_at = v_at
    WHERE k.key_id = revoke_api_key.key_id AND k.revoked_at IS NULL;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION ledger.revoke_api_key(text) IS $$
true when the key was active and is revoked now; false for an unknown or
already revoked key. Revocation is immediate for every later lookup.$$;

-- PL/pgSQL rather than SQL: it runs on every HTTP request, and PL/pgSQL
-- keeps its plan for the session where a non-inlined SQL function re-plans.
CREATE OR REPLACE FUNCTION ledger.api_key_app(token_sha256 bytea)
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT k.app FROM ledger.api_keys k
            WHERE k.token_sha256 = api_key_app.token_sha256 AND k.revoked_at IS NULL);
END
$$;
COMMENT ON FUNCTION ledger.api_key_app(bytea) IS $$
The app whose active key has this token digest, or NULL for an unknown or
revoked key. Read-only.$$;

CREATE OR REPLACE FUNCTION ledger.api_key_lookup(token_sha256 bytea)
RETURNS TABLE (app text, scope text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT k.app, k.scope FROM ledger.api_keys k
                 WHERE k.token_sha256 = api_key_lookup.token_sha256 AND k.revoked_at IS NULL;
END
$$;
COMMENT ON FUNCTION ledger.api_key_lookup(bytea) IS $$
The app and scope of the active key with this token digest; no row for an
unknown or revoked key. What the HTTP service asks on every request.
Read-only.$$;
