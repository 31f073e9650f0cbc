-- Operators: corrections made by a person (the console, or SQL as a member of
-- ledger_operator) on any app's entries, grants and holds, and the reads the
-- console shows. Tables in migrations/0018_operators.sql.
--
-- An operator function holds no rule of its own: it finds the app that wrote
-- the target and calls the function that app would call (grant_credits,
-- void_grant, reverse_entry, release_hold), so amounts, expiry, locks,
-- idempotency and events are decided exactly as for the app; then it records
-- who acted and why in ledger.operator_actions, in the same transaction. The
-- operator's idempotency key lives in the app's key space of that owner,
-- prefixed with "operator:" so that it never names one of the app's own
-- requests.

-- Guarantees: the reason, trimmed; LG007 (field reason) when it is missing,
-- blank or longer than 1000 characters. A correction without a reason is
-- refused before anything is read.
CREATE OR REPLACE FUNCTION ledger._require_reason(p_reason text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_reason text := btrim(p_reason);
BEGIN
    IF v_reason IS NULL OR v_reason = '' THEN
        RAISE EXCEPTION 'invalid argument: reason is required'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'reason', 'reason', 'required')::text;
    END IF;
    IF length(v_reason) > 1000 THEN
        RAISE EXCEPTION 'invalid argument: reason is longer than 1000 characters'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'reason', 'reason', 'too long')::text;
    END IF;
    RETURN v_reason;
END
$$;

