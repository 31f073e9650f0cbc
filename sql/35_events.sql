-- Events: the outbox (ledger.events), the relay that gives committed events
-- their place in the feed (ledger.event_feed), the cursor readers follow
-- (list_events), and balance alerts.
--
-- Every writing function writes its events in its own transaction, with
-- ledger._event or inside its write statement: no change without its event,
-- no event without its change. Changes that happen by the clock alone (a
-- hold or a grant expiring) are recorded by the owner's next write or by the
-- sweep (expire_grants), with the instant they happened as occurred_at.
--
-- Why a relay and a feed: an event's id is drawn when it is written, its
-- transaction commits later, so ids are not commit order, and a reader that
-- followed ids could pass an id whose transaction had not committed yet and
-- never see it. The relay (one at a time) copies events that have committed
-- and were not copied yet into the feed, each with the next position; a
-- reader follows positions. An event that commits late is copied late, at a
-- later position: nothing is skipped, and nobody waits for a long
-- transaction (only its own events appear when it commits). On Citus the
-- feed is one table on the coordinator, so a reader sees each relay's copy
-- whole, whatever the order in which the workers finished their part of it.

-- Guarantees: one event of the owner, recorded now (p_at) in the caller's
-- transaction. p_seq is the owner's seq it follows (the entry's own for
-- entry events, the account's last for others).
CREATE OR REPLACE FUNCTION ledger._event(
    p_owner_id text, p_type text, p_seq bigint, p_app text, p_payload jsonb, p_occurred_at timestamptz,
    p_at timestamptz, p_entry_id bigint DEFAULT NULL, p_hold_id bigint DEFAULT NULL,
    p_grant_id bigint DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO ledger.events
        (owner_id, type, seq, entry_id, hold_id, grant_id, app, payload, occurred_at, recorded_at)
    VALUES (p_owner_id, p_type, p_seq, p_entry_id, p_hold_id, p_grant_id, p_app, p_payload, p_occurred_at, p_at);
END
$$;

-- The payload of an entry.posted event: the entry's columns (idempotency_key
-- and metadata are removed by list_events for every app but the writer).
-- STABLE, as jsonb_build_object is (a timestamptz's text depends on the
-- session's TimeZone): a SQL function declared IMMUTABLE over a STABLE body
-- is never inlined, and then every call re-plans its body (it cost more than
-- half of post_entry's CPU time).
CREATE OR REPLACE FUNCTION ledger._entry_payload(
    p_entry_id bigint, p_owner_id text, p_app text, p_operation text, p_amount bigint, p_balance bigint,
    p_seq bigint, p_created_at timestamptz, p_key text, p_metadata jsonb, p_hold_id bigint,
    p_transfer_id bigint, p_reverses bigint)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'entry_id', p_entry_id, 'owner_id', p_owner_id, 'app', p_app, 'operation', p_operation,
        'amount', p_amount, 'balance', p_balance, 'seq', p_seq, 'created_at', p_created_at,
        'idempotency_key', p_key, 'hold_id', p_hold_id, 'transfer_id', p_transfer_id,
        'reverses_entry_id', p_reverses))
           || jsonb_build_object('metadata', coalesce(p_metadata, '{}'::jsonb))
$$;

-- The payload of a hold event (STABLE for the same reason).
CREATE OR REPLACE FUNCTION ledger._hold_payload(
    p_hold_id bigint, p_owner_id text, p_app text, p_operation text, p_amount bigint, p_status text,
    p_expires_at timestamptz, p_key text, p_captured bigint DEFAULT NULL, p_entry_id bigint DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'hold_id', p_hold_id, 'owner_id', p_owner_id, 'app', p_app, 'operation', p_operation,
        'amount', p_amount, 'status', p_status, 'expires_at', p_expires_at, 'idempotency_key', p_key,
        'captured_amount', p_captured, 'entry_id', p_entry_id))
$$;

-- Balance alerts -------------------------------------------------------------

-- Whether any app has a balance alert: writers that must read what an
-- owner had available before they change it (a query when it has open
-- holds) skip that when no app would be told.
DROP FUNCTION IF EXISTS ledger._alert_thresholds();  -- its aggregate cost every write
CREATE OR REPLACE FUNCTION ledger._alerts_on()
RETURNS boolean
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM ledger.balance_alerts b);
END
$$;

