-- Credit grants: every credit is a lot (a grant) that may expire and has a
-- spending priority; every debit records which grants it spent.
--
--   operations  + expires_after   a credit's grant expires this long after it
--                                 is made (NULL: never)
--               + grant_priority  lower is spent first (default 50)
--   accounts    + next_expiry     the soonest expires_at among the owner's
--                                 grants that may still hold credits (NULL:
--                                 none expires). A hint that may be early,
--                                 never late: a write or a read that finds it
--                                 at or before its clock looks at the grants.
--               + grants_since_seq every entry of the owner after this seq has
--                                 its grant rows (0 for owners made after
--                                 this migration); verify() checks from there.
--   grants                        one row per grant (per owner)
--   grant_spending                every change of a grant's remaining after it
--                                 was made: what a debit took (negative), what
--                                 a reversal gave back (positive), what an
--                                 EXPIRE or VOID entry removed.
--
-- A ledger migrated from an earlier release gets one never-expiring grant per
-- owner for its balance (entry_id NULL, operation OPENING_BALANCE); the
-- debits written before it have no spending rows.
-- depends: 0013_owner_scoped

ALTER TABLE ledger.operations
    ADD COLUMN expires_after interval
        CONSTRAINT operations_expires_after_valid
        CHECK (expires_after > interval '0' AND expires_after <= interval '100 years'),
    ADD COLUMN grant_priority integer NOT NULL DEFAULT 50
        CONSTRAINT operations_grant_priority_range CHECK (grant_priority BETWEEN 0 AND 1000),
    ADD CONSTRAINT operations_expiry_on_credits CHECK (expires_after IS NULL OR direction = 'credit');

ALTER TABLE ledger.accounts
    ADD COLUMN next_expiry timestamptz,
    ADD COLUMN grants_since_seq bigint NOT NULL DEFAULT 0
        CONSTRAINT accounts_grants_since_seq_non_negative CHECK (grants_since_seq >= 0);

CREATE TABLE ledger.grants (
    owner_id        text NOT NULL,
    grant_id        bigint GENERATED ALWAYS AS IDENTITY,
    entry_id        bigint,
    seq             bigint NOT NULL CONSTRAINT grants_seq_non_negative CHECK (seq >= 0),
    app             text NOT NULL,
    operation       text NOT NULL,
    amount          bigint NOT NULL CONSTRAINT grants_amount_positive CHECK (amount > 0),
    remaining       bigint NOT NULL,
    priority        integer NOT NULL CONSTRAINT grants_priority_range CHECK (priority BETWEEN 0 AND 1000),
    expires_at      timestamptz,
    status          text NOT NULL DEFAULT 'active'
                    CONSTRAINT grants_status_valid CHECK (status IN ('active', 'expired', 'voided')),
    created_at      timestamptz NOT NULL,
    closed_at       timestamptz,
    source_owner_id text,
    source_grant_id bigint,
    CONSTRAINT grants_pkey PRIMARY KEY (owner_id, grant_id),
    CONSTRAINT grants_remaining_within_amount CHECK (remaining BETWEEN 0 AND amount),
    CONSTRAINT grants_closed_empty CHECK (status = 'active' OR (remaining = 0 AND closed_at IS NOT NULL))
);
-- Spending order of the grants that can still be spent.
CREATE INDEX grants_spending_order ON ledger.grants (owner_id, priority, expires_at, seq, grant_id)
    WHERE status = 'active' AND remaining > 0;
-- The grants an entry made (a reversal of a credit takes them back).
CREATE INDEX grants_entry ON ledger.grants (owner_id, entry_id) WHERE entry_id IS NOT NULL;
-- A lookup by grant_id alone (void_grant without owner_id).
CREATE INDEX grants_grant_id ON ledger.grants (grant_id);

CREATE TABLE ledger.grant_spending (
    owner_id text NOT NULL,
    entry_id bigint NOT NULL,
    grant_id bigint NOT NULL,
    seq      bigint NOT NULL,   -- the entry's seq
    amount   bigint NOT NULL CONSTRAINT grant_spending_amount_non_zero CHECK (amount <> 0),
    CONSTRAINT grant_spending_pkey PRIMARY KEY (owner_id, entry_id, grant_id)
);
CREATE INDEX grant_spending_grant ON ledger.grant_spending (owner_id, grant_id, seq);

-- Owners that have grants with an expiry (expire_grants finds them here).
CREATE INDEX accounts_next_expiry ON ledger.accounts (next_expiry) WHERE next_expiry IS NOT NULL;