-- Guarantees: the key an operator function passes to the app's function
-- ("operator:" and the operator's key); LG007 for a missing or malformed key.
CREATE OR REPLACE FUNCTION ledger._operator_key(p_key text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    PERFORM ledger._require_id('idempotency_key', p_key);
    RETURN 'operator:' || p_key;
END
$$;

-- Guarantees: one row of ledger.operator_actions, written now.
CREATE OR REPLACE FUNCTION ledger._record_action(
    p_owner_id text, p_action text, p_operator text, p_reason text, p_app text, p_key text,
    p_entry_id bigint DEFAULT NULL, p_hold_id bigint DEFAULT NULL, p_grant_id bigint DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO ledger.operator_actions
        (owner_id, action, operator, reason, app, entry_id, hold_id, grant_id, idempotency_key,
         created_at, created_by)
    VALUES (p_owner_id, p_action, p_operator, p_reason, p_app, p_entry_id, p_hold_id, p_grant_id, p_key,
            clock_timestamp(), ledger._writer());
END
$$;

CREATE OR REPLACE FUNCTION ledger.operator_grant_credits(
    operator        text,
    reason          text,
    owner_id        text,
    app             text,
    operation       text,
    idempotency_key text,
    amount          numeric DEFAULT NULL,
    expires_at      timestamptz DEFAULT NULL,
    priority        integer DEFAULT NULL)
RETURNS ledger.entry_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_reason   text;
    v_key      text;
    v_result   ledger.entry_result;
    v_grant_id bigint;
BEGIN
    PERFORM ledger._require_id('operator', operator_grant_credits.operator);
    v_reason := ledger._require_reason(operator_grant_credits.reason);
    v_key := ledger._operator_key(operator_grant_credits.idempotency_key);
    SELECT * INTO v_result
    FROM ledger.grant_credits(operator_grant_credits.owner_id, operator_grant_credits.app,
                              operator_grant_credits.operation, v_key, operator_grant_credits.amount,
                              operator_grant_credits.expires_at, operator_grant_credits.priority,
                              json_build_object('operator', operator_grant_credits.operator,
                                                'reason', v_reason)::text);
    IF NOT v_result.replayed THEN
        SELECT g.grant_id INTO v_grant_id FROM ledger.grants g
        WHERE g.owner_id = v_result.owner_id AND g.entry_id = v_result.entry_id;
        PERFORM ledger._record_action(v_result.owner_id, 'grant_credits', operator_grant_credits.operator,
                                      v_reason, v_result.app, v_key, p_entry_id => v_result.entry_id,
                                      p_grant_id => v_grant_id);
    END IF;
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION ledger.operator_grant_credits(text, text, text, text, text, text, numeric, timestamptz, integer) IS $$
An operator's credit: grant_credits for owner_id as app (any app), with
the operator and the reason in the entry's metadata and in
operator_actions. reason is required (LG007, field reason, when missing or
blank); operator is an id (LG007). Every rule of grant_credits applies
(the operation's amounts, expiry and limit; LG002, LG003, LG006, LG007,
LG011). Idempotent by (owner_id, app, "operator:" || idempotency_key): a
retry returns the entry with replayed = true and records nothing again;
the same key with another request is LG005. ledger_operator only.$$;

CREATE OR REPLACE FUNCTION ledger.operator_void_grant(
    operator        text,
    reason          text,
    grant_id        bigint,
    idempotency_key text,
    owner_id        text DEFAULT NULL)
RETURNS ledger.entry_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_reason text;
    v_key    text;
    v_app    text;
    v_owner  text;
    v_result ledger.entry_result;
BEGIN
    PERFORM ledger._require_id('operator', operator_void_grant.operator);
    v_reason := ledger._require_reason(operator_void_grant.reason);
    v_key := ledger._operator_key(operator_void_grant.idempotency_key);
    IF operator_void_grant.grant_id IS NULL THEN
        RAISE EXCEPTION 'invalid argument: grant_id is required'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'grant_id', 'reason', 'required')::text;
    END IF;
    IF operator_void_grant.owner_id IS NOT NULL THEN
        PERFORM ledger._require_id('owner_id', operator_void_grant.owner_id);
        SELECT g.app, g.owner_id INTO v_app, v_owner FROM ledger.grants g
        WHERE g.owner_id = operator_void_grant.owner_id AND g.grant_id = operator_void_grant.grant_id;
    ELSE
        SELECT g.app, g.owner_id INTO v_app, v_owner FROM ledger.grants g
        WHERE g.grant_id = operator_void_grant.grant_id;
    END IF;
    IF NOT FOUND THEN
        PERFORM ledger._grant_not_found(operator_void_grant.grant_id, operator_void_grant.owner_id);
    END IF;
    v_result := ledger.void_grant(operator_void_grant.grant_id, v_app, v_key, v_reason, v_owner);
    IF NOT v_result.replayed THEN
        PERFORM ledger._record_action(v_owner, 'void_grant', operator_void_grant.operator, v_reason, v_app,
                                      v_key, p_entry_id => v_result.entry_id,
                                      p_grant_id => operator_void_grant.grant_id);
    END IF;
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION ledger.operator_void_grant(text, text, bigint, text, text) IS $$
An operator's void: void_grant of any app's grant, as the app that made
it (a VOID entry of what remains; what was spent stays spent), with the
reason in the entry's metadata and the operator and the reason in
operator_actions. reason is required (LG007). LG008 for an unknown grant,
LG014 when nothing is left. Idempotent by (the grant's owner, its app,
"operator:" || idempotency_key). ledger_operator only.$$;

CREATE OR REPLACE FUNCTION ledger.operator_reverse_entry(
    operator        text,
    reason          text,
    entry_id        bigint,
    idempotency_key text,
    owner_id        text DEFAULT NULL)
RETURNS SETOF ledger.entry_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_reason text;
    v_key    text;
    v_app    text;
    v_owner  text;
    v_result ledger.entry_result;
BEGIN
    PERFORM ledger._require_id('operator', operator_reverse_entry.operator);
    v_reason := ledger._require_reason(operator_reverse_entry.reason);
    v_key := ledger._operator_key(operator_reverse_entry.idempotency_key);
    IF operator_reverse_entry.entry_id IS NULL THEN
        RAISE EXCEPTION 'invalid argument: entry_id is required'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'entry_id', 'reason', 'required')::text;
    END IF;
    IF operator_reverse_entry.owner_id IS NOT NULL THEN
        PERFORM ledger._require_id('owner_id', operator_reverse_entry.owner_id);
        SELECT e.app, e.owner_id INTO v_app, v_owner FROM ledger.entries e
        WHERE e.owner_id = operator_reverse_entry.owner_id AND e.entry_id = operator_reverse_entry.entry_id;
    ELSE
        SELECT e.app, e.owner_id INTO v_app, v_owner FROM ledger.entries e
        WHERE e.entry_id = operator_reverse_entry.entry_id;
    END IF;
    IF NOT FOUND THEN
        PERFORM ledger._entry_not_found(operator_reverse_entry.entry_id, operator_reverse_entry.owner_id);
    END IF;
    FOR v_result IN
        SELECT * FROM ledger.reverse_entry(operator_reverse_entry.entry_id, v_app, v_key, v_reason, v_owner)
    LOOP
        IF NOT v_result.replayed THEN
            PERFORM ledger._record_action(v_result.owner_id, 'reverse_entry', operator_reverse_entry.operator,
                                          v_reason, v_app, v_key, p_entry_id => v_result.entry_id);
        END IF;
        RETURN NEXT v_result;
    END LOOP;
    RETURN;
END
$$;
COMMENT ON FUNCTION ledger.operator_reverse_entry(text, text, bigint, text, text) IS $$
An operator's reversal: reverse_entry of any app's entry, as the app that
wrote it (the REVERSAL entry, both legs of a transfer, credits given back
to the grants a debit spent), with the reason in the entry's metadata and
the operator and the reason in operator_actions (one row per reversal
entry). reason is required (LG007). LG008 for an unknown entry, LG010 when
it is already reversed, LG001 for a credit already spent. Idempotent by
(the entry's owner, its app, "operator:" || idempotency_key).
ledger_operator only.$$;

CREATE OR REPLACE FUNCTION ledger.operator_release_hold(
    operator        text,
    reason          text,
    hold_id         bigint,
    idempotency_key text,
    owner_id        text DEFAULT NULL)
RETURNS ledger.hold_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_reason text;
    v_key    text;
    v_app    text;
    v_owner  text;
    v_result ledger.hold_result;
BEGIN
    PERFORM ledger._require_id('operator', operator_release_hold.operator);
    v_reason := ledger._require_reason(operator_release_hold.reason);
    v_key := ledger._operator_key(operator_release_hold.idempotency_key);
    IF operator_release_hold.hold_id IS NULL THEN
        RAISE EXCEPTION 'invalid argument: hold_id is required'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'hold_id', 'reason', 'required')::text;
    END IF;
    IF operator_release_hold.owner_id IS NOT NULL THEN
        PERFORM ledger._require_id('owner_id', operator_release_hold.owner_id);
        SELECT h.app, h.owner_id INTO v_app, v_owner FROM ledger.holds h
        WHERE h.owner_id = operator_release_hold.owner_id AND h.hold_id = operator_release_hold.hold_id;
    ELSE
        SELECT h.app, h.owner_id INTO v_app, v_owner FROM ledger.holds h
        WHERE h.hold_id = operator_release_hold.hold_id;
    END IF;
    IF NOT FOUND THEN
        PERFORM ledger._hold_not_found(operator_release_hold.hold_id, operator_release_hold.owner_id);
    END IF;
    v_result := ledger.release_hold(operator_release_hold.hold_id, v_app, v_owner);
    -- A hold is released once: a release that finds it released already
    -- (by its app or by an operator) records nothing.
    IF NOT v_result.replayed THEN
        PERFORM ledger._record_action(v_owner, 'release_hold', operator_release_hold.operator, v_reason,
                                      v_app, v_key, p_hold_id => operator_release_hold.hold_id);
    END IF;
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION ledger.operator_release_hold(text, text, bigint, text, text) IS $$
An operator's release: release_hold of any app's active hold, as the app
that made it (its credits are available again; the hold.released event),
with the operator, the reason and idempotency_key in operator_actions.
reason is required (LG007). LG008 for an unknown hold, LG009 for a hold
captured or expired. Releasing a released hold returns it with replayed =
true and records nothing. ledger_operator only.$$;

CREATE OR REPLACE FUNCTION ledger.list_operator_actions(
    owner_id text,
    entry_id bigint DEFAULT NULL,
    hold_id  bigint DEFAULT NULL,
    max_rows integer DEFAULT 100)
RETURNS SETOF ledger.operator_action
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ledger._require_id('owner_id', list_operator_actions.owner_id);
    PERFORM ledger._webhook_rows(list_operator_actions.max_rows, 1000);
    RETURN QUERY
    SELECT a.action_id, a.owner_id, a.action, a.operator, a.reason, a.app, a.entry_id, a.hold_id,
           a.grant_id, a.created_at
    FROM ledger.operator_actions a
    WHERE a.owner_id = list_operator_actions.owner_id
      AND (list_operator_actions.entry_id IS NULL OR a.entry_id = list_operator_actions.entry_id)
      AND (list_operator_actions.hold_id IS NULL OR a.hold_id = list_operator_actions.hold_id)
    ORDER BY a.created_at DESC, a.action_id DESC
    LIMIT list_operator_actions.max_rows;
END
$$;
COMMENT ON FUNCTION ledger.list_operator_actions(text, bigint, bigint, integer) IS $$
What operators did to an owner's rows, newest first: who, why, which
action, and the entry it wrote or the hold it released (with entry_id or
hold_id, only those). max_rows 1 to 1000 (LG007 otherwise). Read-only.$$;

-- The console's reads. Each is one owner's rows by index, or a bounded
-- window of the whole ledger (the overview).

CREATE OR REPLACE FUNCTION ledger.owner_history(
    owner_id   text,
    before_seq bigint DEFAULT NULL,
    max_rows   integer DEFAULT 50,
    app        text DEFAULT NULL,
    operation  text DEFAULT NULL)
RETURNS SETOF ledger.history_entry
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ledger._require_id('owner_id', owner_history.owner_id);
    PERFORM ledger._webhook_rows(owner_history.max_rows, 1000);
    RETURN QUERY
    SELECT e.entry_id, e.seq, e.owner_id, e.app, e.operation, e.amount, e.balance, e.created_at,
           e.created_by, e.transfer_id, e.hold_id, e.reverses_entry_id, r.entry_id, a.operator, a.reason
    FROM ledger.entries e
    LEFT JOIN LATERAL (SELECT x.entry_id FROM ledger.entries x
                       WHERE x.reverses_entry_id = e.entry_id AND x.owner_id = e.owner_id) r ON true
    LEFT JOIN LATERAL (SELECT o.operator, o.reason FROM ledger.operator_actions o
                       WHERE o.owner_id = e.owner_id AND o.entry_id = e.entry_id
                       ORDER BY o.action_id LIMIT 1) a ON true
    WHERE e.owner_id = owner_history.owner_id
      AND (owner_history.before_seq IS NULL OR e.seq < owner_history.before_seq)
      AND (owner_history.app IS NULL OR e.app = owner_history.app)
      AND (owner_history.operation IS NULL OR e.operation = owner_history.operation)
    ORDER BY e.seq DESC
    LIMIT owner_history.max_rows;
END
$$;
COMMENT ON FUNCTION ledger.owner_history(text, bigint, integer, text, text) IS $$
An owner's entries newest first (by seq), keyset-paginated: pass the
smallest seq of a page as before_seq for the next. Filtered by app and by
operation when given. Each row says which entry reversed it (reversed_by)
and, for an entry an operator wrote, who and why. max_rows 1 to 1000
(LG007 otherwise). Read-only; metadata and keys are read with get_entry.$$;

CREATE OR REPLACE FUNCTION ledger.find_owners(owner_id text, max_rows integer DEFAULT 20)
RETURNS SETOF ledger.busy_owner
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ledger._require_id('owner_id', find_owners.owner_id);
    PERFORM ledger._webhook_rows(find_owners.max_rows, 100);
    RETURN QUERY
    SELECT a.owner_id, a.last_seq, a.updated_at, a.balance
    FROM ledger.accounts a
    WHERE a.owner_id >= find_owners.owner_id
    ORDER BY a.owner_id
    LIMIT find_owners.max_rows;
END
$$;
COMMENT ON FUNCTION ledger.find_owners(text, integer) IS $$
The owners whose id is owner_id or follows it in id order (an owner
search: the first row is the owner itself when it exists), with how many
entries each has, when its account last changed and its balance.
max_rows 1 to 100 (LG007 otherwise). Read-only.$$;

CREATE OR REPLACE FUNCTION ledger.balance_series(owner_id text, points integer DEFAULT 60)
RETURNS SETOF ledger.balance_point
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_first timestamptz;
    v_now   timestamptz := clock_timestamp();
    v_step  interval;
BEGIN
    PERFORM ledger._require_id('owner_id', balance_series.owner_id);
    IF balance_series.points IS NULL OR balance_series.points NOT BETWEEN 2 AND 500 THEN
        RAISE EXCEPTION 'invalid argument: points must be 2 to 500'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'points', 'reason', 'out of range')::text;
    END IF;
    SELECT e.created_at INTO v_first FROM ledger.entries e
    WHERE e.owner_id = balance_series.owner_id ORDER BY e.seq LIMIT 1;
    IF v_first IS NULL THEN
        RETURN;
    END IF;
    v_step := (v_now - v_first) / (balance_series.points - 1);
    RETURN QUERY
    SELECT t.at, ledger.balance_at(balance_series.owner_id, t.at)
    FROM (SELECT v_first + v_step * i AS at FROM generate_series(0, balance_series.points - 1) i) t
    ORDER BY t.at;
