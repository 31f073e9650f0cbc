-- The ledger's tables. Invariants are constraints first; the functions in
-- sql/ are the only writers (ledger_app has no table privileges).
-- depends: 0001_roles_and_schema

CREATE TABLE ledger.apps (
    app         text PRIMARY KEY
                CONSTRAINT apps_app_format CHECK (app ~ '^[a-z][a-z0-9_]{0,62}$'),
    description text,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- An operation decides direction, amount rules and how often one owner may
-- receive it. Names are unique across apps so an entry's operation is never
-- ambiguous; core operations are usable by every app.
CREATE TABLE ledger.operations (
    app                text NOT NULL REFERENCES ledger.apps (app),
    operation          text NOT NULL
                       CONSTRAINT operations_operation_format
                       CHECK (operation ~ '^[A-Z][A-Z0-9_]{0,62}$'),
    direction          text
                       CONSTRAINT operations_direction_valid
                       CHECK (direction IN ('credit', 'debit')),
    default_amount     bigint,
    min_amount         bigint NOT NULL DEFAULT 1,
    max_amount         bigint,
    caller_sets_amount boolean NOT NULL DEFAULT false,
    limit_per          text
                       CONSTRAINT operations_limit_per_valid
                       CHECK (limit_per IN ('ever', 'day')),
    is_system          boolean NOT NULL DEFAULT false,
    description        text,
    PRIMARY KEY (app, operation),
    CONSTRAINT operations_operation_unique UNIQUE (operation),
    CONSTRAINT operations_direction_required CHECK (is_system OR direction IS NOT NULL),
    CONSTRAINT operations_min_positive CHECK (min_amount >= 1),
    CONSTRAINT operations_max_ge_min CHECK (max_amount IS NULL OR max_amount >= min_amount),
    CONSTRAINT operations_default_in_bounds CHECK (
        default_amount IS NULL
        OR (default_amount >= min_amount
            AND (max_amount IS NULL OR default_amount <= max_amount))),
    CONSTRAINT operations_amount_decidable CHECK (caller_sets_amount OR default_amount IS NOT NULL OR is_system)
);

-- One row per owner, created with the first entry. The running balance makes
-- a balance read one indexed row; the CHECK is the last line of defence.
CREATE TABLE ledger.accounts (
    owner_id   text PRIMARY KEY
               CONSTRAINT accounts_owner_id_length CHECK (length(owner_id) BETWEEN 1 AND 255),
    balance    bigint NOT NULL DEFAULT 0
               CONSTRAINT accounts_balance_non_negative CHECK (balance >= 0),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);

-- The journal: append-only (see the trigger below).
CREATE TABLE ledger.entries (
    entry_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id          text NOT NULL REFERENCES ledger.accounts (owner_id),
    -- app and operation carry no foreign key on purpose: every insert would
    -- take a KEY SHARE lock on the same few operations rows, turning the hot
    -- path into MultiXact traffic. The writing functions resolve both, and
    -- operations are never deleted (ledger.verify() checks the references).
    app               text NOT NULL,
    operation         text NOT NULL,
    amount            bigint NOT NULL CONSTRAINT entries_amount_non_zero CHECK (amount <> 0),
    balance           bigint NOT NULL CONSTRAINT entries_balance_non_negative CHECK (balance >= 0),
    idempotency_key   text CONSTRAINT entries_idempotency_key_length
                      CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint       uuid,
    metadata          jsonb NOT NULL DEFAULT '{}'
                      CONSTRAINT entries_metadata_object CHECK (jsonb_typeof(metadata) = 'object'),
    created_at        timestamptz NOT NULL,
    created_by        text NOT NULL,
    transfer_id       bigint,
    hold_id           bigint,
    reverses_entry_id bigint REFERENCES ledger.entries (entry_id),
    CONSTRAINT entries_key_has_fingerprint CHECK ((idempotency_key IS NULL) = (fingerprint IS NULL))
);

-- Idempotency keys are unique per app (the writer).
CREATE UNIQUE INDEX entries_app_idempotency_key ON ledger.entries (app, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- An owner's history, newest first (list_entries keyset pagination).
CREATE INDEX entries_owner_entry_id ON ledger.entries (owner_id, entry_id DESC);
-- Balance at a past instant, and "once per day" limits.
CREATE INDEX entries_owner_created_at ON ledger.entries (owner_id, created_at DESC);
-- An entry is reversed at most once.
CREATE UNIQUE INDEX entries_reverses_once ON ledger.entries (reverses_entry_id)
    WHERE reverses_entry_id IS NOT NULL;
-- The two legs of a transfer.
CREATE INDEX entries_transfer_id ON ledger.entries (transfer_id) WHERE transfer_id IS NOT NULL;

CREATE SEQUENCE ledger.transfer_id_seq;

-- Credits reserved for a pending action. A hold counts against `available`
-- while status = 'active' and expires_at is in the future: expiry needs no job.
CREATE TABLE ledger.holds (
    hold_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id         text NOT NULL REFERENCES ledger.accounts (owner_id),
    app              text NOT NULL REFERENCES ledger.apps (app),
    operation        text NOT NULL REFERENCES ledger.operations (operation),
    amount           bigint NOT NULL CONSTRAINT holds_amount_positive CHECK (amount > 0),
    status           text NOT NULL DEFAULT 'active'
                     CONSTRAINT holds_status_valid CHECK (status IN ('active', 'captured', 'released')),
    idempotency_key  text NOT NULL,
    fingerprint      uuid NOT NULL,
    created_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    closed_at        timestamptz,
    captured_amount  bigint,
    capture_request  bigint,           -- the amount a capture was called with (NULL = whole hold)
    entry_id         bigint REFERENCES ledger.entries (entry_id),
    created_by       text NOT NULL,
    CONSTRAINT holds_expiry_after_creation CHECK (expires_at > created_at),
    CONSTRAINT holds_captured_within_amount CHECK (captured_amount IS NULL OR captured_amount BETWEEN 1 AND amount),
    CONSTRAINT holds_closed_consistent CHECK ((status = 'active') = (closed_at IS NULL))
);
CREATE UNIQUE INDEX holds_app_idempotency_key ON ledger.holds (app, idempotency_key);
CREATE INDEX holds_owner_active ON ledger.holds (owner_id, expires_at) WHERE status = 'active';
CREATE INDEX holds_owner ON ledger.holds (owner_id, hold_id DESC);
ALTER TABLE ledger.entries
    ADD CONSTRAINT entries_hold_fk FOREIGN KEY (hold_id) REFERENCES ledger.holds (hold_id);

-- Entries are immutable: a mistake is corrected by a reversal entry.
CREATE FUNCTION ledger.refuse_entry_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RAISE EXCEPTION 'ledger entries are append-only: % is refused', TG_OP
        USING ERRCODE = 'LG013',
              HINT = 'Correct a mistake with ledger.reverse_entry(), never by editing the journal.';
END
$fn$;
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON ledger.entries
    FOR EACH ROW EXECUTE FUNCTION ledger.refuse_entry_change();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON ledger.entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_entry_change();

ALTER TABLE ledger.apps OWNER TO ledger_owner;
ALTER TABLE ledger.operations OWNER TO ledger_owner;
ALTER TABLE ledger.accounts OWNER TO ledger_owner;
ALTER TABLE ledger.entries OWNER TO ledger_owner;
ALTER TABLE ledger.holds OWNER TO ledger_owner;
ALTER SEQUENCE ledger.transfer_id_seq OWNER TO ledger_owner;
ALTER FUNCTION ledger.refuse_entry_change() OWNER TO ledger_owner;
