-- Webhooks (tables in migrations/0016_webhooks.sql): the endpoints an app
-- registers, the fan-out of the app's event feed into one delivery per
-- (endpoint, event), the claims and outcomes of the dispatcher (`ledger
-- webhooks run`), the delivery log, resend, and the retention of events and
-- delivery logs.
--
-- The feed is read only through ledger.list_events(app, after, max_rows),
-- whose cursor never skips an event: each endpoint stores the cursor up to
-- which its deliveries exist, so every event of the feed (of the endpoint's
-- types) gets exactly one delivery row, whatever order transactions commit
-- in. A delivery keeps a copy of the body it signs, so delivering never
-- reads the events table (and pruning events never loses a delivery).
--
-- Several dispatchers share the work: fan_out_webhooks locks each endpoint
-- with SKIP LOCKED (two dispatchers fan out different endpoints), and
-- claim_webhook_deliveries hands a delivery to one dispatcher at a time: the
-- claim takes the row with SKIP LOCKED and leases it (next_attempt_at moves
-- past the lease), so no other claim sees it until the attempt is recorded
-- or the lease ran out (a dispatcher that died). The dispatcher bounds each
-- attempt well inside the lease.
--
-- Functions that act for an app take it (LG011 when unknown): an endpoint,
-- delivery or attempt of another app is LG008, as one that does not exist.

-- The event types an endpoint may subscribe to (NULL: every type): those the
-- outbox's constraint events_type_valid allows, read from it (one list).
CREATE OR REPLACE FUNCTION ledger._event_types()
RETURNS text[]
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_types text[];
BEGIN
    SELECT array_agg(m[1] ORDER BY m[1]) INTO v_types
    FROM pg_constraint c, regexp_matches(pg_get_constraintdef(c.oid), '''([a-z_.]+)''', 'g') AS m
    WHERE c.conrelid = 'ledger.events'::regclass AND c.conname = 'events_type_valid';
    RETURN v_types;
END
$$;

-- Guarantees: the endpoint of that app (its row locked FOR UPDATE when
-- p_lock), or LG008 when there is none (another app's endpoint included).
-- p_app NULL: any app's (a trusted SQL caller, an auditor). Never its secret.
-- (The public type, not the table's row type: a function whose signature
-- names a coordinator table's row type would not reach Citus's workers.)
CREATE OR REPLACE FUNCTION ledger._webhook_endpoint(p_endpoint_id bigint, p_app text, p_lock boolean)
RETURNS ledger.webhook_endpoint
LANGUAGE plpgsql
AS $$
DECLARE
    v_endpoint ledger.webhook_endpoint;
BEGIN
    IF p_endpoint_id IS NULL THEN
        RAISE EXCEPTION 'invalid argument: endpoint_id is required'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'endpoint_id', 'reason', 'required')::text;
    END IF;
    IF p_lock THEN
        SELECT e.endpoint_id, e.app, e.url, e.event_types, e.description, e.active, e.created_at, e.disabled_at
        INTO v_endpoint
        FROM ledger.webhook_endpoints e
        WHERE e.endpoint_id = p_endpoint_id AND (p_app IS NULL OR e.app = p_app)
        FOR UPDATE;
    ELSE
        SELECT e.endpoint_id, e.app, e.url, e.event_types, e.description, e.active, e.created_at, e.disabled_at
        INTO v_endpoint
        FROM ledger.webhook_endpoints e
        WHERE e.endpoint_id = p_endpoint_id AND (p_app IS NULL OR e.app = p_app);
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'not found: webhook endpoint % (of app %)', p_endpoint_id, coalesce(p_app, 'any')
            USING ERRCODE = 'LG008',
                  DETAIL = json_build_object('kind', 'webhook_endpoint', 'endpoint_id', p_endpoint_id,
                                             'app', p_app)::text;
    END IF;
    RETURN v_endpoint;
END
$$;

-- Guarantees: raises LG007 when max_rows is outside 1 .. p_max.
CREATE OR REPLACE FUNCTION ledger._webhook_rows(p_max_rows integer, p_max integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_max_rows IS NULL OR p_max_rows < 1 OR p_max_rows > p_max THEN
        RAISE EXCEPTION 'invalid argument: max_rows must be between 1 and % (% given)', p_max, p_max_rows
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'max_rows', 'reason', 'out of range',
                                             'min', 1, 'max', p_max)::text;
    END IF;
END
$$;