END
$$;
COMMENT ON FUNCTION ledger.balance_series(text, integer) IS $$
The owner's balance (balance_at) at `points` evenly spaced instants from
its first entry to now (2 to 500, else LG007); no rows for an owner
without entries. Each point is one indexed lookup, whatever the length of
the history. Read-only.$$;

CREATE OR REPLACE FUNCTION ledger.daily_activity(days integer DEFAULT 30)
RETURNS SETOF ledger.daily_activity
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_from timestamptz;
BEGIN
    IF daily_activity.days IS NULL OR daily_activity.days NOT BETWEEN 1 AND 366 THEN
        RAISE EXCEPTION 'invalid argument: days must be 1 to 366'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'days', 'reason', 'out of range')::text;
    END IF;
    v_from := (date_trunc('day', clock_timestamp() AT TIME ZONE 'UTC') - (daily_activity.days - 1) * interval '1 day')
              AT TIME ZONE 'UTC';
    RETURN QUERY
    WITH e AS (
        SELECT (x.created_at AT TIME ZONE 'UTC')::date AS day, x.app,
               sum(x.amount) FILTER (WHERE x.amount > 0 AND x.reverses_entry_id IS NULL) AS issued,
               -sum(x.amount) FILTER (WHERE x.amount < 0 AND x.reverses_entry_id IS NULL
                                      AND x.operation NOT IN ('EXPIRE', 'VOID')) AS spent,
               -sum(x.amount) FILTER (WHERE x.operation = 'EXPIRE') AS expired
        FROM ledger.entries x
        WHERE x.created_at >= v_from
        GROUP BY 1, 2
    ), h AS (
        SELECT (y.created_at AT TIME ZONE 'UTC')::date AS day, y.app, sum(y.amount) AS held
        FROM ledger.holds y
        WHERE y.created_at >= v_from
        GROUP BY 1, 2
    )
    SELECT coalesce(e.day, h.day), coalesce(e.app, h.app),
           coalesce(e.issued, 0)::bigint, coalesce(e.spent, 0)::bigint, coalesce(e.expired, 0)::bigint,
           coalesce(h.held, 0)::bigint
    FROM e FULL JOIN h ON h.day = e.day AND h.app = e.app
    ORDER BY 1, 2;
