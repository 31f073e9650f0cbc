-- Registering apps and their operations. Only ledger_owner may call these
-- (no EXECUTE for ledger_app or ledger_reader): an app's operations arrive
-- through a migration, not at run time.

-- Guarantees: the app exists afterwards (idempotent); a description given
-- replaces the stored one. LG007 for a malformed name.
CREATE OR REPLACE FUNCTION ledger.define_app(app text, description text DEFAULT NULL)
RETURNS ledger.apps
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_app ledger.apps;
BEGIN
    PERFORM ledger._require_id('app', define_app.app);
    IF define_app.app !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid argument: app name % must be lowercase letters, digits and _', define_app.app
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'app', 'reason', 'format',
                                             'pattern', '^[a-z][a-z0-9_]{0,62}$')::text;
    END IF;
    INSERT INTO ledger.apps AS a (app, description) VALUES (define_app.app, define_app.description)
    ON CONFLICT ON CONSTRAINT apps_pkey DO UPDATE
        SET description = coalesce(excluded.description, a.description)
    RETURNING a.* INTO v_app;
    RETURN v_app;
END
$$;

-- Guarantees: registers or updates an operation of an app. Refuses (LG012)
-- to flip the direction of an operation that already has entries, and to
-- take a name another app owns (LG003). Bounds and defaults are checked by
-- the operations table's constraints, reported as LG006/LG007.
CREATE OR REPLACE FUNCTION ledger.define_operation(
    app                text,
    operation          text,
    direction          text,
    default_amount     bigint DEFAULT NULL,
    min_amount         bigint DEFAULT 1,
    max_amount         bigint DEFAULT NULL,
    caller_sets_amount boolean DEFAULT false,
    limit_per          text DEFAULT NULL,
    description        text DEFAULT NULL)
RETURNS ledger.operations
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_existing ledger.operations;
    v_op       ledger.operations;
    v_name     text;
BEGIN
    PERFORM ledger._require_app(define_operation.app);
    PERFORM ledger._require_id('operation', define_operation.operation);
    IF define_operation.operation !~ '^[A-Z][A-Z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid argument: operation name % must be uppercase letters, digits and _',
                define_operation.operation
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'operation', 'reason', 'format')::text;
    END IF;
    IF define_operation.direction IS NULL OR define_operation.direction NOT IN ('credit', 'debit') THEN
        RAISE EXCEPTION 'invalid argument: direction must be credit or debit'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'direction', 'reason', 'invalid')::text;
    END IF;
    IF define_operation.limit_per IS NOT NULL AND define_operation.limit_per NOT IN ('ever', 'day') THEN
        RAISE EXCEPTION 'invalid argument: limit_per must be NULL, ever or day'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'limit_per', 'reason', 'invalid')::text;
    END IF;

    SELECT o.* INTO v_existing FROM ledger.operations o
    WHERE o.operation = define_operation.operation FOR UPDATE;
    IF FOUND AND v_existing.app <> define_operation.app THEN
        RAISE EXCEPTION 'operation % belongs to app %', define_operation.operation, v_existing.app
            USING ERRCODE = 'LG003',
                  DETAIL = json_build_object('operation', define_operation.operation,
                                             'app', define_operation.app, 'operation_app', v_existing.app)::text;
    END IF;
    IF FOUND AND v_existing.is_system THEN
        RAISE EXCEPTION 'operation % is a system operation and cannot be redefined', define_operation.operation
            USING ERRCODE = 'LG003',
                  DETAIL = json_build_object('operation', define_operation.operation, 'system', true)::text;
    END IF;
    IF FOUND AND v_existing.direction <> define_operation.direction THEN
        PERFORM FROM ledger.entries e WHERE e.operation = define_operation.operation LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'operation % has entries: its direction cannot change from % to %',
                    define_operation.operation, v_existing.direction, define_operation.direction
                USING ERRCODE = 'LG012',
                      DETAIL = json_build_object('operation', define_operation.operation,
                                                 'direction', v_existing.direction)::text,
                      HINT = 'Define a new operation instead.';
        END IF;
    END IF;

    BEGIN
        INSERT INTO ledger.operations AS o
            (app, operation, direction, default_amount, min_amount, max_amount,
             caller_sets_amount, limit_per, description)
        VALUES
            (define_operation.app, define_operation.operation, define_operation.direction,
             define_operation.default_amount, coalesce(define_operation.min_amount, 1),
             define_operation.max_amount, coalesce(define_operation.caller_sets_amount, false),
             define_operation.limit_per, define_operation.description)
        ON CONFLICT ON CONSTRAINT operations_pkey DO UPDATE
            SET direction = excluded.direction,
                default_amount = excluded.default_amount,
                min_amount = excluded.min_amount,
                max_amount = excluded.max_amount,
                caller_sets_amount = excluded.caller_sets_amount,
                limit_per = excluded.limit_per,
                description = coalesce(excluded.description, o.description)
        RETURNING o.* INTO v_op;
    EXCEPTION WHEN check_violation THEN
        GET STACKED DIAGNOSTICS v_name = CONSTRAINT_NAME;
        RAISE EXCEPTION 'invalid amount rules for operation %: % is violated', define_operation.operation, v_name
            USING ERRCODE = 'LG006',
                  DETAIL = json_build_object('operation', define_operation.operation,
                                             'constraint', v_name, 'reason', 'bounds')::text,
                  HINT = 'Amounts are positive; default_amount lies within min_amount..max_amount; '
                         'an operation whose caller may not set the amount needs a default_amount.';
    END;
    RETURN v_op;
END
$$;

-- The operations an app may post (core's and its own), by name.
CREATE OR REPLACE FUNCTION ledger.list_operations(app text)
RETURNS SETOF ledger.operations
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ledger._require_app(list_operations.app);
    RETURN QUERY
        SELECT o.* FROM ledger.operations o
        WHERE ledger._usable_by(o, list_operations.app)
        ORDER BY o.operation;
END
$$;