-- An event's time as the webhook body and the HTTP API write it: UTC, ISO 8601.
CREATE OR REPLACE FUNCTION ledger._iso_utc(p_at timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- The cursor of the feed's newest event, once what has committed is relayed:
-- where a new endpoint starts (it is sent the events that commit after its
-- registration; if another session is relaying right now, perhaps a few
-- that committed just before).
CREATE OR REPLACE FUNCTION ledger._events_head_cursor()
RETURNS text
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM ledger.relay_events(10000);
    RETURN 'p' || coalesce((SELECT max(f.position) FROM ledger.event_feed f), 0)::text;
END
$$;

CREATE OR REPLACE FUNCTION ledger.create_webhook_endpoint(
    app         text,
    url         text,
    event_types text[] DEFAULT NULL,
    description text DEFAULT NULL)
RETURNS ledger.webhook_endpoint_created
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row        ledger.webhook_endpoint_created;
    v_types      text[];
    v_unknown    text;
    v_secret     text;
    v_constraint text;
BEGIN
    PERFORM ledger._require_app(create_webhook_endpoint.app);
    IF create_webhook_endpoint.event_types IS NOT NULL THEN
        SELECT t INTO v_unknown FROM unnest(create_webhook_endpoint.event_types) AS t
        WHERE t IS NULL OR NOT t = ANY (ledger._event_types()) LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'invalid argument: % is not an event type', coalesce(quote_literal(v_unknown), 'NULL')
                USING ERRCODE = 'LG007',
                      DETAIL = json_build_object('field', 'event_types', 'reason', 'unknown event type',
                                                 'event_type', v_unknown,
                                                 'known', ledger._event_types())::text;
        END IF;
        SELECT array_agg(DISTINCT t ORDER BY t) INTO v_types FROM unnest(create_webhook_endpoint.event_types) AS t;
        v_types := coalesce(v_types, '{}');
    END IF;
    -- 32 random bytes (from two version-4 UUIDs: 244 random bits), in the
    -- Standard Webhooks form whsec_<base64>.
    v_secret := 'whsec_' || encode(decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''),
                                          'hex'), 'base64');
    -- The table's constraints are the rules of the URL, the list of types
    -- and the description: a violation is translated by its name.
    BEGIN
        INSERT INTO ledger.webhook_endpoints AS e (app, url, event_types, description, secret, cursor, created_at)
        VALUES (create_webhook_endpoint.app, create_webhook_endpoint.url, v_types,
                create_webhook_endpoint.description, v_secret, ledger._events_head_cursor(), clock_timestamp())
        RETURNING e.endpoint_id, e.app, e.url, e.event_types, e.description, e.active, e.created_at,
                  e.disabled_at, e.secret
        INTO v_row;
    EXCEPTION WHEN check_violation OR not_null_violation THEN
        GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME;
        RAISE EXCEPTION 'invalid argument: %', CASE v_constraint
                WHEN 'webhook_endpoints_url_valid' THEN 'url must be an http:// or https:// URL of at most 2048 characters, without spaces'
                WHEN 'webhook_endpoints_event_types_valid' THEN 'event_types must list 1 to 100 event types (NULL: every type)'
                WHEN 'webhook_endpoints_description_length' THEN 'description is longer than 255 characters'
                ELSE 'url is required' END
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object(
                      'field', CASE v_constraint
                          WHEN 'webhook_endpoints_event_types_valid' THEN 'event_types'
                          WHEN 'webhook_endpoints_description_length' THEN 'description'
                          ELSE 'url' END,
                      'constraint', nullif(v_constraint, ''),
                      'reason', CASE
                          WHEN v_constraint = '' THEN 'required'
                          WHEN v_constraint = 'webhook_endpoints_description_length' THEN 'too long'
                          ELSE 'invalid' END)::text;
    END;
    RETURN v_row;
END
$$;
COMMENT ON FUNCTION ledger.create_webhook_endpoint(text, text, text[], text) IS $$
Registers a webhook endpoint of the app (LG011 when unknown): url (http://
or https://, at most 2048 characters), event_types (1 to 100 of the event
types; NULL, the default: every type; an unknown type is LG007 naming it)
and an optional description (at most 255 characters). The endpoint is sent
the app's events that come after its registration. Returns it with its
signing secret (whsec_ and base64 of 32 random bytes, the Standard Webhooks
form): the one time the secret is shown. Other bad input is LG007 naming
the field.$$;