END
$$;
COMMENT ON FUNCTION ledger.daily_activity(integer) IS $$
Per UTC day (the last `days`, today included; 1 to 366, else LG007) and
per app: credits issued (credit entries, transfers received included,
reversals excluded), spent (debit entries and captures, transfers sent
included, reversals, expiries and voids excluded), expired (EXPIRE
entries) and held (holds created). Only days and apps with activity have
a row. Reads every entry and hold of the window. Read-only.$$;

CREATE OR REPLACE FUNCTION ledger.busiest_owners(since interval DEFAULT interval '1 day',
                                                 max_rows integer DEFAULT 10)
RETURNS SETOF ledger.busy_owner
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_from timestamptz;
BEGIN
    PERFORM ledger._webhook_rows(busiest_owners.max_rows, 1000);
    IF busiest_owners.since IS NULL OR busiest_owners.since <= interval '0'
       OR busiest_owners.since > interval '366 days' THEN
        RAISE EXCEPTION 'invalid argument: since must be more than 0 and at most 366 days'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'since', 'reason', 'out of range')::text;
    END IF;
    v_from := clock_timestamp() - busiest_owners.since;
    RETURN QUERY
    SELECT b.owner_id, b.n, b.last_at, a.balance
    FROM (SELECT x.owner_id, count(*) AS n, max(x.created_at) AS last_at
          FROM ledger.entries x WHERE x.created_at >= v_from
          GROUP BY x.owner_id
          ORDER BY count(*) DESC, x.owner_id
          LIMIT busiest_owners.max_rows) b
    JOIN ledger.accounts a ON a.owner_id = b.owner_id
    ORDER BY b.n DESC, b.owner_id;
