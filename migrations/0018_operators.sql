-- The operators' console: people who correct the ledger by hand (grant
-- credits, void a grant, reverse an entry, release a hold) for any app, and
-- people who only look.
--
--   ledger_operator   EXECUTE on the operator functions of sql/85_operators.sql
--                     (and resend of a webhook delivery): each acts on any app's
--                     entries, holds and grants through the same internal write
--                     path as the app's own calls, and records who acted and why.
--                     People who correct the ledger from SQL, and the console's
--                     database login, are members.
--   ledger_console    the console's own bookkeeping: its users (password hashes,
--                     failed sign-ins) and the key that signs its session cookies.
--                     The web service's database login is a member of it, of
--                     ledger_reader (what a console page reads) and of
--                     ledger_operator (what an operator's action writes); the
--                     console runs each transaction under the one role the
--                     signed-in person's role allows (SET LOCAL ROLE).
--
--   operator_actions  one row per entry written or hold released by an operator
--                     function, in the same transaction: the person, the reason,
--                     the action and what it wrote. Per owner (distributed with
--                     the owner's other rows on Citus).
--   console_users     the console's sign-ins: name, role (operator | viewer),
--                     the password's hash (never the password), the count of
--                     failed attempts since the last success and when the last
--                     one failed (what slows down guessing).
--   verify_runs       each recorded run of verify(): when, by whom, how many
--                     findings and the first of them (the console's overview
--                     shows the latest; `record_verify()` runs and records one).
--   console_secret    one row: the key of the console's signed session cookies,
--                     the same for every worker and every restart.
--
-- Roles are cluster-wide: another database on the same server may already
-- have made them, so each CREATE ROLE is guarded.
-- depends: 0017_ledger_shard

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ledger_operator') THEN
        CREATE ROLE ledger_operator NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ledger_console') THEN
        CREATE ROLE ledger_console NOLOGIN;
    END IF;
END
$roles$;
GRANT USAGE ON SCHEMA ledger TO ledger_operator, ledger_console;

CREATE TABLE ledger.operator_actions (
    owner_id        text NOT NULL,
    action_id       bigint GENERATED ALWAYS AS IDENTITY,
    action          text NOT NULL
                    CONSTRAINT operator_actions_action_valid
                    CHECK (action IN ('grant_credits', 'void_grant', 'reverse_entry', 'release_hold')),
    operator        text NOT NULL,
    reason          text NOT NULL,
    app             text NOT NULL,
    entry_id        bigint,
    hold_id         bigint,
    grant_id        bigint,
    idempotency_key text NOT NULL,
    created_at      timestamptz NOT NULL,
    created_by      text NOT NULL,
    CONSTRAINT operator_actions_pkey PRIMARY KEY (owner_id, action_id),
    CONSTRAINT operator_actions_wrote_something CHECK (entry_id IS NOT NULL OR hold_id IS NOT NULL)
);
-- What the entry page and the owner page read: the action that wrote an entry
-- or released a hold.
CREATE INDEX operator_actions_entry ON ledger.operator_actions (owner_id, entry_id) WHERE entry_id IS NOT NULL;
CREATE INDEX operator_actions_hold ON ledger.operator_actions (owner_id, hold_id) WHERE hold_id IS NOT NULL;

CREATE TABLE ledger.console_users (
    name           text CONSTRAINT console_users_pkey PRIMARY KEY
                   CONSTRAINT console_users_name_valid CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$'),
    role           text NOT NULL CONSTRAINT console_users_role_valid CHECK (role IN ('operator', 'viewer')),
    password_hash  text NOT NULL CONSTRAINT console_users_password_hash_valid
                   CHECK (length(password_hash) BETWEEN 20 AND 1000),
    failed_count   integer NOT NULL DEFAULT 0,
    last_failed_at timestamptz,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);

CREATE TABLE ledger.console_secret (
    only_row boolean PRIMARY KEY DEFAULT true CONSTRAINT console_secret_one_row CHECK (only_row),
    secret   text NOT NULL
);
INSERT INTO ledger.console_secret (secret)
VALUES (replace(gen_random_uuid()::text || gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));

CREATE TABLE ledger.verify_runs (
    run_id      bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT verify_runs_pkey PRIMARY KEY,
    ran_at      timestamptz NOT NULL,
    duration_ms integer NOT NULL,
    findings    integer NOT NULL,
    sample      jsonb NOT NULL,
    ran_by      text NOT NULL
);

-- What the console's reads return.
CREATE TYPE ledger.operator_action AS (
    action_id       bigint,
    owner_id        text,
    action          text,
    operator        text,
    reason          text,
    app             text,
    entry_id        bigint,
    hold_id         bigint,
    grant_id        bigint,
    created_at      timestamptz
);

CREATE TYPE ledger.daily_activity AS (
    day      date,
    app      text,
    issued   bigint,
    spent    bigint,
    expired  bigint,
    held     bigint
);

CREATE TYPE ledger.busy_owner AS (
    owner_id      text,
    entries       bigint,
    last_entry_at timestamptz,
    balance       bigint
);

CREATE TYPE ledger.open_hold AS (
    hold_id     bigint,
    owner_id    text,
    app         text,
    operation   text,
    amount      bigint,
    created_at  timestamptz,
    expires_at  timestamptz,
    state       text
);

CREATE TYPE ledger.balance_point AS (
    at      timestamptz,
    balance bigint
);

CREATE TYPE ledger.history_entry AS (
    entry_id          bigint,
    seq               bigint,
    owner_id          text,
    app               text,
    operation         text,
    amount            bigint,
    balance           bigint,
    created_at        timestamptz,
    created_by        text,
    transfer_id       bigint,
    hold_id           bigint,
    reverses_entry_id bigint,
    reversed_by       bigint,
    operator          text,
    reason            text
);

CREATE TYPE ledger.verify_run AS (
    run_id      bigint,
    ran_at      timestamptz,
    duration_ms integer,
    findings    integer,
    sample      jsonb,
    ran_by      text
);

CREATE TYPE ledger.console_sign_in AS (
    name          text,
    role          text,
    password_hash text,
    wait_seconds  integer
);

CREATE TYPE ledger.console_user AS (
    name           text,
    role           text,
    failed_count   integer,
    last_failed_at timestamptz,
    created_at     timestamptz,
    updated_at     timestamptz
);

ALTER TABLE ledger.operator_actions OWNER TO ledger_schema_owner;
ALTER TABLE ledger.console_users OWNER TO ledger_schema_owner;
ALTER TABLE ledger.console_secret OWNER TO ledger_schema_owner;
ALTER TABLE ledger.verify_runs OWNER TO ledger_schema_owner;
ALTER TYPE ledger.verify_run OWNER TO ledger_schema_owner;
ALTER TYPE ledger.operator_action OWNER TO ledger_schema_owner;
ALTER TYPE ledger.daily_activity OWNER TO ledger_schema_owner;
ALTER TYPE ledger.busy_owner OWNER TO ledger_schema_owner;
ALTER TYPE ledger.open_hold OWNER TO ledger_schema_owner;
ALTER TYPE ledger.balance_point OWNER TO ledger_schema_owner;
ALTER TYPE ledger.history_entry OWNER TO ledger_schema_owner;
ALTER TYPE ledger.console_sign_in OWNER TO ledger_schema_owner;
ALTER TYPE ledger.console_user OWNER TO ledger_schema_owner;
