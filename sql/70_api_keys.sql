-- HTTP API keys (table in migrations/0006_api_keys.sql). Keys are made,
-- listed and revoked by the ledger_owner role (the `ledger keys` command);
-- the web service (ledger_app) may only ask which app a token hash names.
-- Tokens never reach the database: callers pass SHA-256(token).

-- create_api_key makes the key id itself now; the signatures that took one go.
DROP FUNCTION IF EXISTS ledger.create_api_key(text, text, bytea, text);
DROP FUNCTION IF EXISTS ledger.create_api_key(text, text, bytea, text, text);

CREATE OR REPLACE FUNCTION ledger.create_api_key(
    app          text,
    token_sha256 bytea,
    label        text DEFAULT NULL,
    scope        text DEFAULT 'app')
RETURNS ledger.api_key_info
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key        ledger.api_key_info;
    v_random     text := replace(gen_random_uuid()::text, '-', '');
    v_constraint text;
    v_column     text;
    v_rule       text;
BEGIN
    PERFORM ledger._require_app(create_api_key.app);
    -- The table's constraints are the rules of the digest, label and scope:
    -- a violation is translated here, by the constraint's name.
    BEGIN
        -- 64 random bits: the uuid's hex digits but its version (13th) and variant (17th).
        INSERT INTO ledger.api_keys AS k (key_id, app, token_sha256, label, scope)
        VALUES ('key_' || substr(v_random, 1, 12) || substr(v_random, 18, 4),
                create_api_key.app, create_api_key.token_sha256,
                create_api_key.label, create_api_key.scope)
        RETURNING k.key_id, k.app, k.label, k.created_at, k.revoked_at, k.scope INTO v_key;
    EXCEPTION WHEN check_violation OR not_null_violation OR unique_violation THEN
        GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME, v_column = COLUMN_NAME;
        IF v_column = '' THEN  -- a CHECK or UNIQUE constraint: its one column
            SELECT a.attname, pg_get_constraintdef(c.oid) INTO v_column, v_rule
            FROM pg_constraint c
            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
            WHERE c.conrelid = 'ledger.api_keys'::regclass AND c.conname = v_constraint;
        ELSE
            v_rule := 'NOT NULL';
        END IF;
        RAISE EXCEPTION 'invalid argument: % breaks the rule % (%)',
                coalesce(v_column, 'a value'), coalesce(nullif(v_constraint, ''), 'of its column'), v_rule
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object(
                      'field', v_column,
                      'constraint', nullif(v_constraint, ''),
                      'reason', CASE
                          WHEN v_rule = 'NOT NULL' THEN 'required'
                          WHEN v_constraint = 'api_keys_token_sha256_length' THEN 'format'
                          WHEN v_constraint = 'api_keys_label_length' THEN 'too long'
                          WHEN v_constraint = 'api_keys_token_sha256_unique' THEN 'duplicate key'
                          ELSE 'invalid' END)::text;
    END;
    RETURN v_key;
END
$$;
COMMENT ON FUNCTION ledger.create_api_key(text, bytea, text, text) IS $$
Stores a new active key of an existing app (LG011 otherwise) under a new
key id that the database makes (key_ and 16 random hex digits), with the
SHA-256 digest of its token (the token itself never reaches the
database), and returns it. A digest, label or scope that breaks a
constraint of ledger.api_keys is LG007 naming the field and the
constraint. Scope 'app' (the default) acts for the app; 'audit' reads
every app's private fields and writes nothing.$$;

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