END
$$;
COMMENT ON FUNCTION ledger.busiest_owners(interval, integer) IS $$
The owners with the most entries since `since` ago (more than 0, at most
366 days, else LG007), most first: how many, the last one's time, the
balance now. max_rows 1 to 1000 (LG007 otherwise). Read-only.$$;

CREATE OR REPLACE FUNCTION ledger.list_open_holds(
    expiring_within interval DEFAULT interval '1 hour',
    stale_after     interval DEFAULT interval '1 day',
    max_rows        integer DEFAULT 200)
RETURNS SETOF ledger.open_hold
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_at timestamptz := clock_timestamp();
BEGIN
    PERFORM ledger._webhook_rows(list_open_holds.max_rows, 1000);
    IF list_open_holds.expiring_within IS NULL OR list_open_holds.stale_after IS NULL
       OR list_open_holds.expiring_within < interval '0' OR list_open_holds.stale_after < interval '0' THEN
        RAISE EXCEPTION 'invalid argument: expiring_within and stale_after must be 0 or more'
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'expiring_within', 'reason', 'out of range')::text;
    END IF;
    RETURN QUERY
    SELECT h.hold_id, h.owner_id, h.app, h.operation, h.amount, h.created_at, h.expires_at,
           CASE WHEN h.expires_at <= v_at THEN 'expired'
                WHEN h.expires_at <= v_at + list_open_holds.expiring_within THEN 'expiring'
                WHEN h.created_at <= v_at - list_open_holds.stale_after THEN 'stale'
                ELSE 'open' END
    FROM ledger.holds h
    WHERE h.status = 'active'
    ORDER BY h.expires_at, h.owner_id, h.hold_id
    LIMIT list_open_holds.max_rows;