CREATE OR REPLACE FUNCTION ledger.list_webhook_endpoints(app text DEFAULT NULL)
RETURNS SETOF ledger.webhook_endpoint
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF list_webhook_endpoints.app IS NOT NULL THEN
        PERFORM ledger._require_app(list_webhook_endpoints.app);
    END IF;
    RETURN QUERY
        SELECT e.endpoint_id, e.app, e.url, e.event_types, e.description, e.active, e.created_at,
               e.disabled_at
        FROM ledger.webhook_endpoints e
        WHERE list_webhook_endpoints.app IS NULL OR e.app = list_webhook_endpoints.app
        ORDER BY e.endpoint_id;
END
$$;
COMMENT ON FUNCTION ledger.list_webhook_endpoints(text) IS $$
The app's webhook endpoints (LG011 when unknown), oldest first; without app
(a trusted SQL caller, an operator) every app's. Never a secret. Read-only.$$;

CREATE OR REPLACE FUNCTION ledger.get_webhook_endpoint(endpoint_id bigint, app text DEFAULT NULL)
RETURNS ledger.webhook_endpoint
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF get_webhook_endpoint.app IS NOT NULL THEN
        PERFORM ledger._require_app(get_webhook_endpoint.app);
    END IF;
    RETURN ledger._webhook_endpoint(get_webhook_endpoint.endpoint_id, get_webhook_endpoint.app, false);
END
$$;
COMMENT ON FUNCTION ledger.get_webhook_endpoint(bigint, text) IS $$
One webhook endpoint, or LG008 (also for another app's when app is given;
LG011 for an unknown app). Never its secret. Read-only.$$;

CREATE OR REPLACE FUNCTION ledger.set_webhook_endpoint_active(endpoint_id bigint, app text, active boolean)
RETURNS ledger.webhook_endpoint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row ledger.webhook_endpoint;
BEGIN
    PERFORM ledger._require_app(set_webhook_endpoint_active.app);
    IF set_webhook_endpoint_active.active IS NULL THEN
        RAISE EXCEPTION 'invalid argument: active is required'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'active', 'reason', 'required')::text;
    END IF;
    v_row := ledger._webhook_endpoint(set_webhook_endpoint_active.endpoint_id, set_webhook_endpoint_active.app, true);
    IF v_row.active IS DISTINCT FROM set_webhook_endpoint_active.active THEN
        UPDATE ledger.webhook_endpoints e
        SET active = set_webhook_endpoint_active.active,
            disabled_at = CASE WHEN set_webhook_endpoint_active.active THEN NULL ELSE clock_timestamp() END
        WHERE e.endpoint_id = v_row.endpoint_id
        RETURNING e.endpoint_id, e.app, e.url, e.event_types, e.description, e.active, e.created_at,
                  e.disabled_at
        INTO v_row;
    END IF;
    RETURN v_row;
