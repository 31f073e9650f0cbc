-- Entries: the one place where a balance changes (ledger._apply), post_entry
-- and the reads of balances and history.

-- Credits of an owner's holds that still count: active and not yet expired
-- at p_at. Expiry is a comparison with the clock, so no sweeper is needed.
-- Writers pass p_at, the one clock reading they take after the account lock
-- and use for every expiry decision of the call (the check, its error, a
-- hold's status): lock order is then time order, and no call can count a
-- hold as active after another decided it had expired, nor refuse with one
-- reading and explain with another. Reads pass nothing: the clock now. A
-- set-returning SQL function so that callers' queries inline it (a scalar
-- SQL function with a subquery is re-planned on every call); qualified
-- throughout because get_balance inlines it under the caller's search_path.
DROP FUNCTION IF EXISTS ledger._active_holds(text, bigint);  -- it took no instant before
CREATE OR REPLACE FUNCTION ledger._active_holds(p_owner_id text, p_except_hold bigint DEFAULT NULL,
                                                p_at timestamptz DEFAULT NULL)
RETURNS TABLE (held bigint)
LANGUAGE sql STABLE ROWS 1
AS $$
    SELECT coalesce(pg_catalog.sum(h.amount), 0)::bigint
    FROM ledger.holds h
    WHERE h.owner_id OPERATOR(pg_catalog.=) p_owner_id
      AND h.status OPERATOR(pg_catalog.=) 'active'
      AND h.expires_at OPERATOR(pg_catalog.>) COALESCE(p_at, pg_catalog.clock_timestamp())
      AND (p_except_hold IS NULL OR h.hold_id OPERATOR(pg_catalog.<>) p_except_hold)
$$;

-- Guarantees: raises LG001 with the owner, the amount needed and what is
-- available.
CREATE OR REPLACE FUNCTION ledger._insufficient(p_owner_id text, p_needed bigint, p_available bigint)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    RAISE EXCEPTION 'insufficient credits: owner % needs % but has % available', p_owner_id, p_needed, p_available
        USING ERRCODE = 'LG001',
              DETAIL = json_build_object('owner_id', p_owner_id, 'needed', p_needed,
                                         'available', p_available)::text;
END
$$;

