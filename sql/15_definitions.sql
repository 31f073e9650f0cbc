-- Registering apps and their operations. Only ledger_owner may call these
-- (no EXECUTE for ledger_app or ledger_reader): an app's operations arrive
-- through a migration, not at run time.

-- Guarantees: the name of the table constraint an error reports, as
-- migrations/ declare it. On Citus a row is checked on a shard (or on the
-- coordinator's placement of a reference table), whose constraints carry the
-- shard's id (apps_app_format_102104), and an error relayed from a worker
-- has no CONSTRAINT_NAME field, only the message ('... violates check
-- constraint "apps_app_format_102104"'). The ledger's constraint names never
-- end in digits: on plain PostgreSQL this returns p_name unchanged.
CREATE OR REPLACE FUNCTION ledger._declared_constraint(p_name text, p_message text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT regexp_replace(coalesce(nullif(p_name, ''), substring(p_message FROM 'constraint "([^"]+)"')),
                          '_[0-9]+$', '')
$$;

CREATE OR REPLACE FUNCTION ledger.define_app(app text, description text DEFAULT NULL)
RETURNS ledger.apps
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_app  ledger.apps;
    v_name text;
    v_message text;
BEGIN
    PERFORM ledger._require_id('app', define_app.app);
    -- The apps table's CHECK apps_app_format is the rule of a name: its
    -- violation is translated here, by the constraint's name.
    BEGIN
        INSERT INTO ledger.apps AS a (app, description) VALUES (define_app.app, define_app.description)
        ON CONFLICT ON CONSTRAINT apps_pkey DO UPDATE
            SET description = coalesce(excluded.description, a.description)
        RETURNING a.* INTO v_app;
    EXCEPTION WHEN check_violation THEN
        GET STACKED DIAGNOSTICS v_name = CONSTRAINT_NAME, v_message = MESSAGE_TEXT;
        v_name := ledger._declared_constraint(v_name, v_message);
        IF v_name IS DISTINCT FROM 'apps_app_format' THEN
            RAISE;
        END IF;
        RAISE EXCEPTION 'invalid argument: app name % must be lowercase letters, digits and _', define_app.app
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'app', 'reason', 'format', 'constraint', v_name)::text;
    END;
    RETURN v_app;
END
$$;
COMMENT ON FUNCTION ledger.define_app(text, text) IS $$
Registers an app or updates it: afterwards the app exists (idempotent). A
description given replaces the stored one; NULL keeps it. A name the
apps table's constraint apps_app_format refuses (lowercase letters, digits
and _, starting with a letter) is LG007, naming the constraint.$$;

-- Guarantees: raises LG012 when an operation that has entries would change
-- direction (p_existing is its row before the change, p_direction the new
-- direction); returns otherwise. Decided before the amount rules, so that
-- a definition that changes direction is refused for that first.
DROP FUNCTION IF EXISTS ledger._require_direction_unused(ledger.operations, text);  -- took a whole row before
CREATE OR REPLACE FUNCTION ledger._require_direction_unused(
    p_operation text, p_existing_direction text, p_direction text)
RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF p_existing_direction IS DISTINCT FROM p_direction
       AND EXISTS (SELECT 1 FROM ledger.entries e WHERE e.operation = p_operation) THEN
        RAISE EXCEPTION 'operation % has entries: its direction cannot change from % to %',
                p_operation, p_existing_direction, p_direction
            USING ERRCODE = 'LG012',
                  DETAIL = json_build_object('operation', p_operation,
                                             'direction', p_existing_direction)::text,
                  HINT = 'Define a new operation instead.';
    END IF;
END
$$;

-- It gained expires_after and grant_priority (trailing, with defaults).
DROP FUNCTION IF EXISTS ledger.define_operation(text, text, text, bigint, bigint, bigint, boolean, text, text);
CREATE OR REPLACE FUNCTION ledger.define_operation(
    app                text,
    operation          text,
    direction          text,
    default_amount     bigint DEFAULT NULL,
    min_amount         bigint DEFAULT 1,
    max_amount         bigint DEFAULT NULL,
    caller_sets_amount boolean DEFAULT false,
    limit_per          text DEFAULT NULL,
    description        text DEFAULT NULL,
    expires_after      interval DEFAULT NULL,
    grant_priority     integer DEFAULT 50)
RETURNS ledger.operations
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_existing ledger.operations;
    v_exists   boolean;
    v_op       ledger.operations;
    v_name     text;
    v_message  text;
    v_field    text;
BEGIN
    PERFORM ledger._require_app(define_operation.app);
    PERFORM ledger._require_id('operation', define_operation.operation);

    SELECT o.* INTO v_existing FROM ledger.operations o
    WHERE o.operation = define_operation.operation FOR UPDATE;
    v_exists := FOUND;
    IF v_exists AND v_existing.app <> define_operation.app THEN
        RAISE EXCEPTION 'operation % belongs to app %', define_operation.operation, v_existing.app
            USING ERRCODE = 'LG003',
                  DETAIL = json_build_object('operation', define_operation.operation,
                                             'app', define_operation.app, 'operation_app', v_existing.app)::text;
    END IF;
    IF v_exists AND v_existing.is_system THEN
        RAISE EXCEPTION 'operation % is a system operation and cannot be redefined', define_operation.operation
            USING ERRCODE = 'LG003',
                  DETAIL = json_build_object('operation', define_operation.operation, 'system', true)::text;
    END IF;

    -- The operations table's CHECK constraints are the rules of a definition
    -- (migrations/0002_core_tables.sql); a violation is translated by the
    -- constraint's name: a malformed name, direction or limit_per is LG007,
    -- broken amount rules are LG006.
    BEGIN
        INSERT INTO ledger.operations AS o
            (app, operation, direction, default_amount, min_amount, max_amount,
             caller_sets_amount, limit_per, description, expires_after, grant_priority)
        VALUES
            (define_operation.app, define_operation.operation, define_operation.direction,
             define_operation.default_amount, coalesce(define_operation.min_amount, 1),
             define_operation.max_amount, coalesce(define_operation.caller_sets_amount, false),
             define_operation.limit_per, define_operation.description, define_operation.expires_after,
             coalesce(define_operation.grant_priority, 50))
        ON CONFLICT ON CONSTRAINT operations_pkey DO UPDATE
            SET direction = excluded.direction,
                default_amount = excluded.default_amount,
                min_amount = excluded.min_amount,
                max_amount = excluded.max_amount,
                caller_sets_amount = excluded.caller_sets_amount,
                limit_per = excluded.limit_per,
                expires_after = excluded.expires_after,
                grant_priority = excluded.grant_priority,
                description = coalesce(excluded.description, o.description)
        RETURNING o.* INTO v_op;
    EXCEPTION WHEN check_violation THEN
        GET STACKED DIAGNOSTICS v_name = CONSTRAINT_NAME, v_message = MESSAGE_TEXT;
        v_name := ledger._declared_constraint(v_name, v_message);
        v_field := CASE v_name
                       WHEN 'operations_operation_format' THEN 'operation'
                       WHEN 'operations_direction_valid' THEN 'direction'
                       WHEN 'operations_direction_required' THEN 'direction'
                       WHEN 'operations_limit_per_valid' THEN 'limit_per'
                       WHEN 'operations_expires_after_valid' THEN 'expires_after'
                       WHEN 'operations_expiry_on_credits' THEN 'expires_after'
                       WHEN 'operations_grant_priority_range' THEN 'grant_priority'
                   END;
        IF v_field IS NOT NULL THEN
            RAISE EXCEPTION '%', CASE v_field
                    WHEN 'operation' THEN pg_catalog.format(
                        'invalid argument: operation name %s must be uppercase letters, digits and _',
                        define_operation.operation)
                    WHEN 'direction' THEN 'invalid argument: direction must be credit or debit'
                    WHEN 'expires_after' THEN 'invalid argument: expires_after is for credit operations, '
                                              'more than 0 and at most 100 years'
                    WHEN 'grant_priority' THEN 'invalid argument: grant_priority must be between 0 and 1000'
                    ELSE 'invalid argument: limit_per must be NULL, ever or day'
                END
                USING ERRCODE = 'LG007',
                      DETAIL = json_build_object('field', v_field,
                                                 'reason', CASE v_field WHEN 'operation' THEN 'format'
                                                                        ELSE 'invalid' END,
                                                 'constraint', v_name)::text;
        END IF;
        IF v_exists THEN
            PERFORM ledger._require_direction_unused(v_existing.operation, v_existing.direction, define_operation.direction);
        END IF;
        RAISE EXCEPTION 'invalid amount rules for operation %: % is violated', define_operation.operation, v_name
            USING ERRCODE = 'LG006',
                  DETAIL = json_build_object('operation', define_operation.operation,
                                             'constraint', v_name, 'reason', 'bounds')::text,
                  HINT = 'Amounts are positive; default_amount lies within min_amount..max_amount; '
                         'an operation whose caller may not set the amount needs a default_amount.';
    END;

    -- Decided after the write when the write succeeded (raising undoes the
    -- update with the statement), and before LG006 when it did not.
    IF v_exists THEN
        PERFORM ledger._require_direction_unused(v_existing.operation, v_existing.direction, v_op.direction);
    END IF;
    RETURN v_op;
END
$$;
COMMENT ON FUNCTION ledger.define_operation(text, text, text, bigint, bigint, bigint, boolean, text, text,
                                            interval, integer) IS $$
Registers an operation of an app or updates it, under a lock on the
operation's row. The operations table's constraints are the rules, and a
violation is reported by the constraint's name: the name is uppercase
letters, digits and _, direction is credit or debit, limit_per is NULL,
ever or day (LG007); amounts are positive, default_amount lies within
min_amount..max_amount, and an operation whose amount the caller may not
set has a default_amount (LG006); expires_after (how long a credit's grant
lasts, NULL never) is for credit operations, more than 0 and at most 100
years, and grant_priority (lower is spent first; NULL: 50) is 0 to 1000
(LG007). Refuses a name another app owns or a
system operation (LG003), and a change of direction once the operation has
entries (LG012). LG011 for an unknown app.$$;

CREATE OR REPLACE FUNCTION ledger.list_operations(app text)
RETURNS SETOF ledger.operations
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ledger._require_app(list_operations.app);
    RETURN QUERY
        SELECT o.* FROM ledger.operations o
        WHERE ledger._usable_by(o.is_system, o.app, list_operations.app)
        ORDER BY o.operation;
END
$$;
COMMENT ON FUNCTION ledger.list_operations(text) IS $$
The operations the app may post, by name: core's and its own, never a
system operation (TRANSFER_*, REVERSAL). LG011 for an unknown app.
Read-only.$$;
