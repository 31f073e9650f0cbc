-- Roles are cluster-wide: another database on the same server may already
-- have made them, so each CREATE ROLE is guarded.
--   ledger_owner  owns the schema, tables and functions; alone defines apps/operations
--   ledger_app    services log in as members: EXECUTE on the API, no table writes
--   ledger_reader reads tables, balances, history and reports; writes nothing
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ledger_owner') THEN
        CREATE ROLE ledger_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ledger_app') THEN
        CREATE ROLE ledger_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ledger_reader') THEN
        CREATE ROLE ledger_reader NOLOGIN;
    END IF;
    -- A migrating user that is not a superuser must be able to act as the owner.
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
       AND NOT pg_catalog.pg_has_role(current_user, 'ledger_owner', 'MEMBER') THEN
        EXECUTE pg_catalog.format('GRANT ledger_owner TO %I', current_user);
    END IF;
END
$roles$;

CREATE SCHEMA ledger AUTHORIZATION ledger_owner;
REVOKE ALL ON SCHEMA ledger FROM PUBLIC;
GRANT USAGE ON SCHEMA ledger TO ledger_app, ledger_reader;
