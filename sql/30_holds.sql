-- Holds: credits reserved for a pending action. available = balance - active
-- holds; debits and new holds check it under the account's row lock. A hold
-- is captured (one debit entry), released, or expires at expires_at by the
-- clock alone. Lock order everywhere: account row, then hold row.

-- A hold's status as callers see it at p_at (NULL: now): an active hold past
-- its expiry reads 'expired'. Scalars, not a row of ledger.holds (a whole-row
-- argument of a table fails on Citus shards).
DROP FUNCTION IF EXISTS ledger._hold_view(ledger.holds);
DROP FUNCTION IF EXISTS ledger._hold_result(ledger.holds, boolean);
DROP FUNCTION IF EXISTS ledger._hold_seen_by(ledger.holds, text);
CREATE OR REPLACE FUNCTION ledger._hold_status(p_status text, p_expires_at timestamptz, p_at timestamptz DEFAULT NULL)
RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN p_status = 'active' AND p_expires_at <= coalesce(p_at, clock_timestamp())
                THEN 'expired' ELSE p_status END
$$;

-- Guarantees: raises LG009 naming the hold's state at p_at, the instant
-- the caller decided with (see ledger._active_holds).
DROP FUNCTION IF EXISTS ledger._hold_not_active(ledger.holds);  -- it read the clock again before
DROP FUNCTION IF EXISTS ledger._hold_not_active(ledger.holds, timestamptz);
CREATE OR REPLACE FUNCTION ledger._hold_not_active(
    p_hold_id bigint, p_status text, p_expires_at timestamptz, p_at timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_status text := ledger._hold_status(p_status, p_expires_at, p_at);
BEGIN
    RAISE EXCEPTION 'hold % is not active (it is %)', p_hold_id, v_status
        USING ERRCODE = 'LG009',
              DETAIL = json_build_object('hold_id', p_hold_id, 'status', v_status,
                                         'expires_at', p_expires_at)::text;
END
$$;

-- Guarantees: the account's count of open holds moves by p_delta (+1 when
-- a hold opens, -1 when it is captured or released). Callers hold the
-- account lock. See migration 0008 for what the count is for.
DROP FUNCTION IF EXISTS ledger._count_open_hold(text, integer);  -- it was a SQL function before
CREATE FUNCTION ledger._count_open_hold(p_owner_id text, p_delta integer)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE ledger.accounts a SET open_holds = a.open_holds + p_delta WHERE a.owner_id = p_owner_id;
END
$$;

-- Guarantees: the hold row, or LG008 (also for a hold of another owner than
-- p_owner_id, when given); LG003 when it belongs to another app. With
-- p_lock the row is locked FOR UPDATE (callers lock the account first).
DROP FUNCTION IF EXISTS ledger._hold_of(bigint, text, boolean);
CREATE OR REPLACE FUNCTION ledger._hold_of(p_hold_id bigint, p_app text, p_owner_id text, p_lock boolean)
RETURNS ledger.holds
LANGUAGE plpgsql
AS $$
DECLARE
    v_hold ledger.holds;
BEGIN
    IF p_hold_id IS NULL THEN
        RAISE EXCEPTION 'invalid argument: hold_id is required'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'hold_id', 'reason', 'required')::text;
    END IF;
    PERFORM ledger._require_id('app', p_app);
    IF p_owner_id IS NULL THEN
        SELECT h.* INTO v_hold FROM ledger.holds h WHERE h.hold_id = p_hold_id;
    ELSIF p_lock THEN
        SELECT h.* INTO v_hold FROM ledger.holds h
        WHERE h.owner_id = p_owner_id AND h.hold_id = p_hold_id FOR UPDATE;
    ELSE
        PERFORM ledger._require_id('owner_id', p_owner_id);
        SELECT h.* INTO v_hold FROM ledger.holds h WHERE h.owner_id = p_owner_id AND h.hold_id = p_hold_id;
    END IF;
    IF NOT FOUND THEN
        PERFORM ledger._hold_not_found(p_hold_id, p_owner_id);
    END IF;
    IF v_hold.app <> p_app THEN
        RAISE EXCEPTION 'hold % belongs to app %, not %', p_hold_id, v_hold.app, p_app
            USING ERRCODE = 'LG003',
                  DETAIL = json_build_object('hold_id', p_hold_id, 'app', p_app, 'hold_app', v_hold.app)::text;
    END IF;
    RETURN v_hold;
