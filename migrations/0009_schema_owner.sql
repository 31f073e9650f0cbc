-- The table owner becomes a role nobody acts as. A table's owner may ALTER
-- it, so whoever could act as the owner could DISABLE the append-only
-- triggers of ledger.entries and then edit the journal. Until now that was
-- ledger_owner, the role operators are given to define apps and operations.
--
--   ledger_schema_owner  owns the schemas ledger and example_app and every
--                        table, sequence, type and function in them; the
--                        SECURITY DEFINER functions run as it. NOLOGIN, and
--                        no app or operator role is a member of it: only a
--                        superuser, or the login that runs migrations, acts
--                        as it.
--   ledger_owner         keeps what an operator needs: define_app,
--                        define_operation, the API key functions and the
--                        reads (sql/90_grants.sql). It owns nothing.
--
-- Roles are cluster-wide: another database on the same server may already
-- have made it, so the CREATE ROLE is guarded.
-- depends: 0008_account_open_holds

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ledger_schema_owner') THEN
        CREATE ROLE ledger_schema_owner NOLOGIN;
    END IF;
    -- A migrating user that is not a superuser must be able to act as the new
    -- owner (to hand it the objects now and to load sql/ as it afterwards).
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
       AND NOT pg_catalog.pg_has_role(current_user, 'ledger_schema_owner', 'MEMBER') THEN
        BEGIN
            EXECUTE pg_catalog.format('GRANT ledger_schema_owner TO %I', current_user);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'the migrating user % must be a superuser or a member of ledger_schema_owner', current_user
                USING ERRCODE = 'insufficient_privilege',
                      HINT = pg_catalog.format(
                          'Run the migrations as a superuser, or have one run: GRANT ledger_schema_owner TO %I;',
                          current_user);
        END;
    END IF;
END
$roles$;

-- Everything in the ledger's schemas moves to the new owner, whoever owned
-- it (identity sequences follow their tables; a table's row type follows
-- its table).
DO $move$
DECLARE
    r record;
BEGIN
    -- Names below are printed schema-qualified whatever the session's path.
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog', true);
    FOR r IN
        SELECT n.nspname FROM pg_catalog.pg_namespace n
        WHERE n.nspname IN ('ledger', 'example_app')
    LOOP
        EXECUTE pg_catalog.format('ALTER SCHEMA %I OWNER TO ledger_schema_owner', r.nspname);
    END LOOP;
    FOR r IN
        SELECT c.oid::regclass::text AS name,
               CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                              WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END AS kind
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('ledger', 'example_app')
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
          AND NOT (c.relkind = 'S' AND EXISTS (
                  SELECT FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype IN ('a', 'i')))
    LOOP
        EXECUTE pg_catalog.format('ALTER %s %s OWNER TO ledger_schema_owner', r.kind, r.name);
    END LOOP;
    FOR r IN
        SELECT t.oid::regtype::text AS name, t.typtype
        FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname IN ('ledger', 'example_app')
          AND t.typelem = 0 AND t.typtype IN ('c', 'd', 'e', 'r')
          AND (t.typtype <> 'c' OR (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) = 'c')
    LOOP
        EXECUTE pg_catalog.format('ALTER %s %s OWNER TO ledger_schema_owner',
                                  CASE r.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, r.name);
    END LOOP;
    FOR r IN
        SELECT p.oid::regprocedure::text AS name
        FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname IN ('ledger', 'example_app')
    LOOP
        EXECUTE pg_catalog.format('ALTER ROUTINE %s OWNER TO ledger_schema_owner', r.name);
    END LOOP;
END
$move$;

-- ledger_owner no longer owns the schema: it keeps using it.
GRANT USAGE ON SCHEMA ledger TO ledger_owner;

-- API keys get a scope: 'app' keys act for their app and read other apps'
-- entries without their metadata and idempotency keys; 'audit' keys read
-- everything and write nothing (the HTTP layer enforces both).
ALTER TABLE ledger.api_keys
    ADD COLUMN scope text NOT NULL DEFAULT 'app'
        CONSTRAINT api_keys_scope_valid CHECK (scope IN ('app', 'audit'));
ALTER TYPE ledger.api_key_info ADD ATTRIBUTE scope text;