-- On a ledger already distributed on Citus the new per-owner tables join the
-- owners' shards before their foreign keys are made (Citus refuses a key
-- from a plain table to a distributed one). On plain PostgreSQL this does
-- nothing; a fresh Citus database is distributed after all migrations.
DO $citus$
DECLARE
    distributed boolean := false;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p
                                WHERE p.logicalrelid = to_regclass(''ledger.accounts''))'
        INTO distributed;
    END IF;
    IF distributed THEN
        PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);  -- the triggers below
        EXECUTE 'SELECT create_distributed_table(''ledger.grants'', ''owner_id'', colocate_with := ''ledger.accounts'')';
        EXECUTE 'SELECT create_distributed_table(''ledger.grant_spending'', ''owner_id'', colocate_with := ''ledger.accounts'')';
    END IF;
END
$citus$;

ALTER TABLE ledger.grants
    ADD CONSTRAINT grants_entry_fk FOREIGN KEY (owner_id, entry_id) REFERENCES ledger.entries (owner_id, entry_id);
ALTER TABLE ledger.grant_spending
    ADD CONSTRAINT grant_spending_entry_fk FOREIGN KEY (owner_id, entry_id)
        REFERENCES ledger.entries (owner_id, entry_id),
    ADD CONSTRAINT grant_spending_grant_fk FOREIGN KEY (owner_id, grant_id)
        REFERENCES ledger.grants (owner_id, grant_id);

-- Grants and their spending are records, like the journal: no UPDATE of a
-- spending row, no DELETE or TRUNCATE of either (grants change only their
-- remaining, status and closed_at, under the owner's lock, in the functions).
CREATE TRIGGER grant_spending_append_only
    BEFORE UPDATE OR DELETE ON ledger.grant_spending
    FOR EACH ROW EXECUTE FUNCTION ledger.refuse_entry_change();
CREATE TRIGGER grant_spending_no_truncate
    BEFORE TRUNCATE ON ledger.grant_spending
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_entry_change();
CREATE TRIGGER grants_no_delete
    BEFORE DELETE ON ledger.grants
    FOR EACH ROW EXECUTE FUNCTION ledger.refuse_entry_change();
CREATE TRIGGER grants_no_truncate
    BEFORE TRUNCATE ON ledger.grants
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_entry_change();

ALTER TABLE ledger.grants OWNER TO ledger_schema_owner;
ALTER TABLE ledger.grant_spending OWNER TO ledger_schema_owner;

-- The system operations of grants, and the example of an expiring credit.
INSERT INTO ledger.operations
    (app, operation, direction, default_amount, min_amount, max_amount, caller_sets_amount, limit_per, is_system,
     description, expires_after, grant_priority)
VALUES
    ('core', 'EXPIRE', 'debit', NULL, 1, NULL, true, NULL, true,
     'What was left of a grant at its expiry, written by the ledger', NULL, 50),
    ('core', 'VOID', 'debit', NULL, 1, NULL, true, NULL, true,
     'What was left of a grant its app voided (ledger.void_grant())', NULL, 50),
    ('core', 'OPENING_BALANCE', 'credit', NULL, 1, NULL, true, NULL, true,
     'The grant made for a balance that existed before grants (never written as an entry)', NULL, 50),
    ('core', 'PROMO_CREDIT', 'credit', NULL, 1, 1000000, true, NULL, false,
     'Promotional credits: spent before others, expire after 30 days', interval '30 days', 10);

-- Credits that existed before grants: one never-expiring grant per owner.
INSERT INTO ledger.grants (owner_id, entry_id, seq, app, operation, amount, remaining, priority, expires_at,
                           created_at)
SELECT a.owner_id, NULL, a.last_seq, 'core', 'OPENING_BALANCE', a.balance, a.balance, 50, NULL,
       pg_catalog.clock_timestamp()
FROM ledger.accounts a
WHERE a.balance > 0;
UPDATE ledger.accounts SET grants_since_seq = last_seq WHERE last_seq > 0;

CREATE TYPE ledger.grant_row AS (
    grant_id   bigint,
    entry_id   bigint,
    owner_id   text,
    app        text,
    operation  text,
    amount     bigint,
    remaining  bigint,
    priority   integer,
    expires_at timestamptz,
    status     text,
    created_at timestamptz
);
CREATE TYPE ledger.spending_row AS (
    owner_id   text,
    entry_id   bigint,
    grant_id   bigint,
    seq        bigint,
    operation  text,
    amount     bigint,
    created_at timestamptz
);
ALTER TYPE ledger.report_row ADD ATTRIBUTE expired bigint, ADD ATTRIBUTE voided bigint;
ALTER TYPE ledger.grant_row OWNER TO ledger_schema_owner;
ALTER TYPE ledger.spending_row OWNER TO ledger_schema_owner;