END
$$;

-- Guarantees: raises LG008 for a hold that is not there (of that owner, when
-- one is named).
CREATE OR REPLACE FUNCTION ledger._hold_not_found(p_hold_id bigint, p_owner_id text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_owner_id IS NULL THEN
        RAISE EXCEPTION 'hold % not found', p_hold_id
            USING ERRCODE = 'LG008', DETAIL = json_build_object('hold_id', p_hold_id, 'kind', 'hold')::text;
    END IF;
    RAISE EXCEPTION 'hold % of owner % not found', p_hold_id, p_owner_id
        USING ERRCODE = 'LG008',
              DETAIL = json_build_object('hold_id', p_hold_id, 'owner_id', p_owner_id, 'kind', 'hold')::text;
END
$$;

-- create_hold as it runs on the owner's shard; ledger.create_hold (below)
-- is the entry point. As ledger_shard.post_entry (sql/20_entries.sql): on
-- Citus distributed by owner_id and run whole on the owner's worker.
CREATE OR REPLACE FUNCTION ledger_shard.create_hold(
    owner_id        text,
    app             text,
    operation       text,
    idempotency_key text,
    amount          numeric,
    ttl             interval,
    created_by      text)
RETURNS ledger.hold_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_op      ledger.operations;
    v_amount  bigint;
    v_fp      uuid;
    v_hold    ledger.holds;
    v_account record;
    v_held    bigint;
    v_at      timestamptz;
    v_writer  text;
    v_alerts  boolean;
    v_before  bigint;
BEGIN
    PERFORM set_config('ledger.writer', create_hold.created_by, true);  -- ledger._writer()
    PERFORM ledger._require_id('owner_id', create_hold.owner_id);
    PERFORM ledger._require_id('idempotency_key', create_hold.idempotency_key);
    v_op := ledger._operation_for(create_hold.app, create_hold.operation);
    IF v_op.direction <> 'debit' THEN
        RAISE EXCEPTION 'invalid argument: % is a credit operation; holds reserve debits', create_hold.operation
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'operation', 'reason', 'not a debit')::text;
    END IF;
    v_amount := ledger._amount_for(v_op.operation, v_op.default_amount, v_op.min_amount, v_op.max_amount,
                                   v_op.caller_sets_amount, create_hold.amount);
    IF create_hold.ttl IS NULL OR create_hold.ttl < interval '1 second' OR create_hold.ttl > interval '7 days' THEN
        RAISE EXCEPTION 'invalid argument: ttl must be between 1 second and 7 days (% given)', create_hold.ttl
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'ttl', 'reason', 'out of range',
                                             'min', '1 second', 'max', '7 days')::text;
    END IF;
    v_fp := ledger._fingerprint(jsonb_build_array('create_hold', create_hold.owner_id, create_hold.operation,
                                                  create_hold.amount, extract(epoch FROM create_hold.ttl)));

    -- The owner's lock first: every request of a key of (owner, app), a
    -- batch's included, looks at the key under it.
    v_account := ledger._lock_account(create_hold.owner_id, false);
    IF v_account.balance IS NULL THEN
        -- No account: nothing of this owner exists, the key included.
        PERFORM ledger._insufficient(create_hold.owner_id, v_amount, 0);
    END IF;
    v_at := clock_timestamp();  -- one reading under the lock: what counts, and the new hold's start
    v_alerts := ledger._alerts_on();
    IF v_alerts THEN
        v_before := ledger._stored_available(create_hold.owner_id);
    END IF;
    IF v_account.next_expiry <= v_at THEN
        v_account.balance := ledger._expire_due(create_hold.owner_id, v_at);
    END IF;
    SELECT h.* INTO v_hold FROM ledger.holds h
    WHERE h.owner_id = create_hold.owner_id AND h.app = create_hold.app
      AND h.idempotency_key = create_hold.idempotency_key;
    IF FOUND THEN
        PERFORM ledger._require_same_request(create_hold.app, create_hold.idempotency_key, v_hold.fingerprint, v_fp);
        RETURN (v_hold.hold_id, v_hold.owner_id, v_hold.app, v_hold.operation, v_hold.amount,
                ledger._hold_status(v_hold.status, v_hold.expires_at), v_hold.expires_at, true)::ledger.hold_result;
    END IF;
    PERFORM 1 FROM ledger.entries e
    WHERE e.owner_id = create_hold.owner_id AND e.app = create_hold.app
      AND e.idempotency_key = create_hold.idempotency_key;
    IF FOUND THEN
        PERFORM ledger._key_conflict(create_hold.app, create_hold.idempotency_key);
    END IF;

    v_held := CASE WHEN v_account.open_holds > 0
                   THEN ledger._active_holds(create_hold.owner_id, NULL, v_at) ELSE 0 END;
    IF v_account.balance - v_held < v_amount THEN
        PERFORM ledger._insufficient(create_hold.owner_id, v_amount, v_account.balance - v_held);
    END IF;

    -- The writer read here, not in the INSERT: on Citus the statement runs on
    -- the owner's worker, whose session is the schema owner's.
    v_writer := ledger._writer();
    INSERT INTO ledger.holds AS h
        (owner_id, app, operation, amount, idempotency_key, fingerprint, created_at, expires_at, created_by)
    VALUES
        (create_hold.owner_id, create_hold.app, v_op.operation, v_amount, create_hold.idempotency_key, v_fp,
         v_at, v_at + create_hold.ttl, v_writer)
    RETURNING h.* INTO v_hold;
    PERFORM ledger._count_open_hold(create_hold.owner_id, 1);
    -- The hold's expiry is one the owner's next write (or the sweep) must see.
    UPDATE ledger.accounts a SET next_expiry = v_hold.expires_at
    WHERE a.owner_id = create_hold.owner_id AND (a.next_expiry IS NULL OR a.next_expiry > v_hold.expires_at);
    PERFORM ledger._event(create_hold.owner_id, 'hold.created', v_account.last_seq, create_hold.app,
                          ledger._hold_payload(v_hold.hold_id, v_hold.owner_id, v_hold.app, v_hold.operation,
                                               v_hold.amount, 'active', v_hold.expires_at,
                                               create_hold.idempotency_key),
                          v_at, v_at, p_hold_id => v_hold.hold_id);
    IF v_alerts THEN
        PERFORM ledger._balance_alerts(create_hold.owner_id, v_before,
                                       ledger._stored_available(create_hold.owner_id), v_at);
    END IF;
    RETURN (v_hold.hold_id, v_hold.owner_id, v_hold.app, v_hold.operation, v_hold.amount, v_hold.status,
            v_hold.expires_at, false)::ledger.hold_result;