-- What an owner has available as its stored rows say (balance minus the holds
-- recorded active, never below 0): the state its last write left. Callers
-- hold the owner's lock.
CREATE OR REPLACE FUNCTION ledger._stored_available(p_owner_id text)
RETURNS bigint
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_balance bigint;
    v_open    integer;
    v_held    bigint := 0;
BEGIN
    SELECT a.balance, a.open_holds INTO v_balance, v_open FROM ledger.accounts a WHERE a.owner_id = p_owner_id;
    IF v_open > 0 THEN
        SELECT coalesce(sum(h.amount), 0) INTO v_held FROM ledger.holds h
        WHERE h.owner_id = p_owner_id AND h.status = 'active';
    END IF;
    RETURN greatest(coalesce(v_balance, 0) - v_held, 0);
END
$$;

-- Guarantees: the owner's balance alerts for a change of its available
-- credits from p_before to p_after, for every app with thresholds: one
-- balance.below_threshold per threshold crossed downwards (p_before >= T >
-- p_after), one balance.recovered per threshold crossed upwards, and one
-- balance.depleted when it reached 0 from above. Nothing while it stays on
-- one side: an alert fires once per crossing. One query reads only the
-- thresholds crossed (none, mostly), so a write that crosses nothing pays
-- for that query alone.
-- balance.depleted for p_app when the owner's available credits reached 0
-- from above (nothing for a NULL app).
CREATE OR REPLACE FUNCTION ledger._depleted(
    p_owner_id text, p_app text, p_seq bigint, p_before bigint, p_after bigint, p_at timestamptz)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF p_app IS NOT NULL AND p_before > 0 AND p_after = 0 THEN
        PERFORM ledger._event(p_owner_id, 'balance.depleted', p_seq, p_app,
                              jsonb_build_object('owner_id', p_owner_id, 'app', p_app, 'available', 0,
                                                 'previous', p_before), p_at, p_at);
    END IF;
END
$$;

DROP FUNCTION IF EXISTS ledger._balance_alerts(text, jsonb, bigint, bigint, timestamptz);  -- it took the thresholds
CREATE OR REPLACE FUNCTION ledger._balance_alerts(
    p_owner_id text, p_before bigint, p_after bigint, p_at timestamptz)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_alert    record;
    v_seq      bigint;
    v_app      text;  -- the app of the rows read so far
BEGIN
    IF p_before IS NULL OR p_after IS NULL OR p_before = p_after
       OR NOT EXISTS (SELECT 1 FROM ledger.balance_alerts b
                      WHERE (b.threshold > least(p_before, p_after) AND b.threshold <= greatest(p_before, p_after))
                         OR (p_before > 0 AND p_after = 0)) THEN
        RETURN;  -- nothing crossed (a cheap test: the loop below costs more to open)
    END IF;
    -- Rows of an app in threshold order; when the owner reached 0 every
    -- app's rows come (balance.depleted, after the app's crossings).
    FOR v_alert IN
        SELECT b.app, b.threshold, b.threshold > least(p_before, p_after)
                                   AND b.threshold <= greatest(p_before, p_after) AS crossed
        FROM ledger.balance_alerts b
        WHERE (b.threshold > least(p_before, p_after) AND b.threshold <= greatest(p_before, p_after))
           OR (p_before > 0 AND p_after = 0)
        ORDER BY b.app, b.threshold
    LOOP
        IF v_seq IS NULL THEN
            SELECT a.last_seq INTO v_seq FROM ledger.accounts a WHERE a.owner_id = p_owner_id;
        END IF;
        IF v_app IS DISTINCT FROM v_alert.app THEN
            PERFORM ledger._depleted(p_owner_id, v_app, v_seq, p_before, p_after, p_at);
            v_app := v_alert.app;
        END IF;
        IF v_alert.crossed THEN
            PERFORM ledger._event(p_owner_id,
                                  CASE WHEN p_after < p_before THEN 'balance.below_threshold'
                                       ELSE 'balance.recovered' END,
                                  v_seq, v_alert.app,
                                  jsonb_build_object('owner_id', p_owner_id, 'app', v_alert.app,
                                                     'threshold', v_alert.threshold, 'available', p_after,
                                                     'previous', p_before), p_at, p_at);
        END IF;
    END LOOP;
    PERFORM ledger._depleted(p_owner_id, v_app, v_seq, p_before, p_after, p_at);
