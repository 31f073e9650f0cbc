-- Input rules shared by every writing function: one place for each rule.
-- These helpers are internal (no EXECUTE for ledger_app); each raises the
-- project SQLSTATE of the rule it keeps. They carry no SET search_path of
-- their own: only the pinned SECURITY DEFINER functions call them (a SET
-- clause would cost a GUC save/restore on every call of the hot path). Error DETAIL is a JSON object of the
-- useful fields, so any client can read them without parsing prose.
--
-- SQLSTATEs (class LG):
--   LG001 insufficient credits          LG008 not found (entry, hold)
--   LG002 unknown operation             LG009 hold not active
--   LG003 operation not allowed for app LG010 already reversed
--   LG004 operation limit reached       LG011 unknown app
--   LG005 idempotency key conflict      LG012 operation in use (direction flip)
--   LG006 invalid amount                LG013 entries are append-only
--   LG007 invalid argument

-- Guarantees: raises LG007 for an id ledger._require_id refused, saying why.
CREATE OR REPLACE FUNCTION ledger._invalid_id(p_name text, p_value text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_value IS NULL OR p_value OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'invalid argument: % is required', p_name
            USING ERRCODE = 'LG007',
                  DETAIL = pg_catalog.json_build_object('field', p_name, 'reason', 'required')::pg_catalog.text;
    END IF;
    RAISE EXCEPTION 'invalid argument: % is longer than 255 characters (% given)', p_name, pg_catalog.length(p_value)
        USING ERRCODE = 'LG007',
              DETAIL = pg_catalog.json_build_object('field', p_name, 'reason', 'too long',
                                         'max_length', 255, 'length', pg_catalog.length(p_value))::pg_catalog.text;
END
$$;

-- Guarantees: returns p_value unchanged, or raises LG007 when it is NULL,
-- empty or longer than 255 characters (ids, keys and app names). Plain SQL,
-- so that it inlines into the caller's expression (a PL/pgSQL call per id
-- costs on every request); the error is raised by ledger._invalid_id.
CREATE OR REPLACE FUNCTION ledger._require_id(p_name text, p_value text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    -- Qualified throughout, casts included (a type named text planted in a
    -- schema searched first would capture `::text`): ledger.get_balance
    -- (inlined, no pinned search_path) calls it under the caller's search_path.
    SELECT CASE WHEN p_value IS NULL OR p_value OPERATOR(pg_catalog.=) ''
                     OR pg_catalog.length(p_value) OPERATOR(pg_catalog.>) 255
                THEN ledger._invalid_id(p_name, p_value)
                ELSE p_value END
$$;

DROP FUNCTION IF EXISTS ledger._operation_row(text, text);  -- a SQL function over tables (Citus cannot plan it)

-- Guarantees: the operation row a caller app may write, or an error:
-- LG007 malformed names, LG011 unknown app, LG002 unknown operation, LG003
-- another app's operation or a system operation (TRANSFER_*, REVERSAL are
-- written by their own functions only). Core operations are usable by every
-- app. One query on the hot path; the id checks run only on the error path.
CREATE OR REPLACE FUNCTION ledger._operation_for(p_app text, p_operation text)
RETURNS ledger.operations
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_op ledger.operations;
BEGIN
    SELECT o.* INTO v_op FROM ledger.operations o
    WHERE o.operation = p_operation AND EXISTS (SELECT 1 FROM ledger.apps a WHERE a.app = p_app);
    IF NOT FOUND THEN
        PERFORM ledger._require_app(p_app);
        PERFORM ledger._require_id('operation', p_operation);
        RAISE EXCEPTION 'unknown operation: %', p_operation
            USING ERRCODE = 'LG002',
                  DETAIL = json_build_object('operation', p_operation, 'app', p_app)::text,
                  HINT = 'An app registers its operations with a migration calling ledger.define_operation().';
    END IF;
    IF NOT ledger._usable_by(v_op.is_system, v_op.app, p_app) THEN
        RAISE EXCEPTION 'operation % is not allowed for app %', p_operation, p_app
            USING ERRCODE = 'LG003',
                  DETAIL = json_build_object('operation', p_operation, 'app', p_app,
                                             'operation_app', v_op.app, 'system', v_op.is_system)::text,
                  HINT = CASE WHEN v_op.is_system
                              THEN 'System operations are written only by ledger.transfer() and ledger.reverse_entry().'
                              ELSE 'Only core operations and the app''s own operations may be used.' END;
    END IF;
    RETURN v_op;
