-- Entries: the one place where a balance changes (ledger._apply), post_entry
-- and the reads of balances and history.

-- Credits of an owner's holds that still count: active and not yet expired
-- at p_at. Expiry is a comparison with the clock, so no sweeper is needed.
-- Writers pass p_at, the one clock reading they take after the account lock
-- and use for every expiry decision of the call (the check, its error, a
-- hold's status): lock order is then time order, and no call can count a
-- hold as active after another decided it had expired, nor refuse with one
-- reading and explain with another. Reads pass nothing: the clock now.
-- PL/pgSQL (Citus cannot plan a parameterized SQL function over its tables);
-- qualified throughout because get_balance calls it under the caller's
-- search_path.
DROP FUNCTION IF EXISTS ledger._active_holds(text, bigint);  -- it took no instant before
DROP FUNCTION IF EXISTS ledger._active_holds(text, bigint, timestamptz);  -- it returned a table before
CREATE FUNCTION ledger._active_holds(p_owner_id text, p_except_hold bigint DEFAULT NULL,
                                     p_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_held pg_catalog.int8;
BEGIN
    SELECT pg_catalog.sum(h.amount)::pg_catalog.int8 INTO v_held
    FROM ledger.holds h
    WHERE h.owner_id OPERATOR(pg_catalog.=) p_owner_id
      AND h.status OPERATOR(pg_catalog.=) 'active'
      AND h.expires_at OPERATOR(pg_catalog.>) COALESCE(p_at, pg_catalog.clock_timestamp())
      AND (p_except_hold IS NULL OR h.hold_id OPERATOR(pg_catalog.<>) p_except_hold);
    RETURN COALESCE(v_held, 0::pg_catalog.int8);
END
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
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF p_limit_per IS NULL THEN
        RETURN false;
    END IF;
    RETURN EXISTS (
        SELECT 1 FROM ledger.entries e
        WHERE e.owner_id = p_owner_id
          AND e.operation = p_operation
          AND (p_limit_per = 'ever'
               OR e.created_at >= (date_trunc('day', clock_timestamp() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')));
END
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


-- Guarantees: the owner's account row is locked FOR UPDATE until the
-- transaction ends, and its balance, open holds and last seq are returned as
-- they are under the lock (every write of the owner committed before is in
-- them). Without an account: with p_create one is made at zero and locked;
-- otherwise nothing is locked and no row is returned (the owner has no entry
-- and no hold). One owner per statement, so that on Citus the lock is taken
-- on one shard.
DROP FUNCTION IF EXISTS ledger._lock_account(text, boolean);  -- it returned no next_expiry before
CREATE FUNCTION ledger._lock_account(
    p_owner_id text, p_create boolean,
    OUT balance bigint, OUT open_holds integer, OUT last_seq bigint, OUT next_expiry timestamptz)
RETURNS record
LANGUAGE plpgsql
AS $$
BEGIN
    SELECT a.balance, a.open_holds, a.last_seq, a.next_expiry INTO balance, open_holds, last_seq, next_expiry
    FROM ledger.accounts a WHERE a.owner_id = p_owner_id FOR UPDATE;
    IF NOT FOUND AND p_create THEN
        INSERT INTO ledger.accounts AS a (owner_id, balance) VALUES (p_owner_id, 0)
        ON CONFLICT ON CONSTRAINT accounts_pkey DO NOTHING;
        SELECT a.balance, a.open_holds, a.last_seq, a.next_expiry INTO balance, open_holds, last_seq, next_expiry
        FROM ledger.accounts a WHERE a.owner_id = p_owner_id FOR UPDATE;
    END IF;
END
$$;

-- Guarantees: the entry an idempotency key of (owner, app) already names (all
-- NULL when none), or LG005 when a hold of that owner and app uses it (a key
-- names one request across all writing functions). Callers hold the owner's
-- account lock, so what they read here is final until they commit.
CREATE OR REPLACE FUNCTION ledger._key_entry(p_owner_id text, p_app text, p_key text)
RETURNS ledger.entries
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_entry ledger.entries;
BEGIN
    SELECT e.* INTO v_entry FROM ledger.entries e
    WHERE e.owner_id = p_owner_id AND e.app = p_app AND e.idempotency_key = p_key;
    IF NOT FOUND THEN
        PERFORM 1 FROM ledger.holds h
        WHERE h.owner_id = p_owner_id AND h.app = p_app AND h.idempotency_key = p_key;
        IF FOUND THEN
            PERFORM ledger._key_conflict(p_app, p_key);
        END IF;
    END IF;
    RETURN v_entry;
END
$$;

-- Guarantees: NULL when the key of (owner, app) names nothing yet; the entry
-- it names as a replayed entry_result when p_fingerprint is the request it
-- was written for; else LG005. Callers hold the owner's account lock.
CREATE OR REPLACE FUNCTION ledger._replay(p_owner_id text, p_app text, p_key text, p_fingerprint uuid)
RETURNS ledger.entry_result
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_prior ledger.entries;
BEGIN
    IF p_key IS NULL THEN
        RETURN NULL;
    END IF;
    v_prior := ledger._key_entry(p_owner_id, p_app, p_key);
    IF v_prior.entry_id IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM ledger._require_same_request(p_app, p_key, v_prior.fingerprint, p_fingerprint);
    RETURN (v_prior.entry_id, v_prior.owner_id, v_prior.app, v_prior.operation, v_prior.amount,
            v_prior.balance, v_prior.created_at, true)::ledger.entry_result;
END
$$;

-- Guarantees: the one write path of every entry. It takes the owner's
-- account row lock (ledger._lock_account; a credit makes the account), reads
-- the clock once under it (created_at, and every expiry decision), writes
-- the EXPIRE entries of the owner's grants that expired by then
-- (ledger._expire_due), and then,
-- with everything the owner's earlier writers committed in view: replays the
-- request p_key already names (or LG005), checks the operation's per-owner
-- limit (LG004) and, for a debit, that `available` (balance minus active
-- holds other than p_hold_id) covers it (LG001); then it updates the running
-- balance and the owner's last seq, appends the entry with the next seq and
-- its entry.posted event; last, the entry's grant rows (ledger._grant_rows: a
-- credit makes a grant expiring at p_expires_at, or p_expires_after after
-- the write, with p_priority; a debit spends grants; a reversal gives back
-- or takes back). p_amount is signed. The accounts CHECK (balance >= 0)
-- backs the debit check.
--
-- Because every request of a key of (owner, app) takes the owner's lock
-- before it looks at the key, the lock alone orders them: the second of two
-- concurrent identical requests sees the first's entry and replays it. The
-- key is checked inside the account's UPDATE (two index probes); only when
-- that statement wrote nothing is it looked at again to say why.
-- Scalars, not a row of ledger.operations (a whole-row argument fails on
-- Citus shards); no clock call inside the UPDATE (Citus refuses one).
DROP FUNCTION IF EXISTS ledger._apply(text, text, ledger.operations, bigint, text, uuid, jsonb, bigint, bigint, bigint);
-- p_at: the instant of the write when the caller already read it under the
-- owner's lock (post_entries on Citus: one instant per batch); NULL, read here.
DROP FUNCTION IF EXISTS ledger._apply(text, text, text, text, bigint, text, uuid, jsonb, bigint, bigint, bigint);
DROP FUNCTION IF EXISTS ledger._apply(text, text, text, text, bigint, text, uuid, jsonb, bigint, bigint, bigint,
                                      timestamptz);  -- it made no grants before
CREATE OR REPLACE FUNCTION ledger._apply(
    p_owner_id    text,
    p_app         text,
    p_operation   text,
    p_limit_per   text,
    p_amount      bigint,
    p_key         text,
    p_fingerprint uuid,
    p_metadata    jsonb,
    p_hold_id     bigint DEFAULT NULL,
    p_transfer_id bigint DEFAULT NULL,
    p_reverses    bigint DEFAULT NULL,
    p_at          timestamptz DEFAULT NULL,
    p_priority    integer DEFAULT 50,
    p_expires_after interval DEFAULT NULL,
    p_expires_at  timestamptz DEFAULT NULL,
    p_parts       jsonb DEFAULT NULL)
RETURNS ledger.entry_result
LANGUAGE plpgsql
AS $$
DECLARE
    v_account record;
    v_held    bigint := 0;
    v_at      timestamptz;
    v_writer  text;
    v_result  ledger.entry_result;
    v_seq     bigint;
    v_before  bigint;
BEGIN
    v_account := ledger._lock_account(p_owner_id, p_amount > 0);
    -- The call's one clock reading, under the lock: created_at (so time order
    -- follows lock order) and every expiry decision.
    v_at := coalesce(p_at, clock_timestamp());
    IF v_account.balance IS NULL THEN
        -- No account, so nothing of this owner (no key either): a debit of nothing.
        PERFORM ledger._insufficient(p_owner_id, -p_amount, 0);
    END IF;
    -- Balance alerts compare what the owner had available after its last
    -- write with what it has after this one (expiries observed now included).
    -- A capture's caller does that itself: the hold it frees changes it too.
    -- Without open holds that is the balance just locked (no query).
    IF p_hold_id IS NULL THEN
        IF v_account.open_holds = 0 THEN
            v_before := v_account.balance;
        ELSIF ledger._alerts_on() THEN
            v_before := ledger._stored_available(p_owner_id);
        END IF;
    END IF;
    IF v_account.next_expiry <= v_at THEN
        v_account.balance := ledger._expire_due(p_owner_id, v_at);
    END IF;

    IF p_limit_per IS NOT NULL THEN
        v_result := ledger._replay(p_owner_id, p_app, p_key, p_fingerprint);
        IF v_result.entry_id IS NOT NULL THEN
            RETURN v_result;
        END IF;
        IF ledger._limit_reached(p_owner_id, p_operation, p_limit_per) THEN
            PERFORM ledger._limit_error(p_owner_id, p_operation, p_limit_per);
        END IF;
    END IF;
    IF p_amount < 0 AND v_account.open_holds > 0 THEN
        v_held := ledger._active_holds(p_owner_id, p_hold_id, v_at);
    END IF;
    IF (p_amount < 0 AND v_account.balance + p_amount < v_held)
       OR (p_amount > 0 AND v_account.balance > 9223372036854775807 - p_amount) THEN
        -- A replay of an earlier request wins over what the balance says now.
        v_result := ledger._replay(p_owner_id, p_app, p_key, p_fingerprint);
        IF v_result.entry_id IS NOT NULL THEN
            RETURN v_result;
        END IF;
        IF p_amount > 0 THEN
            PERFORM ledger._balance_overflow(p_owner_id, p_amount);
        END IF;
        PERFORM ledger._insufficient(p_owner_id, -p_amount, v_account.balance - v_held);
    END IF;

    -- The writer read here, not in the statement: on Citus the statement runs
    -- on the owner's worker, whose session is the schema owner's.
    v_writer := ledger._writer();
    -- Three single-row statements, each on the owner's shard alone. Not one
    -- statement with data-modifying CTEs: Citus plans those as subplans whose
    -- intermediate results it copies to every node, so a delegated call would
    -- open a transaction on the coordinator and the other workers and commit
    -- with two-phase commit (docs/CITUS.md, "Delegated writes stay on their
    -- worker"). The key is checked in the UPDATE's WHERE, under the lock.
    UPDATE ledger.accounts a
    SET balance = a.balance + p_amount, last_seq = a.last_seq + 1, updated_at = v_at
    WHERE a.owner_id = p_owner_id
      AND (p_key IS NULL
           OR (NOT EXISTS (SELECT 1 FROM ledger.entries k
                           WHERE k.owner_id = p_owner_id AND k.app = p_app AND k.idempotency_key = p_key)
               AND NOT EXISTS (SELECT 1 FROM ledger.holds h
                               WHERE h.owner_id = p_owner_id AND h.app = p_app
                                 AND h.idempotency_key = p_key)))
    RETURNING a.balance, a.last_seq INTO v_result.balance, v_seq;
    IF NOT FOUND THEN
        -- The key already names a request of this owner and app.
        RETURN ledger._replay(p_owner_id, p_app, p_key, p_fingerprint);
    END IF;
    INSERT INTO ledger.entries AS e
        (owner_id, seq, app, operation, amount, balance, idempotency_key, fingerprint, metadata,
         created_at, created_by, hold_id, transfer_id, reverses_entry_id)
    VALUES (p_owner_id, v_seq, p_app, p_operation, p_amount, v_result.balance, p_key, p_fingerprint,
            p_metadata, v_at, v_writer, p_hold_id, p_transfer_id, p_reverses)
    RETURNING e.entry_id INTO v_result.entry_id;
    v_result.owner_id := p_owner_id;
    v_result.app := p_app;
    v_result.operation := p_operation;
    v_result.amount := p_amount;
    v_result.created_at := v_at;
    v_result.replayed := false;
    -- Its entry.posted event, in the same transaction.
    INSERT INTO ledger.events (owner_id, type, seq, entry_id, hold_id, app, payload, occurred_at, recorded_at)
    VALUES (p_owner_id, 'entry.posted', v_seq, v_result.entry_id, p_hold_id, p_app,
            ledger._entry_payload(v_result.entry_id, p_owner_id, p_app, p_operation, p_amount, v_result.balance,
                                  v_seq, v_at, p_key, p_metadata, p_hold_id, p_transfer_id, p_reverses),
            v_at, v_at);
    PERFORM ledger._grant_rows(p_owner_id, v_result.entry_id, v_seq, p_app, p_operation, p_amount, p_reverses,
                               p_priority, coalesce(p_expires_at, v_at + p_expires_after), p_parts, v_at);
    IF v_before IS NOT NULL THEN
        PERFORM ledger._balance_alerts(p_owner_id, v_before, ledger._stored_available(p_owner_id), v_at);
    END IF;
    RETURN v_result;
END
$$;

-- post_entry as it runs on the owner's shard: everything the call does,
-- once ledger.post_entry (below) has checked the owner and read the writer.
-- On Citus this is the function distributed by owner_id (force delegation):
-- a call runs whole on the owner's worker, reached as the schema owner,
-- hence created_by, the caller's role read on the coordinator. Schema
-- ledger_shard: no caller may name it (migrations/0017_ledger_shard.sql).
CREATE OR REPLACE FUNCTION ledger_shard.post_entry(
    owner_id        text,
    app             text,
    operation       text,
    idempotency_key text,
    amount          numeric,
    metadata        text,
    created_by      text)
RETURNS ledger.entry_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_checked text;
    v_op      ledger.operations;
    v_amount  bigint;
    v_meta    jsonb;
    v_fp      uuid;
BEGIN
    PERFORM set_config('ledger.writer', post_entry.created_by, true);  -- ledger._writer()
    v_checked := ledger._require_id('owner_id', post_entry.owner_id);
    v_checked := ledger._require_id('idempotency_key', post_entry.idempotency_key);
    SELECT o.* INTO v_op FROM ledger.operations o
    WHERE o.operation = post_entry.operation
      AND EXISTS (SELECT 1 FROM ledger.apps a WHERE a.app = post_entry.app);
    IF v_op.operation IS NULL OR NOT ledger._usable_by(v_op.is_system, v_op.app, post_entry.app) THEN
        v_op := ledger._operation_for(post_entry.app, post_entry.operation);  -- raises why
    END IF;
    v_amount := ledger._amount_for(v_op.operation, v_op.default_amount, v_op.min_amount, v_op.max_amount,
                                   v_op.caller_sets_amount, post_entry.amount);
    v_meta := ledger._metadata(post_entry.metadata);
    v_fp := ledger._fingerprint(jsonb_build_array('post_entry', post_entry.owner_id, post_entry.operation,
                                                  post_entry.amount, v_meta));
    -- The key is checked under the owner's lock, inside ledger._apply.
    RETURN ledger._apply(post_entry.owner_id, post_entry.app, v_op.operation, v_op.limit_per,
                         CASE v_op.direction WHEN 'debit' THEN -v_amount ELSE v_amount END,
                         post_entry.idempotency_key, v_fp, v_meta,
                         p_priority => v_op.grant_priority, p_expires_after => v_op.expires_after);
END
$$;

-- The entry point: a plain function on every node, never distributed. It
-- refuses a missing or malformed owner (LG007) before the call below is
-- planned (on Citus a NULL owner_id there would crash the backend), reads
-- the writer here, and calls the shard function in one statement with a
-- FROM clause (Citus delegates that form of call, not a PL/pgSQL
-- expression).
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
    v_owner  text := ledger._require_id('owner_id', post_entry.owner_id);
    v_writer text := ledger._writer();
    v_result ledger.entry_result;
BEGIN
    SELECT * INTO v_result
    FROM ledger_shard.post_entry(v_owner, post_entry.app, post_entry.operation, post_entry.idempotency_key,
                                 post_entry.amount, post_entry.metadata, v_writer);
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION ledger.post_entry(text, text, text, text, numeric, text) IS $$
Posts one entry of an operation to an owner's account, once per (owner_id,
app, idempotency_key): the same key for another owner is another request.
The operation decides credit or debit, the default amount (amount NULL),
its bounds and a per-owner limit. Requests with one key take the owner's
account row lock before looking at the key, so they serialize; a retry of
the same request returns the first result with replayed = true and writes
nothing; the key with another request is LG005. Under that lock a debit
needs the available credits (balance minus active holds), else LG001, and
an operation granted once (ever, or per UTC day) is LG004 the second time.
The entry gets the owner's next seq (1, 2, 3, ...) and created_at read
under the lock. Input errors: LG002 unknown operation, LG003 another app's
or a system operation, LG006 an amount that is zero, negative, fractional,
outside the operation's bounds or not the caller's to set, LG007 a missing
or malformed argument (metadata must be a JSON object without repeated
keys, at most 64 KiB), LG011 unknown app. Nothing is written when it
raises.$$;

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

-- The helpers of the app-wide key scope and its advisory lock are gone.
DROP FUNCTION IF EXISTS ledger._claim_key(text, text);
DROP FUNCTION IF EXISTS ledger._key_use(text, text);
DROP FUNCTION IF EXISTS ledger._key_held(text, text);
DROP FUNCTION IF EXISTS ledger._require_key_unused_by_entries(text, text);

-- PL/pgSQL, not an inlined SQL function (Citus cannot plan a parameterized
-- SQL function over its tables), and not SECURITY DEFINER (no SET clause
-- to save and restore on the hottest read): it runs as the caller, so every
-- name and operator is qualified and the caller's search_path cannot change
-- its meaning. The holds are read only when the account has open ones.
-- Credits of an owner's grants that expired at or before p_at but whose
-- EXPIRE entry is not written yet: the stored balance still counts them,
-- readers must not. Qualified throughout: get_balance runs it under the
-- caller's search_path.
CREATE OR REPLACE FUNCTION ledger._expired_unwritten(p_owner_id text, p_at timestamptz)
RETURNS bigint
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_gone pg_catalog.int8;
BEGIN
    SELECT pg_catalog.sum(g.remaining)::pg_catalog.int8 INTO v_gone
    FROM ledger.grants g
    WHERE g.owner_id OPERATOR(pg_catalog.=) p_owner_id
      AND g.status OPERATOR(pg_catalog.=) 'active'
      AND g.remaining OPERATOR(pg_catalog.>) 0
      AND g.expires_at OPERATOR(pg_catalog.<=) p_at;
    RETURN COALESCE(v_gone, 0::pg_catalog.int8);
END
$$;

DROP FUNCTION IF EXISTS ledger.get_balance(text);  -- it returned a set before
CREATE FUNCTION ledger.get_balance(owner_id text)
RETURNS ledger.balance_result
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    -- Types qualified too: they are resolved under the caller's search_path.
    v_owner   pg_catalog.text := ledger._require_id('owner_id', get_balance.owner_id);
    v_balance pg_catalog.int8;
    v_open    pg_catalog.int4;
    v_updated pg_catalog.timestamptz;
    v_next    pg_catalog.timestamptz;
    v_at      pg_catalog.timestamptz;
    v_held    pg_catalog.int8 := 0;
BEGIN
    SELECT a.balance, a.open_holds, a.updated_at, a.next_expiry INTO v_balance, v_open, v_updated, v_next
    FROM ledger.accounts a WHERE a.owner_id OPERATOR(pg_catalog.=) v_owner;
    IF v_open OPERATOR(pg_catalog.>) 0 OR v_next IS NOT NULL THEN
        v_at := pg_catalog.clock_timestamp();
        IF v_open OPERATOR(pg_catalog.>) 0 THEN
            v_held := ledger._active_holds(v_owner, NULL, v_at);
        END IF;
        IF v_next OPERATOR(pg_catalog.<=) v_at THEN
            -- Grants past their expiry count no more, EXPIRE entry written or not.
            v_balance := v_balance OPERATOR(pg_catalog.-) ledger._expired_unwritten(v_owner, v_at);
        END IF;
    END IF;
    v_balance := COALESCE(v_balance, 0::pg_catalog.int8);
    RETURN ROW(v_owner, v_balance, v_held,
               pg_catalog.int8larger(v_balance OPERATOR(pg_catalog.-) v_held, 0::pg_catalog.int8),
               v_updated)::ledger.balance_result;
END
$$;
COMMENT ON FUNCTION ledger.get_balance(text) IS $$
An owner's balance, the credits its active holds reserve (held) and what is
available (balance - held, never below 0: grants that expire or are voided
under an open hold can leave it uncovered); an owner without entries reads
zeros with updated_at NULL. A hold past its expires_at no longer counts,
nor do the credits of a grant past its expires_at, even before its EXPIRE
entry is written. One indexed row, plus the owner's active holds when it
has some and its expired grants when one is due, never a sum over history.
LG007 for a missing or malformed owner_id. Read-only, takes no lock.$$;

-- The read functions take a trailing owner_id (given: straight to that
-- owner's rows; NULL: the entry is found by its id); the old signatures go,
-- or a call without it would be ambiguous.
DROP FUNCTION IF EXISTS ledger._entry_seen_by(ledger.entries, text);
DROP FUNCTION IF EXISTS ledger.get_entry(bigint);
DROP FUNCTION IF EXISTS ledger.get_entry(bigint, text);
DROP FUNCTION IF EXISTS ledger.list_entries(text, bigint, integer);

-- Guarantees: raises LG008 for an entry that is not there (of that owner,
-- when one is named).
CREATE OR REPLACE FUNCTION ledger._entry_not_found(p_entry_id bigint, p_owner_id text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_owner_id IS NULL THEN
        RAISE EXCEPTION 'entry % not found', p_entry_id
            USING ERRCODE = 'LG008', DETAIL = json_build_object('entry_id', p_entry_id, 'kind', 'entry')::text;
    END IF;
    RAISE EXCEPTION 'entry % of owner % not found', p_entry_id, p_owner_id
        USING ERRCODE = 'LG008',
              DETAIL = json_build_object('entry_id', p_entry_id, 'owner_id', p_owner_id, 'kind', 'entry')::text;
END
$$;

-- What an app may see of an entry. Balances and history are shared by every
-- app, so the row itself is always visible; its metadata, idempotency key and
-- fingerprint (a digest of the request, metadata included) belong to the app
-- that wrote it and read NULL for any other app. app NULL (a trusted SQL
-- caller, an auditor) sees everything.
CREATE OR REPLACE FUNCTION ledger.get_entry(entry_id bigint, app text DEFAULT NULL, owner_id text DEFAULT NULL)
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
    IF get_entry.owner_id IS NOT NULL THEN
        PERFORM ledger._require_id('owner_id', get_entry.owner_id);
        SELECT e.* INTO v_entry FROM ledger.entries e
        WHERE e.owner_id = get_entry.owner_id AND e.entry_id = get_entry.entry_id;
    ELSE
        SELECT e.* INTO v_entry FROM ledger.entries e WHERE e.entry_id = get_entry.entry_id;
    END IF;
    IF NOT FOUND THEN
        PERFORM ledger._entry_not_found(get_entry.entry_id, get_entry.owner_id);
    END IF;
    IF get_entry.app IS NOT NULL AND v_entry.app IS DISTINCT FROM get_entry.app THEN
        v_entry.metadata := NULL;
        v_entry.idempotency_key := NULL;
        v_entry.fingerprint := NULL;
    END IF;
    RETURN v_entry;
END
$$;
COMMENT ON FUNCTION ledger.get_entry(bigint, text, text) IS $$
One journal entry, or LG008. With owner_id, only that owner's entry (LG008
for an entry of another owner: the call goes straight to that owner's rows);
without, the entry is found by its id. With app (LG011 when unknown), the
metadata, idempotency key and fingerprint of another app's entry read NULL;
without app (a trusted SQL caller, an auditor) everything is visible.
Read-only.$$;

CREATE OR REPLACE FUNCTION ledger.list_entries(
    owner_id text,
    after_id bigint DEFAULT NULL,
    max_rows integer DEFAULT 100,
    app      text DEFAULT NULL)
RETURNS SETOF ledger.entries
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_before bigint;
BEGIN
    PERFORM ledger._require_id('owner_id', list_entries.owner_id);
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 1000 THEN
        RAISE EXCEPTION 'invalid argument: max_rows must be between 1 and 1000 (% given)', max_rows
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'max_rows', 'reason', 'out of range',
                                             'min', 1, 'max', 1000)::text;
    END IF;
    IF list_entries.app IS NOT NULL THEN
        PERFORM ledger._require_app(list_entries.app);
    END IF;
    -- The page follows the owner's order (seq): after_id names an entry of
    -- this owner, and the page is what came before it.
    IF list_entries.after_id IS NOT NULL THEN
        SELECT e.seq INTO v_before FROM ledger.entries e
        WHERE e.owner_id = list_entries.owner_id AND e.entry_id = list_entries.after_id;
        IF NOT FOUND THEN
            PERFORM ledger._entry_not_found(list_entries.after_id, list_entries.owner_id);
        END IF;
    END IF;
    RETURN QUERY
        SELECT e.entry_id, e.owner_id, e.app, e.operation, e.amount, e.balance,
               CASE WHEN list_entries.app IS NULL OR e.app = list_entries.app THEN e.idempotency_key END,
               CASE WHEN list_entries.app IS NULL OR e.app = list_entries.app THEN e.fingerprint END,
               CASE WHEN list_entries.app IS NULL OR e.app = list_entries.app THEN e.metadata END,
               e.created_at, e.created_by, e.transfer_id, e.hold_id, e.reverses_entry_id, e.seq
        FROM ledger.entries e
        WHERE e.owner_id = list_entries.owner_id
          AND (v_before IS NULL OR e.seq < v_before)
        ORDER BY e.seq DESC
        LIMIT list_entries.max_rows;
END
$$;
COMMENT ON FUNCTION ledger.list_entries(text, bigint, integer, text) IS $$
An owner's entries, newest first in the owner's order (seq), max_rows (1
to 1000, else LG007) at a time; pass the last entry_id of a page as
after_id for the next page (keyset pagination by seq: a page never repeats
or skips an entry while new ones arrive). after_id must be an entry of
that owner (LG008 otherwise). With app (LG011 when unknown), other apps'
private fields read NULL. Read-only.$$;

CREATE OR REPLACE FUNCTION ledger.balance_at(owner_id text, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_balance bigint;
    v_seq     bigint;
    v_gone    bigint;
BEGIN
    PERFORM ledger._require_id('owner_id', balance_at.owner_id);
    IF balance_at.at IS NULL THEN
        RAISE EXCEPTION 'invalid argument: at is required'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'at', 'reason', 'required')::text;
    END IF;
    -- created_at is read under the owner's lock, so it follows seq; entries
    -- of one instant (a batch) are ordered by seq.
    SELECT e.balance, e.seq INTO v_balance, v_seq FROM ledger.entries e
    WHERE e.owner_id = balance_at.owner_id AND e.created_at <= balance_at.at
    ORDER BY e.created_at DESC, e.seq DESC
    LIMIT 1;
    IF v_seq IS NULL THEN
        RETURN 0;
    END IF;
    -- Grants that had expired by `at` still held, as of that entry, what
    -- their EXPIRE entries (written later) removed: not part of the balance.
    SELECT coalesce(sum(g.amount + coalesce(m.moved, 0)), 0) INTO v_gone
    FROM ledger.grants g
    LEFT JOIN LATERAL (SELECT sum(s.amount) AS moved FROM ledger.grant_spending s
                       WHERE s.owner_id = g.owner_id AND s.grant_id = g.grant_id AND s.seq <= v_seq) m ON true
    WHERE g.owner_id = balance_at.owner_id AND g.expires_at <= balance_at.at AND g.seq <= v_seq;
    RETURN v_balance - v_gone;
END
$$;
COMMENT ON FUNCTION ledger.balance_at(text, timestamptz) IS $$
The owner's balance as of an instant: the running balance of the last
entry (in the owner's order, seq) created at or before `at`, less what
was left then of grants that had expired by `at` (their credits are gone
from expires_at on, even where the EXPIRE entry came later); 0 before the
first entry (holds do not count). LG007 for a NULL `at` or a malformed
owner_id. Read-only.$$;