END
$$;
COMMENT ON FUNCTION ledger.list_open_holds(interval, interval, integer) IS $$
Holds neither captured nor released, soonest expiry first, each with its
state: expiring (expires within expiring_within), stale (open for longer
than stale_after), open, or expired (its expiry passed: it reserves
nothing any more, and no capture or release closed it). max_rows 1 to
1000 (LG007 otherwise). Read-only.$$;

CREATE OR REPLACE FUNCTION ledger.record_verify()
RETURNS ledger.verify_run
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_start  timestamptz := clock_timestamp();
    v_count  integer;
    v_sample jsonb;
    v_run    ledger.verify_run;
BEGIN
    SELECT count(*), coalesce(jsonb_agg(to_jsonb(v)) FILTER (WHERE v.n <= 20), '[]')
    INTO v_count, v_sample
    FROM (SELECT f.*, row_number() OVER () AS n FROM ledger.verify() f) v;
    INSERT INTO ledger.verify_runs AS r (ran_at, duration_ms, findings, sample, ran_by)
    VALUES (v_start, (extract(epoch FROM clock_timestamp() - v_start) * 1000)::integer, v_count,
            (SELECT coalesce(jsonb_agg(x - 'n'), '[]') FROM jsonb_array_elements(v_sample) x), ledger._writer())
    RETURNING r.run_id, r.ran_at, r.duration_ms, r.findings, r.sample, r.ran_by INTO v_run;
    RETURN v_run;