END
$$;

-- The rule of which operations an app may post: core's and its own, never a
-- system operation (those are written by transfer() and reverse_entry()).
-- Scalars, not a row of ledger.operations: a whole-row argument of a table
-- fails on Citus shards.
DROP FUNCTION IF EXISTS ledger._usable_by(ledger.operations, text);
CREATE OR REPLACE FUNCTION ledger._usable_by(p_is_system boolean, p_op_app text, p_app text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$ SELECT NOT p_is_system AND (p_op_app = 'core' OR p_op_app = p_app) $$;

-- Guarantees: raises LG011 unless the app is registered.
CREATE OR REPLACE FUNCTION ledger._require_app(p_app text)
RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    PERFORM ledger._require_id('app', p_app);
    PERFORM 1 FROM ledger.apps a WHERE a.app = p_app;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown app: %', p_app
            USING ERRCODE = 'LG011',
                  DETAIL = json_build_object('app', p_app)::text,
                  HINT = 'Apps are registered with ledger.define_app() by the ledger_owner role.';
    END IF;
END
$$;

-- Guarantees: raises LG006 for the amount ledger._amount_for refused, with
-- the reason it found.
DROP FUNCTION IF EXISTS ledger._invalid_amount(ledger.operations, numeric, text);
CREATE OR REPLACE FUNCTION ledger._invalid_amount(
    p_operation text, p_default bigint, p_min bigint, p_max bigint, p_amount numeric, p_reason text)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    CASE p_reason
    WHEN 'required' THEN
        RAISE EXCEPTION 'invalid amount: operation % needs an amount', p_operation
            USING ERRCODE = 'LG006',
                  DETAIL = json_build_object('operation', p_operation, 'reason', 'required')::text;
    WHEN 'not a positive integer' THEN
        RAISE EXCEPTION 'invalid amount: % (a positive whole number of credits is required)', p_amount
            USING ERRCODE = 'LG006',
                  DETAIL = json_build_object('operation', p_operation, 'amount', p_amount::text,
                                             'reason', 'not a positive integer')::text,
                  HINT = 'Amounts are magnitudes: the operation decides whether it credits or debits.';
    WHEN 'fixed amount' THEN
        RAISE EXCEPTION 'invalid amount: operation % has a fixed amount of %', p_operation, p_default
            USING ERRCODE = 'LG006',
                  DETAIL = json_build_object('operation', p_operation, 'amount', p_amount::text,
                                             'reason', 'fixed amount', 'fixed_amount', p_default)::text,
                  HINT = 'Omit the amount (NULL) to use the operation''s amount.';
    ELSE
        RAISE EXCEPTION 'invalid amount: % is outside % to % for operation %',
                p_amount, p_min, coalesce(p_max::text, 'unbounded'), p_operation
            USING ERRCODE = 'LG006',
                  DETAIL = json_build_object('operation', p_operation, 'amount', p_amount::text,
                                             'reason', 'out of bounds', 'min_amount', p_min,
                                             'max_amount', p_max)::text;
    END CASE;
END
$$;

-- Guarantees: the positive magnitude an operation takes, from the amount a
-- caller gave (NULL = the operation's default), or LG006: zero, negative,
-- fractional, beyond bigint, outside the operation's bounds, or set by a
-- caller on an operation whose amount is fixed. Plain SQL that inlines into
-- the caller's expression; ledger._invalid_amount words the error. Scalars,
-- not a row of ledger.operations (a whole-row argument fails on Citus).
DROP FUNCTION IF EXISTS ledger._amount_for(ledger.operations, numeric);
CREATE OR REPLACE FUNCTION ledger._amount_for(
    p_operation text, p_default bigint, p_min bigint, p_max bigint, p_caller_sets boolean, p_amount numeric)
RETURNS bigint
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE
        WHEN p_amount IS NULL
            THEN coalesce(p_default, ledger._invalid_amount(p_operation, p_default, p_min, p_max, p_amount, 'required'))
        WHEN p_amount <= 0 OR p_amount <> trunc(p_amount) OR p_amount > 9223372036854775807
            THEN ledger._invalid_amount(p_operation, p_default, p_min, p_max, p_amount, 'not a positive integer')
        WHEN NOT p_caller_sets AND p_amount <> p_default
            THEN ledger._invalid_amount(p_operation, p_default, p_min, p_max, p_amount, 'fixed amount')
        WHEN p_amount < p_min OR p_amount > p_max
            THEN ledger._invalid_amount(p_operation, p_default, p_min, p_max, p_amount, 'out of bounds')
        ELSE p_amount::bigint
    END
$$;

-- Guarantees: raises LG007 for JSON text (of the argument p_field) that
-- PostgreSQL refused with SQLSTATE p_state, message p_msg and detail
-- p_detail, worded by what is wrong: 'not storable' (\u0000, which text
-- cannot hold), 'invalid unicode escape' (a lone surrogate such as \ud800:
-- the json type takes it, jsonb does not), 'number out of range' (beyond
-- numeric, 1e1000000), 'too deep' (nesting beyond the stack) or 'invalid
-- json' (a syntax error: NaN, Infinity, a trailing comma, ...). p_index
-- names a batch item (NULL: the whole argument). Shared by metadata and
-- post_entries, so each reason is worded once.
CREATE OR REPLACE FUNCTION ledger._invalid_json(
    p_field text, p_text text, p_state text, p_msg text, p_detail text, p_index integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_reason text;
    v_what   text;
    v_hint   text;
    v_detail jsonb;
BEGIN
    IF p_state = '22P02' THEN
        BEGIN
            PERFORM p_text::json;   -- the json type checks syntax, not surrogate pairs
            v_reason := 'invalid unicode escape';
        EXCEPTION WHEN OTHERS THEN
            v_reason := 'invalid json';
        END;
    ELSE
        v_reason := CASE p_state
                        WHEN '22P05' THEN 'not storable'
                        WHEN '22003' THEN 'number out of range'
                        WHEN '54001' THEN 'too deep'
                        ELSE 'invalid json' END;
    END IF;
    v_what := CASE v_reason
        WHEN 'not storable' THEN 'holds \u0000, which the database cannot store'
        WHEN 'invalid unicode escape' THEN 'holds a lone surrogate escape (one of \uD800-\uDFFF without its pair)'
        WHEN 'number out of range' THEN 'holds a number too large to store'
        WHEN 'too deep' THEN 'is nested too deeply'
        ELSE 'is not valid JSON' END;
    v_hint := CASE v_reason
        WHEN 'not storable' THEN 'Text containing \u0000 cannot be stored; remove it or encode the value.'
        WHEN 'invalid unicode escape'
            THEN 'A \uD800-\uDFFF escape must be half of a surrogate pair (high then low).'
        WHEN 'number out of range' THEN 'Numbers are limited to what PostgreSQL''s numeric type holds.'
        WHEN 'too deep' THEN 'Nest JSON less deeply.'
        ELSE 'JSON as RFC 8259 defines it: NaN, Infinity, comments and trailing commas are not JSON.' END;
    v_detail := jsonb_build_object('field', p_field, 'reason', v_reason);
    IF p_index IS NOT NULL THEN
        v_detail := v_detail || jsonb_build_object('index', p_index);
        RAISE EXCEPTION USING ERRCODE = 'LG007', DETAIL = v_detail::text, HINT = v_hint,
            MESSAGE = format('batch item %s: invalid argument: the item %s (%s%s)', p_index, v_what, p_msg,
                             coalesce(': ' || nullif(p_detail, ''), ''));
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'LG007', DETAIL = v_detail::text, HINT = v_hint,
        MESSAGE = format('invalid argument: %s %s (%s%s)', p_field, v_what, p_msg,
                         coalesce(': ' || nullif(p_detail, ''), ''));
END
$$;

-- The first key that appears twice in one object of a JSON value, at any
-- depth (the first in document order), with the jsonpath of that object
-- ('$', '$."a"[2]'); no row when every object's keys are distinct. jsonb
-- keeps the last of duplicate keys silently, so the check reads the json
-- type, which keeps them all. A recursive query, not a recursive function:
-- depth costs no stack.
CREATE OR REPLACE FUNCTION ledger._json_duplicate_key(p_json json)
RETURNS TABLE (path text, key text)
LANGUAGE sql IMMUTABLE
AS $$
    WITH RECURSIVE node(path, place, value, kind) AS (
        SELECT '$'::text, ARRAY[]::bigint[], p_json, json_typeof(p_json)
        UNION ALL
        SELECT c.path, n.place || c.ord, c.value, json_typeof(c.value)
        FROM node n
        CROSS JOIN LATERAL (
            SELECT n.path || '.' || to_json(o.key)::text, o.value, o.ord
            FROM json_each(CASE WHEN n.kind = 'object' THEN n.value ELSE '{}'::json END)
                 WITH ORDINALITY AS o(key, value, ord)
            UNION ALL
            SELECT n.path || '[' || (a.ord - 1) || ']', a.value, a.ord
            FROM json_array_elements(CASE WHEN n.kind = 'array' THEN n.value ELSE '[]'::json END)
                 WITH ORDINALITY AS a(value, ord)
        ) c(path, value, ord)
        WHERE n.kind IN ('object', 'array')
    )
    SELECT n.path, k.key
    FROM node n
    CROSS JOIN LATERAL json_object_keys(n.value) AS k(key)
    WHERE n.kind = 'object'
    GROUP BY n.place, n.path, k.key
    HAVING count(*) > 1
    ORDER BY n.place, k.key
    LIMIT 1
$$;

-- The number of keys of all objects of a valid JSON text, at every depth:
-- the colons left once every string is removed (outside strings JSON uses
-- ':' only between a key and its value). One pass of two regular
-- expressions, a few microseconds for small metadata.
CREATE OR REPLACE FUNCTION ledger._json_key_count(p_text text)
RETURNS integer
LANGUAGE sql IMMUTABLE
AS $$
    SELECT octet_length(r) - octet_length(replace(r, ':', ''))
    FROM (SELECT regexp_replace(p_text, '"(?:[^"\\]|\\.)*"', '', 'g') AS r) s
$$;

-- Whether a JSON text without \u escapes holds as many colons as its jsonb
-- form printed back: then no key was dropped, so no object repeats a key.
-- Every colon of either text is a key's or a string's; jsonb keeps every
-- string but those of a dropped duplicate, and prints no colon of its own
-- (only a \u003a escape of the original could turn into one, hence the
-- condition). Plain string functions, no regular expression: a large
-- batch costs little more than its cast to jsonb.
CREATE OR REPLACE FUNCTION ledger._json_no_key_dropped(p_text text, p_json jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
    SELECT strpos(p_text, '\u') = 0
       AND octet_length(p_text) - octet_length(replace(p_text, ':', ''))
           = octet_length(j) - octet_length(replace(j, ':', ''))
    FROM (SELECT p_json::text AS j) s
$$;

-- Guarantees: raises LG007 (reason 'duplicate key', naming the key and the
-- jsonpath of its object) when an object of the JSON text p_text (p_json is
-- the same text as jsonb) repeats a key at any depth: a reader that keeps
-- the first of two keys (a proxy, a log) would see another request than the
-- ledger, which would keep the last. jsonb keeps one key of each name, so
-- equal colon counts (ledger._json_no_key_dropped, the cheap test) or equal
-- key counts (ledger._json_key_count, when the text has \u escapes) prove
-- there is no duplicate; only otherwise is every object read, to name it. With p_items, p_text is a
-- batch (a JSON array of items): the error names the item ("batch item
-- <index>:", "index" in the DETAIL) and the path in it.
DROP FUNCTION IF EXISTS ledger._require_unique_keys(text, text, boolean);
CREATE OR REPLACE FUNCTION ledger._require_unique_keys(
    p_field text, p_text text, p_json jsonb, p_items boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_dup   record;
    v_index integer;
    v_path  text;
BEGIN
    IF ledger._json_no_key_dropped(p_text, p_json)
       OR ledger._json_key_count(p_text) = ledger._json_key_count(p_json::text) THEN
        RETURN;
    END IF;
    SELECT d.path, d.key INTO v_dup FROM ledger._json_duplicate_key(p_text::json) d;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    v_path := v_dup.path;
    IF p_items THEN
        v_index := substring(v_path FROM '^\$\[([0-9]+)\]')::integer;
    END IF;
    IF v_index IS NOT NULL THEN
        v_path := '$' || substr(v_path, length(format('$[%s]', v_index)) + 1);
        RAISE EXCEPTION 'batch item %: invalid argument: duplicate key % in the item (in the object at %)',
                v_index, to_json(v_dup.key)::text, v_path
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', p_field, 'reason', 'duplicate key', 'key', v_dup.key,
                                             'path', v_path, 'index', v_index)::text,
                  HINT = 'A key may appear once in each JSON object.';
    END IF;
    RAISE EXCEPTION 'invalid argument: duplicate key % in % (in the object at %)',
            to_json(v_dup.key)::text, p_field, v_path
        USING ERRCODE = 'LG007',
              DETAIL = json_build_object('field', p_field, 'reason', 'duplicate key', 'key', v_dup.key,
                                         'path', v_path)::text,
              HINT = 'A key may appear once in each JSON object.';
END
$$;

-- Guarantees: ledger._metadata's check of metadata other than '{}'.
CREATE OR REPLACE FUNCTION ledger._parse_metadata(p_metadata text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_json   jsonb;
    v_state  text;
    v_msg    text;
    v_detail text;
BEGIN
    IF octet_length(p_metadata) > 65536 THEN
        RAISE EXCEPTION 'invalid argument: metadata is larger than 64 KiB'
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'metadata', 'reason', 'too large',
                                             'max_bytes', 65536)::text;
    END IF;
    BEGIN
        v_json := p_metadata::jsonb;
    EXCEPTION WHEN data_exception OR statement_too_complex THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL;
        PERFORM ledger._invalid_json('metadata', p_metadata, v_state, v_msg, v_detail);
    END;
    IF jsonb_typeof(v_json) <> 'object' THEN
        RAISE EXCEPTION 'invalid argument: metadata must be a JSON object, not %', jsonb_typeof(v_json)
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'metadata', 'reason', 'not an object')::text;
    END IF;
    PERFORM ledger._require_unique_keys('metadata', p_metadata, v_json);
    RETURN v_json;
END
$$;

-- Guarantees: the metadata as a jsonb object, or LG007 for text that is not
-- JSON, JSON that is not an object, an object that repeats a key at any
-- depth, text the database cannot store (\u0000, a lone surrogate escape, a
-- number beyond numeric) or more than 64 KiB (ledger._invalid_json words
-- each reason). Metadata arrives as text precisely so that such input
-- reaches this check instead of failing with a PostgreSQL error. Plain SQL
-- for the usual empty object (it inlines); anything else is parsed by
-- ledger._parse_metadata.
CREATE OR REPLACE FUNCTION ledger._metadata(p_metadata text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN p_metadata IS NULL OR p_metadata = '{}' THEN '{}'::jsonb
                ELSE ledger._parse_metadata(p_metadata) END
$$;

-- Guarantees: the fingerprint of a request (function name and parameters as
-- given), stored beside its idempotency key.
CREATE OR REPLACE FUNCTION ledger._fingerprint(p_request jsonb)
RETURNS uuid
LANGUAGE sql IMMUTABLE
AS $$ SELECT md5(p_request::text)::uuid $$;

-- Every EXISTS and PERFORM over a table selects a column (`SELECT 1`): Citus
-- cannot run a zero-column query that spans shards.

-- Idempotency keys belong to (owner, app): every request of a key takes that
-- owner's account row lock before it checks the key, so the row lock orders
-- them and no advisory key lock is needed any more.
DROP FUNCTION IF EXISTS ledger._lock_key(text, text);

-- Guarantees: raises LG005: the key of the app names another request.
CREATE OR REPLACE FUNCTION ledger._key_conflict(p_app text, p_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    RAISE EXCEPTION 'idempotency key % of app % was already used for a different request', p_key, p_app
        USING ERRCODE = 'LG005',
              DETAIL = json_build_object('app', p_app, 'idempotency_key', p_key)::text,
              HINT = 'Use a new key for a new request; repeat a request with its original parameters to replay it.';
END
$$;

-- Guarantees: raises LG005 when a key was already used for another request.
CREATE OR REPLACE FUNCTION ledger._require_same_request(
    p_app text, p_key text, p_stored uuid, p_given uuid)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_stored IS DISTINCT FROM p_given THEN
        PERFORM ledger._key_conflict(p_app, p_key);
    END IF;
END
$$;

-- The role that wrote a row: the role set with SET ROLE, else the login role
-- (inside SECURITY DEFINER functions current_user is the owner, not the caller).
-- A function of schema ledger_shard that Citus runs on the owner's worker
-- runs there in a session of ledger_schema_owner, the role it was reached
-- as: it sets ledger.writer to the writer its caller passed from the
-- coordinator, and that names the writer. Only in a session of the schema
-- owner, which no caller can open; anywhere else ledger.writer is ignored.
CREATE OR REPLACE FUNCTION ledger._writer()
RETURNS text
LANGUAGE sql STABLE
AS $$ SELECT CASE WHEN session_user = 'ledger_schema_owner'
                       AND current_setting('ledger.writer', true) <> '' THEN current_setting('ledger.writer', true)
                  WHEN current_setting('role') = 'none' THEN session_user::text
                  ELSE current_setting('role') END $$;