-- Whether an owner already has the entry a limited operation grants once
-- ('ever', or per UTC day); false for an operation without a limit. Shared by
-- ledger._apply and ledger.post_entries, which decide it under the account lock.
CREATE OR REPLACE FUNCTION ledger._limit_reached(p_owner_id text, p_operation text, p_limit_per text)
RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT p_limit_per IS NOT NULL AND EXISTS (
        SELECT FROM ledger.entries e
        WHERE e.owner_id = p_owner_id
          AND e.operation = p_operation
          AND (p_limit_per = 'ever'
               OR e.created_at >= (date_trunc('day', clock_timestamp() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')))
$$;

-- Guarantees: raises LG004 naming the owner, the operation and its limit.
CREATE OR REPLACE FUNCTION ledger._limit_error(p_owner_id text, p_operation text, p_limit_per text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    RAISE EXCEPTION 'operation limit reached: % is granted once per % per owner, and owner % already has it',
            p_operation, CASE p_limit_per WHEN 'day' THEN 'UTC day' ELSE 'lifetime' END, p_owner_id
        USING ERRCODE = 'LG004',
              DETAIL = json_build_object('owner_id', p_owner_id, 'operation', p_operation,
                                         'limit_per', p_limit_per)::text,
              HINT = CASE p_limit_per WHEN 'day' THEN 'The next claim is possible after midnight UTC.'
                          ELSE 'This operation is granted once per owner, ever.' END;
END
$$;

-- Guarantees: raises LG006 for a credit that would take a balance beyond bigint.
CREATE OR REPLACE FUNCTION ledger._balance_overflow(p_owner_id text, p_amount bigint)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    RAISE EXCEPTION 'invalid amount: crediting % to owner % would exceed the largest storable balance',
            p_amount, p_owner_id
        USING ERRCODE = 'LG006',
              DETAIL = json_build_object('owner_id', p_owner_id, 'amount', p_amount,
                                         'reason', 'balance overflow')::text;
END
$$;

-- Guarantees: the one write path of every entry. Under the owner's account
-- row lock it checks the operation's per-owner limit and, for a debit, that
-- `available` (balance minus active holds other than p_hold_id) covers it;
-- then it updates the running balance and appends the entry, in one
-- statement. created_at is clock_timestamp() taken after the lock, so time
-- order follows lock order. p_amount is signed. The accounts CHECK
-- (balance >= 0) backs the debit check.
--
-- Plain credits and debits of an owner without open holds (the usual case)
-- are one statement: its UPDATE (or upsert) takes the lock, and after a wait
-- it re-checks its WHERE on the latest row, which carries open_holds. Every
-- other case takes the lock first, then decides with a fresh snapshot.
-- The three write statements below differ only in how the account row is
-- changed; they append the entry alike. They stay three on purpose: one
-- statement with both account CTEs, chosen by a mode parameter, cost 105-115
-- us per post_entry against 90-95 us (`python -m bench.serverloop`), because
-- the executor sets up both account writes on every call; one UPDATE for both
-- debit paths (the held-credits subquery in a CASE) cost a hot debit 87-90 us
-- against 81-83.
CREATE OR REPLACE FUNCTION ledger._apply(
    p_owner_id    text,
    p_app         text,
    p_op          ledger.operations,
    p_amount      bigint,
    p_key         text,
    p_fingerprint uuid,
    p_metadata    jsonb,
    p_hold_id     bigint DEFAULT NULL,
    p_transfer_id bigint DEFAULT NULL,
    p_reverses    bigint DEFAULT NULL)
RETURNS ledger.entry_result
LANGUAGE plpgsql
AS $$
DECLARE
    v_balance bigint;
    v_held    bigint;
    v_at      timestamptz;
    v_result  ledger.entry_result;
BEGIN
    IF p_amount > 0 AND p_op.limit_per IS NULL THEN
        -- Plain credit: nothing to decide, so one statement takes the lock
        -- (the upsert), adds, and appends. The upsert's WHERE refuses a sum
        -- beyond bigint instead of failing with a PostgreSQL error.
        WITH a AS (
            INSERT INTO ledger.accounts AS a (owner_id, balance, created_at, updated_at)
            VALUES (p_owner_id, p_amount, clock_timestamp(), clock_timestamp())
            ON CONFLICT ON CONSTRAINT accounts_pkey DO UPDATE
                SET balance = a.balance + excluded.balance, updated_at = clock_timestamp()
                WHERE a.balance <= 9223372036854775807 - excluded.balance
            RETURNING a.balance, a.updated_at)
        INSERT INTO ledger.entries AS e
            (owner_id, app, operation, amount, balance, idempotency_key, fingerprint, metadata,
             created_at, created_by, hold_id, transfer_id, reverses_entry_id)
        SELECT p_owner_id, p_app, p_op.operation, p_amount, a.balance, p_key, p_fingerprint, p_metadata,
               a.updated_at, ledger._writer(), p_hold_id, p_transfer_id, p_reverses
        FROM a
        -- Callers checked the key under its advisory lock; a batch that wrote
        -- the same key meanwhile (batches rely on the unique index, not that
        -- lock) surfaces here as a conflict instead of a unique violation.
        ON CONFLICT (app, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING e.entry_id, e.owner_id, e.app, e.operation, e.amount, e.balance, e.created_at, false
        INTO v_result;
        IF NOT FOUND THEN
            -- A key conflict (the account was updated: the error undoes it),
            -- else the upsert refused an overflow.
            PERFORM ledger._require_key_unused_by_entries(p_app, p_key);
            PERFORM ledger._balance_overflow(p_owner_id, p_amount);
        END IF;
        RETURN v_result;
    END IF;

    IF p_amount < 0 AND p_op.limit_per IS NULL AND p_hold_id IS NULL THEN
        WITH a AS (
            UPDATE ledger.accounts a SET balance = a.balance + p_amount, updated_at = clock_timestamp()
            WHERE a.owner_id = p_owner_id AND a.balance + p_amount >= 0 AND a.open_holds = 0
            RETURNING a.balance, a.updated_at)
        INSERT INTO ledger.entries AS e
            (owner_id, app, operation, amount, balance, idempotency_key, fingerprint, metadata,
             created_at, created_by, hold_id, transfer_id, reverses_entry_id)
        SELECT p_owner_id, p_app, p_op.operation, p_amount, a.balance, p_key, p_fingerprint, p_metadata,
               a.updated_at, ledger._writer(), p_hold_id, p_transfer_id, p_reverses
        FROM a
        ON CONFLICT (app, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING e.entry_id, e.owner_id, e.app, e.operation, e.amount, e.balance, e.created_at, false
        INTO v_result;
        IF FOUND THEN
            RETURN v_result;
        END IF;
        -- With the key still unused, the INSERT had no row to write: the
        -- UPDATE changed nothing (no account, too little, or open holds), and
        -- the general path below decides, or words the error.
        PERFORM ledger._require_key_unused_by_entries(p_app, p_key);
    END IF;

    -- Debits and limited credits decide under the lock: take it first, so
    -- that the checks below see every hold and entry committed before.
    SELECT a.balance INTO v_balance FROM ledger.accounts a WHERE a.owner_id = p_owner_id FOR UPDATE;
    IF NOT FOUND THEN
        IF p_amount < 0 THEN
            PERFORM ledger._insufficient(p_owner_id, -p_amount, 0);
        END IF;
        INSERT INTO ledger.accounts AS a (owner_id, balance) VALUES (p_owner_id, 0)
        ON CONFLICT ON CONSTRAINT accounts_pkey DO NOTHING;
        SELECT a.balance INTO v_balance FROM ledger.accounts a WHERE a.owner_id = p_owner_id FOR UPDATE;
    END IF;

    -- The call's one clock reading for hold expiry, taken under the lock.
    v_at := clock_timestamp();

    IF p_op.limit_per IS NOT NULL
       AND ledger._limit_reached(p_owner_id, p_op.operation, p_op.limit_per) THEN
        PERFORM ledger._limit_error(p_owner_id, p_op.operation, p_op.limit_per);
    END IF;

    -- The check and the write in one statement: it starts after the lock was
    -- taken, so it sees every committed hold. A debit needs `available`; a
    -- limited credit must not pass bigint.
    WITH a AS (
        UPDATE ledger.accounts a SET balance = a.balance + p_amount, updated_at = clock_timestamp()
        WHERE a.owner_id = p_owner_id
          AND CASE WHEN p_amount < 0
                   THEN a.balance + p_amount >= (SELECT h.held FROM ledger._active_holds(p_owner_id, p_hold_id, v_at) h)
                   ELSE a.balance <= 9223372036854775807 - p_amount END
        RETURNING a.balance, a.updated_at)
    INSERT INTO ledger.entries AS e
        (owner_id, app, operation, amount, balance, idempotency_key, fingerprint, metadata,
         created_at, created_by, hold_id, transfer_id, reverses_entry_id)
    SELECT p_owner_id, p_app, p_op.operation, p_amount, a.balance, p_key, p_fingerprint, p_metadata,
           a.updated_at, ledger._writer(), p_hold_id, p_transfer_id, p_reverses
    FROM a
    ON CONFLICT (app, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING e.entry_id, e.owner_id, e.app, e.operation, e.amount, e.balance, e.created_at, false
    INTO v_result;
    IF NOT FOUND THEN
        PERFORM ledger._require_key_unused_by_entries(p_app, p_key);
        IF p_amount > 0 THEN
            PERFORM ledger._balance_overflow(p_owner_id, p_amount);
        END IF;
        -- The same instant as the check: the error explains the refusal it made.
        SELECT h.held INTO v_held FROM ledger._active_holds(p_owner_id, p_hold_id, v_at) h;
        PERFORM ledger._insufficient(p_owner_id, -p_amount, v_balance - v_held);
    END IF;
    RETURN v_result;
END
$$;

CREATE OR REPLACE FUNCTION ledger.post_entry(
    owner_id        text,
    app             text,
    operation       text,
    idempotency_key text,
    amount          numeric DEFAULT NULL,
    metadata        text DEFAULT '{}')
RETURNS ledger.entry_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_checked text;
    v_locked  boolean;
    v_found   record;
    v_op      ledger.operations;
    v_prior   ledger.entries;
    v_amount  bigint;
    v_meta    jsonb;
    v_fp      uuid;
    v_result  ledger.entry_result;
BEGIN
    v_checked := ledger._require_id('owner_id', post_entry.owner_id);
    v_checked := ledger._require_id('idempotency_key', post_entry.idempotency_key);
    -- The key's lock first, then one query for the operation and what the
    -- key already names (ledger._claim_key's rule, joined with the lookup).
    v_locked := ledger._lock_key(post_entry.app, post_entry.idempotency_key);
    SELECT o AS op, k AS prior INTO v_found
    FROM ledger._key_use(post_entry.app, post_entry.idempotency_key) k
    LEFT JOIN ledger._operation_row(post_entry.app, post_entry.operation) o ON true;
    v_op := v_found.op;
    IF v_op.operation IS NULL OR NOT ledger._usable_by(v_op, post_entry.app) THEN
        v_op := ledger._operation_for(post_entry.app, post_entry.operation);  -- raises why
    END IF;
    v_amount := ledger._amount_for(v_op, post_entry.amount);
    v_meta := ledger._metadata(post_entry.metadata);
    v_fp := ledger._fingerprint(jsonb_build_array('post_entry', post_entry.owner_id, post_entry.operation,
                                                  post_entry.amount, v_meta));

    v_prior := v_found.prior;
    IF v_prior.entry_id IS NOT NULL THEN
        PERFORM ledger._require_same_request(post_entry.app, post_entry.idempotency_key, v_prior.fingerprint, v_fp);
        v_result := (v_prior.entry_id, v_prior.owner_id, v_prior.app, v_prior.operation,
                     v_prior.amount, v_prior.balance, v_prior.created_at, true);
        RETURN v_result;
    END IF;

    RETURN ledger._apply(post_entry.owner_id, post_entry.app, v_op,
                         CASE v_op.direction WHEN 'debit' THEN -v_amount ELSE v_amount END,
                         post_entry.idempotency_key, v_fp, v_meta);
END
$$;
COMMENT ON FUNCTION ledger.post_entry(text, text, text, text, numeric, text) IS $$
Posts one entry of an operation to an owner's account, once per (app,
idempotency_key). The operation decides credit or debit, the default
amount (amount NULL), its bounds and a per-owner limit. Concurrent calls
with one key serialize; a retry of the same request returns the first
result with replayed = true and writes nothing; the key with another
request is LG005. The write happens under the owner's account row lock: a
debit needs the available credits (balance minus active holds), else
LG001, and an operation granted once (ever, or per UTC day) is LG004 the
second time. Input errors: LG002 unknown operation, LG003 another app's or
a system operation, LG006 an amount that is zero, negative, fractional,
outside the operation's bounds or not the caller's to set, LG007 a
missing or malformed argument (metadata must be a JSON object without
repeated keys, at most 64 KiB), LG011 unknown app. Nothing is written when
it raises.$$;

CREATE OR REPLACE FUNCTION ledger.post_entry(
    metadata        jsonb,
    owner_id        text,
    app             text,
    operation       text,
    idempotency_key text,
    amount          numeric DEFAULT NULL)
RETURNS ledger.entry_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN ledger.post_entry(owner_id => post_entry.owner_id, app => post_entry.app,
                             operation => post_entry.operation, idempotency_key => post_entry.idempotency_key,
                             amount => post_entry.amount, metadata => post_entry.metadata::text);
END
$$;
COMMENT ON FUNCTION ledger.post_entry(jsonb, text, text, text, text, numeric) IS $$
post_entry for callers that pass metadata as a jsonb value; the same
guarantees. Metadata is the first parameter so that the two overloads
never compete for one call. A jsonb value has already kept only the last
of a repeated key: send text to have such metadata refused.$$;

-- Guarantees: raises LG005 for a key a hold of the app uses; a boolean so
-- that ledger._key_use can call it in its WHERE. STABLE, not IMMUTABLE: the
-- planner must never fold it early with constant arguments.
CREATE OR REPLACE FUNCTION ledger._key_held(p_app text, p_key text)
RETURNS boolean
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    PERFORM ledger._key_conflict(p_app, p_key);
    RETURN false;
END
$$;

-- What an idempotency key of an app already names: the entry written under
-- it (one row of NULLs when there is none), or LG005 when a hold of the app
-- uses it (keys are unique per app across all writing functions). A
-- set-returning SQL function so that callers' queries inline it.
DROP FUNCTION IF EXISTS ledger._key_use(text, text);  -- it returned a hold flag beside the entry before
CREATE FUNCTION ledger._key_use(p_app text, p_key text)
RETURNS SETOF ledger.entries
LANGUAGE sql STABLE ROWS 1
AS $$
    SELECT e.*
    FROM (SELECT) AS d
    LEFT JOIN ledger.entries e
           ON e.app OPERATOR(pg_catalog.=) p_app AND e.idempotency_key OPERATOR(pg_catalog.=) p_key
    LEFT JOIN ledger.holds h
           ON h.app OPERATOR(pg_catalog.=) p_app AND h.idempotency_key OPERATOR(pg_catalog.=) p_key
    WHERE h.hold_id IS NULL OR ledger._key_held(p_app, p_key)
$$;

-- Guarantees: until the caller's transaction ends, no other single-key call
-- of the app runs this check for the same key (ledger._lock_key); returns the
-- entry already written under the key (all NULL when there is none) and
-- raises LG005 when a hold of the app uses it.
CREATE OR REPLACE FUNCTION ledger._claim_key(p_app text, p_key text)
RETURNS ledger.entries
LANGUAGE plpgsql
AS $$
DECLARE
    v_entry  ledger.entries;
    v_locked boolean;
BEGIN
    v_locked := ledger._lock_key(p_app, p_key);
    SELECT k.* INTO v_entry FROM ledger._key_use(p_app, p_key) k;
    RETURN v_entry;
END
$$;

-- Guarantees: raises LG005 when the key already names an entry of the app.
CREATE OR REPLACE FUNCTION ledger._require_key_unused_by_entries(p_app text, p_key text)
RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    PERFORM FROM ledger.entries e WHERE e.app = p_app AND e.idempotency_key = p_key;
    IF FOUND THEN
        PERFORM ledger._key_conflict(p_app, p_key);
    END IF;
END
$$;

-- Plain SQL without a SET clause so the planner can inline it; every name
-- and operator is qualified, so the caller's search_path cannot change its
-- meaning.
CREATE OR REPLACE FUNCTION ledger.get_balance(owner_id text)
RETURNS SETOF ledger.balance_result
LANGUAGE sql STABLE ROWS 1
AS $$
    SELECT v.owner_id,
           coalesce(a.balance, 0::bigint),
           h.held,
           coalesce(a.balance, 0::bigint) OPERATOR(pg_catalog.-) h.held,
           a.updated_at
    FROM (SELECT ledger._require_id('owner_id', $1) AS owner_id) v
    CROSS JOIN LATERAL ledger._active_holds(v.owner_id) h
    LEFT JOIN ledger.accounts a ON a.owner_id OPERATOR(pg_catalog.=) v.owner_id
$$;
COMMENT ON FUNCTION ledger.get_balance(text) IS $$
An owner's balance, the credits its active holds reserve (held) and what is
available (balance - held); an owner without entries reads zeros with
updated_at NULL. A hold past its expires_at no longer counts. One indexed
row plus the owner's active holds, never a sum over history. LG007 for a
missing or malformed owner_id. Read-only, takes no lock.$$;

-- What an app may see of an entry. Balances and history are shared by every
-- app, so the row itself is always visible; its metadata, idempotency key and
-- fingerprint (a digest of the request, metadata included) belong to the app
-- that wrote it and read NULL for any other app. p_app NULL (a trusted SQL
-- caller, an auditor) sees everything.
CREATE OR REPLACE FUNCTION ledger._entry_seen_by(p_entry ledger.entries, p_app text)
RETURNS ledger.entries
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_app IS NOT NULL AND p_entry.app IS DISTINCT FROM p_app THEN
        p_entry.metadata := NULL;
        p_entry.idempotency_key := NULL;
        p_entry.fingerprint := NULL;
    END IF;
    RETURN p_entry;
END
$$;

-- The read functions gained a trailing `app` parameter; the old signatures
-- go, or a call without `app` would be ambiguous between the two.
DROP FUNCTION IF EXISTS ledger.get_entry(bigint);
DROP FUNCTION IF EXISTS ledger.list_entries(text, bigint, integer);

CREATE OR REPLACE FUNCTION ledger.get_entry(entry_id bigint, app text DEFAULT NULL)
RETURNS ledger.entries
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_entry ledger.entries;
BEGIN
    IF get_entry.app IS NOT NULL THEN
        PERFORM ledger._require_app(get_entry.app);
    END IF;
    SELECT e.* INTO v_entry FROM ledger.entries e WHERE e.entry_id = get_entry.entry_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'entry % not found', get_entry.entry_id
            USING ERRCODE = 'LG008',
                  DETAIL = json_build_object('entry_id', get_entry.entry_id, 'kind', 'entry')::text;
    END IF;
    RETURN ledger._entry_seen_by(v_entry, get_entry.app);
END
$$;
COMMENT ON FUNCTION ledger.get_entry(bigint, text) IS $$
One journal entry, or LG008. With app (LG011 when unknown), the metadata,
idempotency key and fingerprint of another app's entry read NULL; without
app (a trusted SQL caller, an auditor) everything is visible. Read-only.$$;

CREATE OR REPLACE FUNCTION ledger.list_entries(
    owner_id text,
    after_id bigint DEFAULT NULL,
    max_rows integer DEFAULT 100,
    app      text DEFAULT NULL)
RETURNS SETOF ledger.entries
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ledger._require_id('owner_id', list_entries.owner_id);
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 1000 THEN
        RAISE EXCEPTION 'invalid argument: max_rows must be between 1 and 1000 (% given)', max_rows
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'max_rows', 'reason', 'out of range',
                                             'min', 1, 'max', 1000)::text;
    END IF;
    IF list_entries.app IS NULL THEN
        RETURN QUERY
            SELECT e.* FROM ledger.entries e
            WHERE e.owner_id = list_entries.owner_id
              AND (list_entries.after_id IS NULL OR e.entry_id < list_entries.after_id)
            ORDER BY e.entry_id DESC
            LIMIT list_entries.max_rows;
        RETURN;
    END IF;
    PERFORM ledger._require_app(list_entries.app);
    RETURN QUERY
        SELECT v.* FROM (
            SELECT e FROM ledger.entries e
            WHERE e.owner_id = list_entries.owner_id
              AND (list_entries.after_id IS NULL OR e.entry_id < list_entries.after_id)
            ORDER BY e.entry_id DESC
            LIMIT list_entries.max_rows) page
        CROSS JOIN LATERAL ledger._entry_seen_by(page.e, list_entries.app) v
        ORDER BY v.entry_id DESC;
END
$$;
COMMENT ON FUNCTION ledger.list_entries(text, bigint, integer, text) IS $$
An owner's entries, newest first, max_rows (1 to 1000, else LG007) at a
time; pass the last entry_id of a page as after_id for the next page
(keyset pagination: a page never repeats or skips an entry while new ones
arrive). With app (LG011 when unknown), other apps' private fields read
NULL. Read-only.$$;

CREATE OR REPLACE FUNCTION ledger.balance_at(owner_id text, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_balance bigint;
BEGIN
    PERFORM ledger._require_id('owner_id', balance_at.owner_id);
    IF balance_at.at IS NULL THEN
        RAISE EXCEPTION 'invalid argument: at is required'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'at', 'reason', 'required')::text;
    END IF;
    SELECT e.balance INTO v_balance FROM ledger.entries e
    WHERE e.owner_id = balance_at.owner_id AND e.created_at <= balance_at.at
    ORDER BY e.created_at DESC, e.entry_id DESC
    LIMIT 1;
    RETURN coalesce(v_balance, 0);
END
$$;
COMMENT ON FUNCTION ledger.balance_at(text, timestamptz) IS $$
The owner's balance as of an instant: the running balance of the last
entry created at or before `at`, 0 before the first entry (holds do not
count). LG007 for a NULL `at` or a malformed owner_id. Read-only.$$;