END
$$;
COMMENT ON FUNCTION ledger.record_verify() IS $$
Runs verify() and records the run: when, how long, by whom, how many
findings and the first 20 of them. Returns the run.$$;

CREATE OR REPLACE FUNCTION ledger.latest_verify()
RETURNS SETOF ledger.verify_run
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT r.run_id, r.ran_at, r.duration_ms, r.findings, r.sample, r.ran_by
    FROM ledger.verify_runs r ORDER BY r.run_id DESC LIMIT 1;
END
$$;
COMMENT ON FUNCTION ledger.latest_verify() IS $$
The last run record_verify() recorded (no row when none ran). Read-only.$$;

-- The console's sign-ins. The console checks a password against its hash
-- (the hash is made and checked by the web service; the database never sees
-- a password); what the database decides is whether an attempt may be made
-- now. Every attempt counts as a failure until the console reports its
-- success, under the user's row lock, so parallel guesses are counted too.
-- After 3 failures in a row each attempt waits 2^(failures - 3) seconds after
-- the last failure, at most 15 minutes; a success resets the count.

-- Guarantees: the seconds the user must still wait before an attempt (0: none).
CREATE OR REPLACE FUNCTION ledger._sign_in_wait(p_failed integer, p_last timestamptz, p_at timestamptz)
RETURNS integer
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN p_failed < 3 OR p_last IS NULL THEN 0
                ELSE greatest(0, ceil(extract(epoch FROM
                         p_last + least(power(2, p_failed - 3), 900) * interval '1 second' - p_at)))::integer
           END
$$;

CREATE OR REPLACE FUNCTION ledger.set_console_user(name text, role text, password_hash text)
RETURNS ledger.console_user
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_at      timestamptz := clock_timestamp();
    v_user    ledger.console_user;
    v_name    text;
    v_message text;
BEGIN
    IF set_console_user.name IS NULL OR set_console_user.role IS NULL OR set_console_user.password_hash IS NULL THEN
        RAISE EXCEPTION 'invalid argument: name, role and password_hash are required'
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', CASE WHEN set_console_user.name IS NULL THEN 'name'
                                                           WHEN set_console_user.role IS NULL THEN 'role'
                                                           ELSE 'password_hash' END,
                                             'reason', 'required')::text;
    END IF;
    BEGIN
        INSERT INTO ledger.console_users AS u (name, role, password_hash, created_at, updated_at)
        VALUES (set_console_user.name, set_console_user.role, set_console_user.password_hash, v_at, v_at)
        ON CONFLICT ON CONSTRAINT console_users_pkey DO UPDATE
            SET role = excluded.role, password_hash = excluded.password_hash, failed_count = 0,
                last_failed_at = NULL, updated_at = excluded.updated_at
        RETURNING u.name, u.role, u.failed_count, u.last_failed_at, u.created_at, u.updated_at INTO v_user;
    EXCEPTION WHEN check_violation THEN
        GET STACKED DIAGNOSTICS v_name = CONSTRAINT_NAME, v_message = MESSAGE_TEXT;
        v_name := ledger._declared_constraint(v_name, v_message);
        RAISE EXCEPTION 'invalid argument: %', CASE v_name
                WHEN 'console_users_name_valid' THEN 'a console user name is 1 to 100 letters, digits and _ . @ -'
                WHEN 'console_users_role_valid' THEN 'role must be operator or viewer'
                ELSE 'password_hash is not a password hash' END
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', CASE v_name WHEN 'console_users_name_valid' THEN 'name'
                                                                  WHEN 'console_users_role_valid' THEN 'role'
                                                                  ELSE 'password_hash' END,
                                             'reason', 'format', 'constraint', v_name)::text;
    END;
    RETURN v_user;