END
$$;
COMMENT ON FUNCTION ledger.set_webhook_endpoint_active(bigint, text, boolean) IS $$
Disables (active false) or enables again an endpoint of the app (LG008 for
another app's, LG011 for an unknown app); the same state again changes
nothing. A disabled endpoint gets no new deliveries and none of its pending
ones is attempted; enabled again, it resumes from the event where it
stopped (events pruned meanwhile are not sent: a disabled endpoint holds
no event back from retention). Pending deliveries keep their horizon.$$;

CREATE OR REPLACE FUNCTION ledger.delete_webhook_endpoint(endpoint_id bigint, app text)
RETURNS ledger.webhook_endpoint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row ledger.webhook_endpoint;
BEGIN
    PERFORM ledger._require_app(delete_webhook_endpoint.app);
    v_row := ledger._webhook_endpoint(delete_webhook_endpoint.endpoint_id, delete_webhook_endpoint.app, true);
    DELETE FROM ledger.webhook_endpoints e WHERE e.endpoint_id = v_row.endpoint_id;
    RETURN v_row;
END
$$;
COMMENT ON FUNCTION ledger.delete_webhook_endpoint(bigint, text) IS $$
Deletes an endpoint of the app with its deliveries and their log, and
returns what it was (LG008 for another app's or an unknown one, LG011 for
an unknown app). An attempt in flight at that moment finishes, and its
outcome is dropped.$$;

CREATE OR REPLACE FUNCTION ledger.list_webhook_deliveries(
    endpoint_id bigint,
    app         text DEFAULT NULL,
    status      text DEFAULT NULL,
    before_id   bigint DEFAULT NULL,
    max_rows    integer DEFAULT 100)
RETURNS SETOF ledger.webhook_delivery
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_endpoint ledger.webhook_endpoint;
BEGIN
    PERFORM ledger._webhook_rows(list_webhook_deliveries.max_rows, 1000);
    IF list_webhook_deliveries.status IS NOT NULL
       AND list_webhook_deliveries.status NOT IN ('pending', 'delivered', 'failed') THEN
        RAISE EXCEPTION 'invalid argument: status must be pending, delivered or failed (% given)',
                        list_webhook_deliveries.status
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'status', 'reason', 'invalid')::text;
    END IF;
    IF list_webhook_deliveries.app IS NOT NULL THEN
        PERFORM ledger._require_app(list_webhook_deliveries.app);
    END IF;
    v_endpoint := ledger._webhook_endpoint(list_webhook_deliveries.endpoint_id, list_webhook_deliveries.app, false);
    RETURN QUERY
        SELECT d.delivery_id, d.endpoint_id, d.event_id, d.event_type, d.webhook_id, d.status, d.attempts,
               d.created_at, d.next_attempt_at, d.leased_until, d.last_attempt_at, d.last_status_code,
               d.last_error, d.finished_at
        FROM ledger.webhook_deliveries d
        WHERE d.endpoint_id = v_endpoint.endpoint_id
          AND (list_webhook_deliveries.status IS NULL OR d.status = list_webhook_deliveries.status)
          AND (list_webhook_deliveries.before_id IS NULL OR d.delivery_id < list_webhook_deliveries.before_id)
        ORDER BY d.delivery_id DESC
        LIMIT list_webhook_deliveries.max_rows;
END
$$;
COMMENT ON FUNCTION ledger.list_webhook_deliveries(bigint, text, text, bigint, integer) IS $$
An endpoint's deliveries, newest first, max_rows (1 to 1000, else LG007) at
a time: one per event sent to it, with its status (pending, delivered,
failed; status filters), attempts so far, when it is next tried, and the
last attempt's HTTP status or error. before_id (the last delivery_id of a
page) gives the next page. LG008 for another app's endpoint. Read-only.$$;

CREATE OR REPLACE FUNCTION ledger.list_webhook_attempts(
    endpoint_id bigint,
    app         text DEFAULT NULL,
    event_id    bigint DEFAULT NULL,
    max_rows    integer DEFAULT 100)
RETURNS SETOF ledger.webhook_attempt
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_endpoint ledger.webhook_endpoint;
BEGIN
    PERFORM ledger._webhook_rows(list_webhook_attempts.max_rows, 1000);
    IF list_webhook_attempts.app IS NOT NULL THEN
        PERFORM ledger._require_app(list_webhook_attempts.app);
    END IF;
    v_endpoint := ledger._webhook_endpoint(list_webhook_attempts.endpoint_id, list_webhook_attempts.app, false);
    RETURN QUERY
        SELECT a.delivery_id, a.attempt, a.endpoint_id, a.event_id, a.attempted_at, a.duration_ms,
               a.status_code, a.error, a.outcome
        FROM ledger.webhook_attempts a
        WHERE a.endpoint_id = v_endpoint.endpoint_id
          AND (list_webhook_attempts.event_id IS NULL OR a.event_id = list_webhook_attempts.event_id)
        ORDER BY a.attempted_at DESC, a.delivery_id DESC, a.attempt DESC
        LIMIT list_webhook_attempts.max_rows;
END
$$;
COMMENT ON FUNCTION ledger.list_webhook_attempts(bigint, text, bigint, integer) IS $$
An endpoint's delivery log: its recorded attempts, newest first (event_id:
that event's only), each with its HTTP status or error, how long it took
and its outcome (delivered, retry, failed); max_rows 1 to 1000. An attempt
whose dispatcher died before recording it has no row (the next attempt
has the next number). LG008 for another app's endpoint. Read-only.$$;

CREATE OR REPLACE FUNCTION ledger.resend_webhook_event(
    event_id    bigint,
    app         text,
    endpoint_id bigint DEFAULT NULL)