END
$$;

-- The entry point, never distributed: as ledger.post_entry.
CREATE OR REPLACE FUNCTION ledger.create_hold(
    owner_id        text,
    app             text,
    operation       text,
    idempotency_key text,
    amount          numeric DEFAULT NULL,
    ttl             interval DEFAULT '15 minutes')
RETURNS ledger.hold_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_owner  text := ledger._require_id('owner_id', create_hold.owner_id);
    v_writer text := ledger._writer();
    v_result ledger.hold_result;
BEGIN
    SELECT * INTO v_result
    FROM ledger_shard.create_hold(v_owner, create_hold.app, create_hold.operation, create_hold.idempotency_key,
                                  create_hold.amount, create_hold.ttl, v_writer);
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION ledger.create_hold(text, text, text, text, numeric, interval) IS $$
Reserves credits for a pending action: the amount a debit of the operation
would take (post_entry's amount rules, LG006), for ttl (1 second to 7
days; LG007 otherwise, and for a credit operation). Decided under the
owner's account row lock against the available credits (LG001). Idempotent
by (owner_id, app, idempotency_key), looked at under that lock: a retry
returns the hold as it is now with replayed = true; the key with another
request (an entry's included) is LG005. A hold expires by the clock alone
at expires_at: no job is needed. Input errors as post_entry (LG002, LG003,
LG007, LG011).$$;

-- The functions that take a hold id alone gain a trailing owner_id (given:
-- straight to that owner's rows; NULL: the hold is found by its id first).
DROP FUNCTION IF EXISTS ledger.capture_hold(bigint, text, numeric);
DROP FUNCTION IF EXISTS ledger.release_hold(bigint, text);

CREATE OR REPLACE FUNCTION ledger.capture_hold(
    hold_id bigint, app text, amount numeric DEFAULT NULL, owner_id text DEFAULT NULL)
RETURNS ledger.entry_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_hold   ledger.holds;
    v_amount bigint;
    v_limit  text;
    v_at     timestamptz;
    v_entry  ledger.entries;
    v_result ledger.entry_result;
    v_alerts boolean;
    v_before bigint;
    v_seq    bigint;
BEGIN
    v_hold := ledger._hold_of(capture_hold.hold_id, capture_hold.app, capture_hold.owner_id, false);
    IF capture_hold.amount IS NOT NULL
       AND (capture_hold.amount <= 0 OR capture_hold.amount <> trunc(capture_hold.amount)
            OR capture_hold.amount > v_hold.amount) THEN
        RAISE EXCEPTION 'invalid amount: a capture of hold % takes 1 to % credits (% given)',
                v_hold.hold_id, v_hold.amount, capture_hold.amount
            USING ERRCODE = 'LG006',
                  DETAIL = json_build_object('hold_id', v_hold.hold_id, 'amount', capture_hold.amount::text,
                                             'reason', 'out of bounds', 'min_amount', 1,
                                             'max_amount', v_hold.amount)::text;
    END IF;
    v_amount := coalesce(capture_hold.amount, v_hold.amount)::bigint;

    -- Lock order: account, then hold, both of the hold's owner.
    PERFORM ledger._lock_account(v_hold.owner_id, false);
    v_hold := ledger._hold_of(capture_hold.hold_id, capture_hold.app, v_hold.owner_id, true);
    v_at := clock_timestamp();  -- the call's one expiry decision, under the locks
    v_alerts := ledger._alerts_on();
    IF v_alerts THEN
        v_before := ledger._stored_available(v_hold.owner_id);
    END IF;

    IF v_hold.status = 'captured' AND v_hold.capture_request IS NOT DISTINCT FROM capture_hold.amount THEN
        SELECT e.* INTO v_entry FROM ledger.entries e
        WHERE e.owner_id = v_hold.owner_id AND e.entry_id = v_hold.entry_id;
        v_result := (v_entry.entry_id, v_entry.owner_id, v_entry.app, v_entry.operation,
                     v_entry.amount, v_entry.balance, v_entry.created_at, true);
        RETURN v_result;
    END IF;
    IF v_hold.status <> 'active' OR v_hold.expires_at <= v_at THEN
        PERFORM ledger._hold_not_active(v_hold.hold_id, v_hold.status, v_hold.expires_at, v_at);
    END IF;

    SELECT o.limit_per INTO v_limit FROM ledger.operations o WHERE o.operation = v_hold.operation;
    v_result := ledger._apply(v_hold.owner_id, v_hold.app, v_hold.operation, v_limit,
                              -v_amount, NULL, NULL, jsonb_build_object('hold_id', v_hold.hold_id),
                              p_hold_id => v_hold.hold_id);
    UPDATE ledger.holds h
    SET status = 'captured', closed_at = v_result.created_at, captured_amount = v_amount,
        capture_request = capture_hold.amount, entry_id = v_result.entry_id
    WHERE h.owner_id = v_hold.owner_id AND h.hold_id = v_hold.hold_id;
    PERFORM ledger._count_open_hold(v_hold.owner_id, -1);
    SELECT a.last_seq INTO v_seq FROM ledger.accounts a WHERE a.owner_id = v_hold.owner_id;
    PERFORM ledger._event(v_hold.owner_id, 'hold.captured', v_seq, v_hold.app,
                          ledger._hold_payload(v_hold.hold_id, v_hold.owner_id, v_hold.app, v_hold.operation,
                                               v_hold.amount, 'captured', v_hold.expires_at, v_hold.idempotency_key,
                                               v_amount, v_result.entry_id),
                          v_result.created_at, v_result.created_at, p_entry_id => v_result.entry_id,
                          p_hold_id => v_hold.hold_id);
    IF v_alerts THEN
        PERFORM ledger._balance_alerts(v_hold.owner_id, v_before,
                                       ledger._stored_available(v_hold.owner_id), v_result.created_at);
    END IF;
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION ledger.capture_hold(bigint, text, numeric, text) IS $$
Turns an active, unexpired hold of the calling app into one debit entry of
amount (NULL = the whole hold; 1 to the hold's amount, else LG006) and
frees the rest, under the account and hold row locks. Repeating the same
capture returns the original entry with replayed = true; any other call on
a captured, released or expired hold is LG009. With owner_id the call goes
straight to that owner's holds (LG008 for a hold of another owner);
without, the hold is found by its id first. LG008 for an unknown hold,
LG003 for another app's hold.$$;

CREATE OR REPLACE FUNCTION ledger.release_hold(hold_id bigint, app text, owner_id text DEFAULT NULL)
RETURNS ledger.hold_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_hold    ledger.holds;
    v_at      timestamptz;
    v_account record;
    v_alerts  boolean;
    v_before  bigint;
BEGIN
    -- Lock order: account, then hold (the account's open_holds changes).
    v_hold := ledger._hold_of(release_hold.hold_id, release_hold.app, release_hold.owner_id, false);
    v_account := ledger._lock_account(v_hold.owner_id, false);
    v_hold := ledger._hold_of(release_hold.hold_id, release_hold.app, v_hold.owner_id, true);
    v_at := clock_timestamp();  -- the call's one expiry decision, under the locks
    IF v_hold.status = 'released' THEN
        RETURN (v_hold.hold_id, v_hold.owner_id, v_hold.app, v_hold.operation, v_hold.amount, v_hold.status,
                v_hold.expires_at, true)::ledger.hold_result;
    END IF;
    IF v_hold.status <> 'active' OR v_hold.expires_at <= v_at THEN
        PERFORM ledger._hold_not_active(v_hold.hold_id, v_hold.status, v_hold.expires_at, v_at);
    END IF;
    v_alerts := ledger._alerts_on();
    IF v_alerts THEN
        v_before := ledger._stored_available(v_hold.owner_id);
    END IF;
    UPDATE ledger.holds h SET status = 'released', closed_at = v_at
    WHERE h.owner_id = v_hold.owner_id AND h.hold_id = v_hold.hold_id;
    PERFORM ledger._count_open_hold(v_hold.owner_id, -1);
    PERFORM ledger._event(v_hold.owner_id, 'hold.released', v_account.last_seq, v_hold.app,
                          ledger._hold_payload(v_hold.hold_id, v_hold.owner_id, v_hold.app, v_hold.operation,
                                               v_hold.amount, 'released', v_hold.expires_at,
                                               v_hold.idempotency_key),
                          v_at, v_at, p_hold_id => v_hold.hold_id);
    IF v_alerts THEN
        PERFORM ledger._balance_alerts(v_hold.owner_id, v_before,
                                       ledger._stored_available(v_hold.owner_id), v_at);
    END IF;
    RETURN (v_hold.hold_id, v_hold.owner_id, v_hold.app, v_hold.operation, v_hold.amount, 'released',
            v_hold.expires_at, false)::ledger.hold_result;
END
$$;
COMMENT ON FUNCTION ledger.release_hold(bigint, text, text) IS $$
Frees an active, unexpired hold of the calling app under the account and
hold row locks: its credits are available again. Repeating a release
returns the hold with replayed = true; releasing a captured or expired hold
is LG009. With owner_id the call goes straight to that owner's holds
(LG008 for a hold of another owner); without, the hold is found by its id
first. LG008 for an unknown hold, LG003 for another app's hold.$$;

-- The read functions take a trailing owner_id as well (see get_entry).
DROP FUNCTION IF EXISTS ledger.get_hold(bigint);
DROP FUNCTION IF EXISTS ledger.get_hold(bigint, text);
DROP FUNCTION IF EXISTS ledger.list_holds(text);

CREATE OR REPLACE FUNCTION ledger.get_hold(hold_id bigint, app text DEFAULT NULL, owner_id text DEFAULT NULL)
RETURNS ledger.holds
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_hold ledger.holds;
BEGIN
    IF get_hold.app IS NOT NULL THEN
        PERFORM ledger._require_app(get_hold.app);
    END IF;
    IF get_hold.owner_id IS NOT NULL THEN
        PERFORM ledger._require_id('owner_id', get_hold.owner_id);
        SELECT h.* INTO v_hold FROM ledger.holds h
        WHERE h.owner_id = get_hold.owner_id AND h.hold_id = get_hold.hold_id;
    ELSE
        SELECT h.* INTO v_hold FROM ledger.holds h WHERE h.hold_id = get_hold.hold_id;
    END IF;
    IF NOT FOUND THEN
        PERFORM ledger._hold_not_found(get_hold.hold_id, get_hold.owner_id);
    END IF;
    v_hold.status := ledger._hold_status(v_hold.status, v_hold.expires_at);
    IF get_hold.app IS NOT NULL AND v_hold.app IS DISTINCT FROM get_hold.app THEN
        v_hold.idempotency_key := NULL;
        v_hold.fingerprint := NULL;
    END IF;
    RETURN v_hold;
END
$$;
COMMENT ON FUNCTION ledger.get_hold(bigint, text, text) IS $$
One hold, or LG008. Its status is active, captured, released or expired
(an active hold past expires_at reads expired). With owner_id, only that
owner's hold (LG008 for a hold of another owner); without, the hold is
found by its id. With app (LG011 when unknown), another app's idempotency
key and fingerprint read NULL. Read-only.$$;

CREATE OR REPLACE FUNCTION ledger.list_holds(owner_id text, app text DEFAULT NULL)
RETURNS SETOF ledger.holds
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ledger._require_id('owner_id', list_holds.owner_id);
    IF list_holds.app IS NOT NULL THEN
        PERFORM ledger._require_app(list_holds.app);
    END IF;
    RETURN QUERY
        SELECT h.hold_id, h.owner_id, h.app, h.operation, h.amount,
               ledger._hold_status(h.status, h.expires_at),
               CASE WHEN list_holds.app IS NULL OR h.app = list_holds.app THEN h.idempotency_key END,
               CASE WHEN list_holds.app IS NULL OR h.app = list_holds.app THEN h.fingerprint END,
               h.created_at, h.expires_at, h.closed_at, h.captured_amount, h.capture_request, h.entry_id,
               h.created_by
        FROM ledger.holds h
        WHERE h.owner_id = list_holds.owner_id
        ORDER BY h.created_at DESC, h.hold_id DESC;
END
$$;
COMMENT ON FUNCTION ledger.list_holds(text, text) IS $$
An owner's holds, newest first (by created_at, read under the owner's
lock), with the status get_hold reports; with app (LG011 when unknown),
other apps' keys and fingerprints read NULL. Read-only.$$;