END
$$;
COMMENT ON FUNCTION ledger.set_console_user(text, text, text) IS $$
Adds a console user or replaces its role and password hash (`ledger
console add-user`), clearing its failed sign-ins. role is operator (may
correct the ledger) or viewer (reads only). A name or role the
console_users constraints refuse is LG007, naming the constraint.$$;

CREATE OR REPLACE FUNCTION ledger.remove_console_user(name text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM ledger.console_users u WHERE u.name = remove_console_user.name;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION ledger.remove_console_user(text) IS $$
Removes a console user (true if it existed): its sessions end at their
next request.$$;

CREATE OR REPLACE FUNCTION ledger.list_console_users()
RETURNS SETOF ledger.console_user
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT u.name, u.role, u.failed_count, u.last_failed_at, u.created_at, u.updated_at
    FROM ledger.console_users u ORDER BY u.name;
END
$$;
COMMENT ON FUNCTION ledger.list_console_users() IS $$
The console's users, by name, without their password hashes. Read-only.$$;

CREATE OR REPLACE FUNCTION ledger.console_sign_in(name text)
RETURNS SETOF ledger.console_sign_in
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_at   timestamptz := clock_timestamp();
    v_user ledger.console_users;
    v_wait integer;
BEGIN
    SELECT u.* INTO v_user FROM ledger.console_users u WHERE u.name = console_sign_in.name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    v_wait := ledger._sign_in_wait(v_user.failed_count, v_user.last_failed_at, v_at);
    IF v_wait > 0 THEN
        RETURN NEXT (v_user.name, v_user.role, NULL::text, v_wait)::ledger.console_sign_in;
        RETURN;
    END IF;
    UPDATE ledger.console_users u SET failed_count = u.failed_count + 1, last_failed_at = v_at
    WHERE u.name = v_user.name;
    RETURN NEXT (v_user.name, v_user.role, v_user.password_hash, 0)::ledger.console_sign_in;
END
$$;
COMMENT ON FUNCTION ledger.console_sign_in(text) IS $$
Starts a sign-in attempt: no row for an unknown name; else the user's
role and, when an attempt is allowed now, its password hash with
wait_seconds 0, the attempt counted as failed until console_signed_in
reports its success. After 3 failures in a row, attempts wait 2^(failures
- 3) seconds after the last one (at most 15 minutes): then the hash is
NULL, wait_seconds says how long, and nothing is counted.$$;

CREATE OR REPLACE FUNCTION ledger.console_signed_in(name text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE ledger.console_users u SET failed_count = 0, last_failed_at = NULL
    WHERE u.name = console_signed_in.name;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION ledger.console_signed_in(text) IS $$
Records a successful sign-in: the user's failed attempts count from 0
(false when there is no such user).$$;

CREATE OR REPLACE FUNCTION ledger.console_user(name text)
RETURNS SETOF ledger.console_user
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT u.name, u.role, u.failed_count, u.last_failed_at, u.created_at, u.updated_at
    FROM ledger.console_users u WHERE u.name = console_user.name;
END
$$;
COMMENT ON FUNCTION ledger.console_user(text) IS $$
One console user (no row when there is none), without the password hash:
what a session is checked against on every request. Read-only.$$;

CREATE OR REPLACE FUNCTION ledger.console_secret()
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT s.secret FROM ledger.console_secret s);
END
$$;
COMMENT ON FUNCTION ledger.console_secret() IS $$
The key that signs the console's session cookies: made by the migration,
the same for every worker of the web service. ledger_console only.$$;
