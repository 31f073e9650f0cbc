-- The ledger on Citus (distributed PostgreSQL): everything Citus-specific
-- that `ledger migrate` does, in one place. ledger_py/migrate.py runs this
-- file only on a database where the citus extension exists; it defines
-- functions in pg_temp (this session only, never propagated to the workers)
-- and calls them, as the migrating superuser:
--
--   pg_temp.ledger_schema_owner_login()    before the migrations, committed
--                                          on its own (the workers must see
--                                          it before any function is made)
--   pg_temp.ledger_distribute_tables()     before sql/ is loaded
--   pg_temp.ledger_distribute_functions()  after it is loaded
--
-- the last two each in a transaction of its own, with
-- citus.multi_shard_modify_mode = 'sequential' (both call a fourth,
-- pg_temp.ledger_undistribute_callable_functions()).
--
-- All of them are idempotent: a second migrate finds everything in place and
-- changes nothing. On plain PostgreSQL none of this runs; the tables,
-- constraints and functions are the same.
--
-- What becomes what (docs/CITUS.md, "How migrate distributes"):
--   * every table of schema ledger with an owner_id column (accounts,
--     entries, holds and any later per-owner table) is distributed by
--     owner_id, colocated with ledger.accounts: one owner's rows of every
--     table live in one shard on one worker;
--   * ledger.apps, ledger.operations, ledger.api_keys, ledger.balance_alerts
--     are reference tables (a copy on every node);
--   * ledger.event_feed stays a plain table on the coordinator;
--   * the example app's tables (schema example_app) are Citus local tables:
--     they stay on the coordinator, in Citus's metadata;
--   * the functions of schema ledger_shard (post_entry, create_hold and
--     grant_credits as they run on the owner's shard) are distributed by
--     owner_id, colocated with ledger.accounts, with force_delegation: the
--     call their entry point in schema ledger makes runs whole on the
--     owner's worker. Nothing else is distributed by an argument: Citus
--     12.1 crashes the coordinator's backend when a distributed function is
--     called with a NULL distribution argument or from a subquery, so no
--     caller may name one (no USAGE on ledger_shard for any role but its
--     owner; docs/CITUS.md, "A distributed function crashes Citus 12.1").
--
-- The schema owner and the workers. Citus reaches the workers as the role
-- that runs a statement, and the SECURITY DEFINER functions run as
-- ledger_schema_owner (NOLOGIN on plain PostgreSQL). On Citus that role gets
-- LOGIN and a random password that only the cluster knows: it is written to
-- pg_dist_authinfo (readable by superusers only), which Citus uses for its
-- own connections between nodes, and is never printed. pg_hba.conf must
-- accept ledger_schema_owner from the cluster's nodes only (README,
-- "Scaling out on Citus").

CREATE OR REPLACE FUNCTION pg_temp.ledger_schema_owner_login() RETURNS boolean
LANGUAGE plpgsql AS $distribute$
DECLARE
    secret text;
    changed boolean := false;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog', true);
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'ledger_schema_owner') THEN
        CREATE ROLE ledger_schema_owner NOLOGIN;   -- as migrations/0009 makes it
    END IF;
    SELECT substr(a.authinfo, length('password=') + 1) INTO secret
    FROM pg_dist_authinfo a
    WHERE a.rolename = 'ledger_schema_owner' AND a.nodeid = 0 AND a.authinfo LIKE 'password=%';
    IF secret IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles
                                     WHERE rolname = 'ledger_schema_owner' AND rolcanlogin) THEN
        secret := pg_catalog.replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
        EXECUTE pg_catalog.format('ALTER ROLE ledger_schema_owner LOGIN PASSWORD %L', secret);
        DELETE FROM pg_dist_authinfo WHERE rolename = 'ledger_schema_owner';
        INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo)
        VALUES (0, 'ledger_schema_owner', 'password=' || secret);
        changed := true;
    END IF;
    RETURN changed;
END
$distribute$;