RETURNS SETOF ledger.webhook_delivery
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    PERFORM ledger._require_app(resend_webhook_event.app);
    IF resend_webhook_event.event_id IS NULL THEN
        RAISE EXCEPTION 'invalid argument: event_id is required'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'event_id', 'reason', 'required')::text;
    END IF;
    IF resend_webhook_event.endpoint_id IS NOT NULL THEN
        PERFORM ledger._webhook_endpoint(resend_webhook_event.endpoint_id, resend_webhook_event.app, false);
    END IF;
    -- An attempt in flight (leased) is left alone: a second one now would
    -- send the event to the endpoint twice at once.
    RETURN QUERY
        WITH targets AS (
            SELECT d.delivery_id
            FROM ledger.webhook_deliveries d
            JOIN ledger.webhook_endpoints e ON e.endpoint_id = d.endpoint_id
            WHERE d.event_id = resend_webhook_event.event_id
              AND e.app = resend_webhook_event.app
              AND (resend_webhook_event.endpoint_id IS NULL OR d.endpoint_id = resend_webhook_event.endpoint_id)
            ORDER BY d.delivery_id
            FOR UPDATE OF d
        ), resent AS (
            UPDATE ledger.webhook_deliveries d
            SET status = 'pending', retry_from = v_now, next_attempt_at = v_now, finished_at = NULL
            FROM targets t
            WHERE d.delivery_id = t.delivery_id
              AND NOT (d.status = 'pending' AND d.leased_until > v_now)
            RETURNING d.delivery_id
        )
        SELECT d.delivery_id, d.endpoint_id, d.event_id, d.event_type, d.webhook_id,
               'pending'::text, d.attempts, d.created_at,
               CASE WHEN r.delivery_id IS NULL THEN d.next_attempt_at ELSE v_now END,
               d.leased_until, d.last_attempt_at, d.last_status_code, d.last_error, NULL::timestamptz
        FROM targets t
        JOIN ledger.webhook_deliveries d ON d.delivery_id = t.delivery_id
        LEFT JOIN resent r ON r.delivery_id = t.delivery_id
        ORDER BY d.delivery_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'not found: no delivery of event % to a webhook endpoint of app %',
                        resend_webhook_event.event_id, resend_webhook_event.app
            USING ERRCODE = 'LG008',
                  DETAIL = json_build_object('kind', 'webhook_delivery', 'event_id', resend_webhook_event.event_id,
                                             'app', resend_webhook_event.app,
                                             'endpoint_id', resend_webhook_event.endpoint_id)::text,
                  HINT = 'An event is delivered to the endpoints registered before it that take its type; '
                         'its deliveries are kept for the retention window.';
    END IF;
END
$$;
COMMENT ON FUNCTION ledger.resend_webhook_event(bigint, text, bigint) IS $$
Sends an event again to the app's endpoints that it was delivered to (or
failed, or still pending; endpoint_id: to that endpoint only): each such
delivery is pending again, due now, with a new horizon, and keeps its
webhook-id, so a receiver that already has it can tell. An attempt in flight
is left to finish. Returns the deliveries; LG008 when the event has no
delivery to such an endpoint (never fanned out to it: registered after the
event, another type, or pruned), LG011 for an unknown app.$$;


-- ---- the dispatcher (role ledger_dispatcher) --------------------------------------------------

CREATE OR REPLACE FUNCTION ledger.fan_out_webhooks(max_rows integer DEFAULT 500)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_endpoint record;
    v_event    record;
    v_cursor   text;
    v_now      timestamptz := clock_timestamp();
    v_read     integer := 0;
