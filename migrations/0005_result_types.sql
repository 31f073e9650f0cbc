-- Composite result types of the SQL API (section 2 of the design). Types
-- cannot be CREATE OR REPLACEd, so they live here; changing one is a new
-- migration and, for callers, a new function.
-- depends: 0004_example_app_operations

CREATE TYPE ledger.entry_result AS (
    entry_id   bigint,
    owner_id   text,
    app        text,
    operation  text,
    amount     bigint,
    balance    bigint,
    created_at timestamptz,
    replayed   boolean
);

CREATE TYPE ledger.balance_result AS (
    owner_id   text,
    balance    bigint,
    held       bigint,
    available  bigint,
    updated_at timestamptz
);

CREATE TYPE ledger.hold_result AS (
    hold_id    bigint,
    owner_id   text,
    app        text,
    operation  text,
    amount     bigint,
    status     text,
    expires_at timestamptz,
    replayed   boolean
);

CREATE TYPE ledger.transfer_result AS (
    transfer_id   bigint,
    from_entry_id bigint,
    to_entry_id   bigint,
    amount        bigint,
    from_balance  bigint,
    to_balance    bigint,
    replayed      boolean
);

CREATE TYPE ledger.report_row AS (
    app       text,
    operation text,
    entries   bigint,
    credited  bigint,
    debited   bigint,
    owners    bigint
);

CREATE TYPE ledger.verify_row AS (
    check_name text,
    owner_id   text,
    detail     text
);

ALTER TYPE ledger.entry_result OWNER TO ledger_owner;
ALTER TYPE ledger.balance_result OWNER TO ledger_owner;
ALTER TYPE ledger.hold_result OWNER TO ledger_owner;
ALTER TYPE ledger.transfer_result OWNER TO ledger_owner;
ALTER TYPE ledger.report_row OWNER TO ledger_owner;
ALTER TYPE ledger.verify_row OWNER TO ledger_owner;

-- Which sql/ files were loaded, so that migrate() re-applies only changed ones.
CREATE TABLE ledger.sql_files (
    file_name  text PRIMARY KEY,
    sha256     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
ALTER TABLE ledger.sql_files OWNER TO ledger_owner;