CREATE OR REPLACE FUNCTION pg_temp.ledger_distribute_tables() RETURNS boolean
LANGUAGE plpgsql AS $distribute$
DECLARE
    reference_tables constant regclass[] :=
        ARRAY['ledger.apps', 'ledger.operations', 'ledger.api_keys', 'ledger.balance_alerts']::regclass[];
    -- Tables with an owner_id that stay whole on the coordinator: the event
    -- feed is read in one order across all owners, and a reader must see a
    -- relay's copy whole (one node's commit).
    coordinator_tables constant text[] := ARRAY['event_feed'];
    per_owner regclass[];
    local_tables regclass[];
    todo_distributed regclass[];
    todo_reference regclass[];
    todo_local regclass[];
    targets regclass[];
    r record;
    failed text;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog', true);

    -- 0. The workers connect to each other too (a call delegated to one
    -- worker that reaches another owner's shard): every worker gets the
    -- schema owner's pg_dist_authinfo row, a worker added since the last
    -- migrate included. (Here, not in ledger_schema_owner_login(): the
    -- role must be committed on the workers first.)
    SELECT string_agg(w.nodename || ':' || w.nodeport || ': ' || w.result, '; ') INTO failed
    FROM run_command_on_workers((
        SELECT format('DELETE FROM pg_dist_authinfo WHERE rolename = %L;'
                      ' INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) VALUES (0, %L, %L)',
                      'ledger_schema_owner', 'ledger_schema_owner', a.authinfo)
        FROM pg_dist_authinfo a WHERE a.rolename = 'ledger_schema_owner' AND a.nodeid = 0)) AS w
    WHERE NOT w.success;
    IF failed IS NOT NULL THEN
        RAISE EXCEPTION 'cannot give the workers the schema owner''s password: %', failed;
    END IF;

    -- 0b. No function outside schema ledger_shard keeps a distribution
    -- argument (an earlier release distributed ledger.post_entry and the
    -- other public single-owner functions by owner_id): cleared before sql/
    -- loads their new definitions, which must not be delegated.
    PERFORM pg_temp.ledger_undistribute_callable_functions();

    -- 1. What is still to do.
    SELECT coalesce(array_agg(c.oid ORDER BY c.oid <> 'ledger.accounts'::regclass, c.relname), '{}')
    INTO per_owner
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'ledger' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
      AND NOT (c.relname = ANY (coordinator_tables))
      AND EXISTS (SELECT 1 FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attname = 'owner_id' AND NOT a.attisdropped);
    SELECT coalesce(array_agg(c.oid ORDER BY c.relname), '{}')
    INTO local_tables
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'example_app' AND c.relkind IN ('r', 'p') AND NOT c.relispartition;

    SELECT coalesce(array_agg(t ORDER BY o), '{}') INTO todo_distributed
    FROM unnest(per_owner) WITH ORDINALITY AS u(t, o)
    WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = u.t);
    SELECT coalesce(array_agg(t ORDER BY o), '{}') INTO todo_reference
    FROM unnest(reference_tables) WITH ORDINALITY AS u(t, o)
    WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = u.t);
    SELECT coalesce(array_agg(t ORDER BY o), '{}') INTO todo_local
    FROM unnest(local_tables) WITH ORDINALITY AS u(t, o)
    WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = u.t);

    IF cardinality(todo_distributed) + cardinality(todo_reference) + cardinality(todo_local) = 0 THEN
        RETURN false;
    END IF;
    targets := todo_distributed || todo_reference || todo_local;

    -- 2. Out of the way while the tables change hands, put back at the end:
    -- the foreign keys from or to the tables that change (Citus refuses
    -- some orders, and a foreign key to a reference table would turn a
    -- plain table into a Citus local table), the triggers (Citus refuses to
    -- distribute a table that has any), and the functions whose signature
    -- names a table's row type (making a reference table rebinds them to
    -- the coordinator's shard); sql/ is then reloaded whole.
    -- (By name: making a reference or Citus local table renames the original
    -- relation to its shard's name and puts a new one under the old name.)
    CREATE TEMPORARY TABLE IF NOT EXISTS ledger_citus_saved (
        n serial, kind text, relation text, name text, definition text
    ) ON COMMIT DROP;
    TRUNCATE ledger_citus_saved;
    INSERT INTO ledger_citus_saved (kind, relation, name, definition)
    SELECT 'fk', k.conrelid::regclass::text, k.conname, pg_get_constraintdef(k.oid)
    FROM pg_constraint k
    WHERE k.contype = 'f' AND (k.conrelid = ANY (targets) OR k.confrelid = ANY (targets))
    ORDER BY k.conrelid, k.conname;
    INSERT INTO ledger_citus_saved (kind, relation, name, definition)
    SELECT 'trigger', t.tgrelid::regclass::text, t.tgname, pg_get_triggerdef(t.oid)
    FROM pg_trigger t
    WHERE NOT t.tgisinternal AND t.tgrelid = ANY (targets)
    ORDER BY t.tgrelid, t.tgname;
    FOR r IN SELECT * FROM ledger_citus_saved ORDER BY n LOOP
        IF r.kind = 'fk' THEN
            EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.relation, r.name);
        ELSE
            EXECUTE format('DROP TRIGGER %I ON %s', r.name, r.relation);
        END IF;
    END LOOP;
    FOR r IN
        SELECT DISTINCT p.oid::regprocedure AS routine
        FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        JOIN pg_type ty ON ty.typrelid = ANY (targets)
        WHERE n.nspname IN ('ledger', 'example_app')
          AND (p.prorettype = ty.oid OR ty.oid = ANY (p.proargtypes)
               OR ty.oid = ANY (coalesce(p.proallargtypes, '{}')))
    LOOP
        EXECUTE format('DROP ROUTINE %s', r.routine);
    END LOOP;

    -- 3. Distributed tables first, then reference tables (in this order the
    -- foreign keys that come back next are all accepted), then the example
    -- app's tables as Citus local tables.
    FOR i IN 1 .. cardinality(todo_distributed) LOOP
        IF todo_distributed[i] = 'ledger.accounts'::regclass THEN
            PERFORM create_distributed_table('ledger.accounts', 'owner_id');
        ELSE
            PERFORM create_distributed_table(todo_distributed[i], 'owner_id',
                                             colocate_with := 'ledger.accounts');
        END IF;
    END LOOP;
    FOR i IN 1 .. cardinality(todo_reference) LOOP
        PERFORM create_reference_table(todo_reference[i]);
    END LOOP;
    FOR i IN 1 .. cardinality(todo_local) LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = todo_local[i]) THEN
            PERFORM citus_add_local_table_to_metadata(todo_local[i]);
        END IF;
    END LOOP;

    -- 4. Back: foreign keys, then the triggers (they fire on the shards).
    PERFORM set_config('citus.enable_unsafe_triggers', 'on', true);
    FOR r IN SELECT * FROM ledger_citus_saved ORDER BY n LOOP
        IF r.kind = 'fk' THEN
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', r.relation, r.name, r.definition);
        ELSE
            EXECUTE r.definition;
        END IF;
    END LOOP;
    RETURN true;