BEGIN
    PERFORM ledger._webhook_rows(fan_out_webhooks.max_rows, 10000);
    -- Another dispatcher fanning out an endpoint now keeps it: SKIP LOCKED.
    FOR v_endpoint IN
        SELECT e.endpoint_id, e.app, e.event_types, e.cursor
        FROM ledger.webhook_endpoints e
        WHERE e.active
        ORDER BY e.endpoint_id
        FOR UPDATE SKIP LOCKED
    LOOP
        v_cursor := v_endpoint.cursor;
        FOR v_event IN
            SELECT * FROM ledger.list_events(app => v_endpoint.app, after => v_endpoint.cursor,
                                             max_rows => fan_out_webhooks.max_rows)
        LOOP
            v_read := v_read + 1;
            v_cursor := v_event.cursor;
            CONTINUE WHEN v_endpoint.event_types IS NOT NULL AND NOT v_event.type = ANY (v_endpoint.event_types);
            INSERT INTO ledger.webhook_deliveries AS d
                (endpoint_id, event_id, event_type, webhook_id, body, created_at, retry_from, next_attempt_at)
            VALUES (v_endpoint.endpoint_id, v_event.event_id, v_event.type, 'evt_' || v_event.event_id,
                    jsonb_build_object(
                        'type', v_event.type,
                        'timestamp', ledger._iso_utc(v_event.occurred_at),
                        'data', jsonb_build_object(
                            'event_id', v_event.event_id,
                            'type', v_event.type,
                            'owner_id', v_event.owner_id,
                            'seq', v_event.seq,
                            'entry_id', v_event.entry_id,
                            'hold_id', v_event.hold_id,
                            'grant_id', v_event.grant_id,
                            'occurred_at', ledger._iso_utc(v_event.occurred_at),
                            'payload', v_event.payload))::text,
                    v_now, v_now, v_now)
            ON CONFLICT ON CONSTRAINT webhook_deliveries_once DO NOTHING;
        END LOOP;
        IF v_cursor IS DISTINCT FROM v_endpoint.cursor THEN
            UPDATE ledger.webhook_endpoints e SET cursor = v_cursor WHERE e.endpoint_id = v_endpoint.endpoint_id;
        END IF;
    END LOOP;
    RETURN v_read;
END
$$;
COMMENT ON FUNCTION ledger.fan_out_webhooks(integer) IS $$
Reads, for every active endpoint not being fanned out by another session,
up to max_rows (1 to 10000) events of its app's feed after its cursor
(list_events: never skips an event), writes a pending delivery for each of
the endpoint's types (the signed body: {"type", "timestamp", "data": the
event}, webhook-id evt_<event_id>), and moves its cursor past them, in one
transaction. Returns how many events were read (0: every endpoint is up to
date). The dispatcher calls it on every tick.$$;

CREATE OR REPLACE FUNCTION ledger.claim_webhook_deliveries(
    max_rows       integer,
    lease          interval,
    per_endpoint   integer DEFAULT NULL,
    skip_endpoints bigint[] DEFAULT NULL)
RETURNS SETOF ledger.webhook_claim
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now     timestamptz := clock_timestamp();
    v_per     integer := coalesce(claim_webhook_deliveries.per_endpoint, claim_webhook_deliveries.max_rows);
BEGIN
    PERFORM ledger._webhook_rows(claim_webhook_deliveries.max_rows, 1000);
    IF lease IS NULL OR lease < interval '1 second' OR lease > interval '1 day' THEN
        RAISE EXCEPTION 'invalid argument: lease must be between 1 second and 1 day (% given)', lease
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'lease', 'reason', 'out of range')::text;
    END IF;
    IF v_per < 1 THEN
        RAISE EXCEPTION 'invalid argument: per_endpoint must be at least 1 (% given)', v_per
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'per_endpoint', 'reason', 'out of range', 'min', 1)::text;
    END IF;
    -- Each active endpoint's due deliveries (at most per_endpoint of each,
    -- so that one endpoint's backlog cannot fill a dispatcher), soonest
    -- first; rows another claim holds right now are skipped.
    RETURN QUERY
        WITH picked AS (
            SELECT x.delivery_id
            FROM ledger.webhook_endpoints e
            CROSS JOIN LATERAL (
                SELECT d.delivery_id, d.next_attempt_at
                FROM ledger.webhook_deliveries d
                WHERE d.endpoint_id = e.endpoint_id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                ORDER BY d.next_attempt_at, d.delivery_id
                LIMIT least(v_per, claim_webhook_deliveries.max_rows)
                FOR UPDATE OF d SKIP LOCKED) x
            WHERE e.active
              AND (claim_webhook_deliveries.skip_endpoints IS NULL
                   OR NOT e.endpoint_id = ANY (claim_webhook_deliveries.skip_endpoints))
            ORDER BY x.next_attempt_at, x.delivery_id
            LIMIT claim_webhook_deliveries.max_rows
        )
        UPDATE ledger.webhook_deliveries d
        SET attempts = d.attempts + 1,
            next_attempt_at = v_now + claim_webhook_deliveries.lease,
            leased_until = v_now + claim_webhook_deliveries.lease
        FROM picked p, ledger.webhook_endpoints e
        WHERE d.delivery_id = p.delivery_id AND e.endpoint_id = d.endpoint_id
        RETURNING d.delivery_id, d.attempts, d.endpoint_id, e.url, e.secret, d.webhook_id, d.body;