END
$$;

DROP FUNCTION IF EXISTS ledger.set_balance_alert(text, bigint);  -- it returned a set before
CREATE OR REPLACE FUNCTION ledger.set_balance_alert(app text, threshold bigint)
RETURNS bigint[]
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ledger._require_app(set_balance_alert.app);
    IF set_balance_alert.threshold IS NULL OR set_balance_alert.threshold < 1 THEN
        RAISE EXCEPTION 'invalid argument: threshold must be a positive number of credits (% given)',
                set_balance_alert.threshold
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'threshold', 'reason', 'out of range', 'min', 1)::text;
    END IF;
    INSERT INTO ledger.balance_alerts AS b (app, threshold)
    VALUES (set_balance_alert.app, set_balance_alert.threshold)
    ON CONFLICT ON CONSTRAINT balance_alerts_pkey DO NOTHING;
    RETURN (SELECT coalesce(array_agg(b.threshold ORDER BY b.threshold), '{}')
            FROM ledger.balance_alerts b WHERE b.app = set_balance_alert.app);
END
$$;
COMMENT ON FUNCTION ledger.set_balance_alert(text, bigint) IS $$
Registers a threshold of available credits for the app's balance alerts
(idempotent): from then on, whenever an owner's available credits cross it
downwards the owner gets one balance.below_threshold event for the app,
upwards one balance.recovered, and reaching 0 from above one
balance.depleted: once per crossing, never on every debit while below.
Returns the app's thresholds. LG007 for a threshold below 1, LG011 for an
unknown app.$$;

DROP FUNCTION IF EXISTS ledger.remove_balance_alert(text, bigint);  -- it returned a set before
CREATE OR REPLACE FUNCTION ledger.remove_balance_alert(app text, threshold bigint)
RETURNS bigint[]
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ledger._require_app(remove_balance_alert.app);
    DELETE FROM ledger.balance_alerts b
    WHERE b.app = remove_balance_alert.app AND b.threshold = remove_balance_alert.threshold;
    RETURN (SELECT coalesce(array_agg(b.threshold ORDER BY b.threshold), '{}')
            FROM ledger.balance_alerts b WHERE b.app = remove_balance_alert.app);
END
$$;
COMMENT ON FUNCTION ledger.remove_balance_alert(text, bigint) IS $$
Removes one of the app's alert thresholds (nothing when it has no such
threshold) and returns the ones left. LG011 for an unknown app.$$;

DROP FUNCTION IF EXISTS ledger.list_balance_alerts(text);  -- it returned a set before
CREATE OR REPLACE FUNCTION ledger.list_balance_alerts(app text)
RETURNS bigint[]
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ledger._require_app(list_balance_alerts.app);
    RETURN (SELECT coalesce(array_agg(b.threshold ORDER BY b.threshold), '{}')
            FROM ledger.balance_alerts b WHERE b.app = list_balance_alerts.app);
END
$$;
COMMENT ON FUNCTION ledger.list_balance_alerts(text) IS $$
The app's alert thresholds, lowest first. LG011 for an unknown app.
Read-only.$$;

-- The relay and the feed -------------------------------------------------------