END
$distribute$;


CREATE OR REPLACE FUNCTION pg_temp.ledger_distribute_functions() RETURNS integer
LANGUAGE plpgsql AS $distribute$
DECLARE
    r record;
    done integer := 0;
    users text;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog', true);
    -- No other function keeps a distribution argument (an earlier release
    -- distributed the public single-owner functions of schema ledger).
    PERFORM pg_temp.ledger_undistribute_callable_functions();
    -- The functions of schema ledger_shard, by owner_id, colocated with
    -- ledger.accounts. force_delegation: each is called from inside its
    -- entry point in schema ledger, where Citus delegates a call only with
    -- it; the delegated call then joins the caller's distributed
    -- transaction (a statement that fails later rolls it back on the
    -- worker too), in or out of a transaction block.
    FOR r IN
        SELECT p.oid::regprocedure AS routine
        FROM pg_proc p
        WHERE p.pronamespace = 'ledger_shard'::regnamespace AND p.prokind = 'f'
          AND NOT EXISTS (SELECT 1 FROM pg_dist_object d
                          WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                            AND d.distribution_argument_index IS NOT NULL AND d.force_delegation)
        ORDER BY 1::text
    LOOP
        PERFORM create_distributed_function(r.routine, 'owner_id', colocate_with := 'ledger.accounts',
                                            force_delegation := true);
        done := done + 1;
    END LOOP;
    -- What makes this safe (docs/CITUS.md, "A distributed function crashes
    -- Citus 12.1"): no role but the schema owner may use ledger_shard.
    SELECT string_agg(DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, ', ')
    INTO users
    FROM pg_namespace n, aclexplode(n.nspacl) a
    WHERE n.nspname = 'ledger_shard' AND a.privilege_type = 'USAGE' AND a.grantee <> n.nspowner;
    IF users IS NOT NULL THEN
        RAISE EXCEPTION 'schema ledger_shard must be usable by its owner alone; USAGE is granted to %', users
            USING HINT = 'REVOKE USAGE ON SCHEMA ledger_shard FROM ' || users || ';';
    END IF;
    RETURN done;
END
$distribute$;


-- Guarantees: no function outside schema ledger_shard has a distribution
-- argument (each such function stays a distributed object, without one:
-- create_distributed_function without an argument clears it on every
-- node). Returns how many it cleared. Run before sql/ is loaded too, so
-- that the public functions an earlier release distributed are plain
-- functions again before their new definitions arrive.
CREATE OR REPLACE FUNCTION pg_temp.ledger_undistribute_callable_functions() RETURNS integer
LANGUAGE plpgsql AS $distribute$
DECLARE
    r record;
    done integer := 0;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog', true);
    FOR r IN
        SELECT p.oid::regprocedure AS routine
        FROM pg_dist_object d
        JOIN pg_proc p ON p.oid = d.objid
        WHERE d.classid = 'pg_proc'::regclass AND d.distribution_argument_index IS NOT NULL
          AND p.pronamespace <> 'ledger_shard'::regnamespace
        ORDER BY 1::text
    LOOP
        PERFORM create_distributed_function(r.routine);
        done := done + 1;
    END LOOP;
    RETURN done;
END
$distribute$;