END
$$;
COMMENT ON FUNCTION ledger.claim_webhook_deliveries(integer, interval, integer, bigint[]) IS $$
Hands the calling dispatcher up to max_rows (1 to 1000) due deliveries of
active endpoints, soonest first, at most per_endpoint of each endpoint and
none of skip_endpoints (those the dispatcher already has enough attempts in
flight for), each with what its attempt needs: the endpoint's URL and
signing secret, the webhook-id and the body. Each is leased for `lease` (1
second to 1 day): no other claim returns it until its outcome is recorded
(record_webhook_attempts) or the lease has run out (its dispatcher died);
`attempt` numbers the claims of a delivery and identifies this one. Rows
another session is claiming are skipped, so dispatchers never wait for each
other. The dispatcher's role only: it returns secrets.$$;

CREATE OR REPLACE FUNCTION ledger.record_webhook_attempts(
    outcomes text,
    horizon  interval DEFAULT interval '3 days')
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now      timestamptz := clock_timestamp();
    v_outcomes jsonb;
    v_recorded integer;
BEGIN
    BEGIN
        v_outcomes := record_webhook_attempts.outcomes::jsonb;
    EXCEPTION WHEN invalid_text_representation OR untranslatable_character THEN
        v_outcomes := NULL;
    END;
    IF v_outcomes IS NULL OR jsonb_typeof(v_outcomes) <> 'array' THEN
        RAISE EXCEPTION 'invalid argument: outcomes must be a JSON array'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'outcomes', 'reason', 'invalid')::text;
    END IF;
    IF horizon IS NULL OR horizon < interval '0' THEN
        RAISE EXCEPTION 'invalid argument: horizon must be an interval of at least 0 (% given)', horizon
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'horizon', 'reason', 'out of range')::text;
    END IF;
    -- Only the claim an outcome belongs to counts: a delivery claimed again
    -- since (its lease ran out) or deleted is left as it is.
    WITH o AS (
        SELECT x.delivery_id, x.attempt, coalesce(x.ok, false) AS ok, x.status_code,
               left(x.error, 1000) AS error, x.duration_ms,
               coalesce(x.attempted_at, v_now) AS attempted_at,
               CASE WHEN coalesce(x.ok, false) OR x.retry_in IS NULL THEN NULL
                    ELSE v_now + make_interval(secs => greatest(x.retry_in, 0)) END AS retry_at
        FROM jsonb_to_recordset(v_outcomes) AS x(delivery_id bigint, attempt integer, ok boolean,
                                                 status_code integer, error text, duration_ms integer,
                                                 attempted_at timestamptz, retry_in double precision)
    ), done AS (
        UPDATE ledger.webhook_deliveries d
        SET status = CASE WHEN o.ok THEN 'delivered'
                          WHEN o.retry_at IS NULL OR o.retry_at > d.retry_from + horizon THEN 'failed'
                          ELSE 'pending' END,
            next_attempt_at = CASE WHEN o.ok OR o.retry_at IS NULL OR o.retry_at > d.retry_from + horizon
                                   THEN v_now ELSE o.retry_at END,
            finished_at = CASE WHEN o.ok OR o.retry_at IS NULL OR o.retry_at > d.retry_from + horizon
                               THEN v_now END,
            leased_until = NULL,
            last_attempt_at = o.attempted_at,
            last_status_code = o.status_code,
            last_error = CASE WHEN o.ok THEN NULL ELSE o.error END
        FROM o
        WHERE d.delivery_id = o.delivery_id AND d.attempts = o.attempt AND d.status = 'pending'
        RETURNING d.delivery_id, d.attempts, d.endpoint_id, d.event_id, d.status, o.attempted_at,
                  o.duration_ms, o.status_code, o.error
    )
    INSERT INTO ledger.webhook_attempts AS a
        (delivery_id, attempt, endpoint_id, event_id, attempted_at, duration_ms, status_code, error, outcome)
    SELECT done.delivery_id, done.attempts, done.endpoint_id, done.event_id, done.attempted_at,
           done.duration_ms, done.status_code, done.error,
           CASE done.status WHEN 'pending' THEN 'retry' ELSE done.status END
    FROM done
    ON CONFLICT ON CONSTRAINT webhook_attempts_pkey DO NOTHING;
    GET DIAGNOSTICS v_recorded = ROW_COUNT;
    RETURN v_recorded;