CREATE OR REPLACE FUNCTION ledger.relay_events(max_rows integer DEFAULT 10000)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_owners text[];
    v_ids    bigint[];
    v_done   integer;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 100000 THEN
        RAISE EXCEPTION 'invalid argument: max_rows must be between 1 and 100000 (% given)', max_rows
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'max_rows', 'reason', 'out of range',
                                             'min', 1, 'max', 100000)::text;
    END IF;
    -- One relay at a time, in transactions that follow one another: each
    -- copies what had committed when it began, after the previous one's
    -- copy. Another session relaying now: nothing to do here.
    IF NOT pg_try_advisory_xact_lock(hashtext('ledger.relay_events')) THEN
        RETURN 0;
    END IF;
    SELECT array_agg(e.owner_id ORDER BY e.o), array_agg(e.event_id ORDER BY e.o)
    INTO v_owners, v_ids
    FROM (SELECT x.owner_id, x.event_id,
                 row_number() OVER (ORDER BY x.recorded_at, x.seq, x.event_id) AS o
          FROM (SELECT y.owner_id, y.event_id, y.recorded_at, y.seq FROM ledger.events y
                WHERE NOT y.relayed ORDER BY y.recorded_at, y.seq, y.event_id
                LIMIT relay_events.max_rows) x) e;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    -- In the order they were recorded, so an owner's events keep their
    -- order in the feed. An event copied before whose flag is not visible
    -- yet (on Citus a worker may still be finishing the previous relay's
    -- commit) is not copied twice.
    INSERT INTO ledger.event_feed AS f
        (owner_id, event_id, type, seq, entry_id, hold_id, grant_id, app, payload, occurred_at, relayed_at)
    SELECT e.owner_id, e.event_id, e.type, e.seq, e.entry_id, e.hold_id, e.grant_id, e.app, e.payload,
           e.occurred_at, clock_timestamp()
    FROM ledger.events e
    WHERE e.owner_id = ANY (v_owners) AND e.event_id = ANY (v_ids)
    ORDER BY e.recorded_at, e.seq, e.event_id
    ON CONFLICT ON CONSTRAINT event_feed_event_once DO NOTHING;
    GET DIAGNOSTICS v_done = ROW_COUNT;
    UPDATE ledger.events e SET relayed = true
    WHERE e.owner_id = ANY (v_owners) AND e.event_id = ANY (v_ids);
    RETURN v_done;
END
$$;
COMMENT ON FUNCTION ledger.relay_events(integer) IS $$
Copies up to max_rows (1 to 100000) committed events that are not in the
feed yet into it, each with the next position, and returns how many. One
session relays at a time (an advisory lock; another caller returns 0 at
once), so positions follow the order in which the relay saw events commit:
an event whose transaction commits late gets a later position, never a
place a reader has passed. list_events relays before it reads; the webhook
dispatcher relays on its timer.$$;

-- A cursor is the feed position of the last event read, as text (opaque to
-- callers: it may carry more one day).
CREATE OR REPLACE FUNCTION ledger._cursor_position(p_cursor text)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_cursor IS NULL THEN
        RETURN 0;
    END IF;
    IF p_cursor !~ '^p[0-9]{1,18}$' THEN
        RAISE EXCEPTION 'invalid argument: % is not a cursor of list_events', left(p_cursor, 40)
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'after', 'reason', 'format')::text,
                  HINT = 'Pass the cursor column of the last event read, or NULL to start.';
    END IF;
    RETURN substr(p_cursor, 2)::bigint;
END
$$;

CREATE OR REPLACE FUNCTION ledger.list_events(app text, after text DEFAULT NULL, max_rows integer DEFAULT 100)
RETURNS SETOF ledger.event_row
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_after bigint := ledger._cursor_position(list_events.after);
BEGIN
    PERFORM ledger._require_app(list_events.app);
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 1000 THEN
        RAISE EXCEPTION 'invalid argument: max_rows must be between 1 and 1000 (% given)', max_rows
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'max_rows', 'reason', 'out of range',
                                             'min', 1, 'max', 1000)::text;
    END IF;
    PERFORM ledger.relay_events(10000);
    RETURN QUERY
        SELECT 'p' || f.position::text, f.event_id, f.type, f.owner_id, f.seq, f.entry_id, f.hold_id, f.grant_id,
               CASE WHEN f.app IS NOT DISTINCT FROM list_events.app THEN f.payload
                    ELSE f.payload - 'metadata' - 'idempotency_key' END,
               f.occurred_at
        FROM ledger.event_feed f
        WHERE f.position > v_after
        ORDER BY f.position
        LIMIT list_events.max_rows;
END
$$;
COMMENT ON FUNCTION ledger.list_events(text, text, integer) IS $$
The events of every owner in feed order after a cursor (after: the cursor
column of the last event read; NULL from the oldest event kept), at most
max_rows (1 to 1000, else LG007; a malformed cursor is LG007 too). A reader
that follows cursors never skips an event, even one whose transaction
committed after later ones (they get feed positions in the order they
commit, through relay_events, which this calls first). Every app sees every
event; the metadata and idempotency key of another app's entry or hold are
left out of payload. LG011 for an unknown app.$$;