END
$$;
COMMENT ON FUNCTION ledger.record_webhook_attempts(text, interval) IS $$
Records the outcomes of claimed attempts, a JSON array of {delivery_id,
attempt, ok, status_code, error, duration_ms, attempted_at, retry_in}: an
ok attempt makes its delivery delivered; another is tried again retry_in
seconds from now (the dispatcher's backoff) unless that is beyond horizon
(default 3 days) from its creation or last resend, or retry_in is null:
then the delivery is failed. Each outcome is added to the delivery log.
An outcome of an older claim (the delivery was claimed again after its
lease ran out) or of a deleted endpoint is ignored. Returns how many were
recorded. LG007 for outcomes that are not a JSON array.$$;


-- ---- retention ----------------------------------------------------------------------------

-- Guarantees: raises LG007 unless older_than is at least 0.
CREATE OR REPLACE FUNCTION ledger._retention_window(p_older_than interval)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF p_older_than IS NULL OR p_older_than < interval '0' THEN
        RAISE EXCEPTION 'invalid argument: older_than must be an interval of at least 0 (% given)', p_older_than
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'older_than', 'reason', 'out of range')::text;
    END IF;
    RETURN clock_timestamp() - p_older_than;
END
$$;

CREATE OR REPLACE FUNCTION ledger.prune_events(
    older_than interval DEFAULT interval '30 days',
    max_rows   integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cutoff timestamptz := ledger._retention_window(prune_events.older_than);
    v_keep   bigint;
    v_owners text[];
    v_ids    bigint[];
    v_done   integer;
BEGIN
    PERFORM ledger._webhook_rows(prune_events.max_rows, 100000);
    -- The feed from the oldest cursor of an active endpoint on is still to be
    -- fanned out: kept, however old.
    SELECT min(ledger._cursor_position(e.cursor)) INTO v_keep
    FROM ledger.webhook_endpoints e WHERE e.active;
    WITH gone AS (
        DELETE FROM ledger.event_feed f
        WHERE f.position IN (SELECT g.position FROM ledger.event_feed g
                             WHERE g.relayed_at < v_cutoff AND (v_keep IS NULL OR g.position <= v_keep)
                             ORDER BY g.position
                             LIMIT prune_events.max_rows)
        RETURNING f.owner_id, f.event_id
    )
    SELECT array_agg(gone.owner_id), array_agg(gone.event_id), count(*) INTO v_owners, v_ids, v_done FROM gone;
    IF v_done > 0 THEN
        -- Their rows of the outbox, copied to the feed by the relay.
        DELETE FROM ledger.events e
        WHERE e.relayed AND e.owner_id = ANY (v_owners) AND e.event_id = ANY (v_ids);
    END IF;
    RETURN v_done;
END
$$;
COMMENT ON FUNCTION ledger.prune_events(interval, integer) IS $$
Deletes up to max_rows (1 to 100000) of the oldest events that joined the
feed more than older_than ago (default 30 days; at least 0, else LG007),
with their rows of the outbox, in one transaction; returns how many (call
it again until it returns less than max_rows: `ledger events prune` does).
Never an event not relayed yet, nor one an active webhook endpoint has not
fanned out yet (its cursor has not passed it; a disabled endpoint holds
nothing back). A delivery keeps its own copy of the body it sends, so
pruning events never loses one. A cursor reader must read within the
window: an event pruned before it was read is not returned.$$;

CREATE OR REPLACE FUNCTION ledger.prune_webhook_deliveries(
    older_than interval DEFAULT interval '30 days',
    max_rows   integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cutoff timestamptz := ledger._retention_window(prune_webhook_deliveries.older_than);
    v_done   integer;
BEGIN
    PERFORM ledger._webhook_rows(prune_webhook_deliveries.max_rows, 100000);
    DELETE FROM ledger.webhook_deliveries d
    WHERE d.delivery_id IN (SELECT x.delivery_id FROM ledger.webhook_deliveries x
                            WHERE x.status <> 'pending' AND x.finished_at < v_cutoff
                            ORDER BY x.finished_at
                            LIMIT prune_webhook_deliveries.max_rows);
    GET DIAGNOSTICS v_done = ROW_COUNT;
    RETURN v_done;
END
$$;
COMMENT ON FUNCTION ledger.prune_webhook_deliveries(interval, integer) IS $$
Deletes up to max_rows (1 to 100000) deliveries that were delivered or
failed more than older_than ago (default 30 days; at least 0, else LG007),
with their attempts, in one transaction; returns how many. A pending
delivery is never pruned, however old.$$;
