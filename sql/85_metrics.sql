-- What a monitoring system scrapes from the database: the backlogs of the
-- event feed and of the webhook deliveries, and what finished recently. One
-- call reads every figure; each is a count over a partial index or a range
-- of an index, so its cost follows the backlog and the window, never the
-- size of the ledger. The HTTP service's GET /metrics calls it at scrape
-- time (never per request), under a short statement timeout.
--
-- On Citus, events and accounts are distributed (one count per shard, each
-- over its partial index); event_feed and the webhook tables stay on the
-- coordinator.

CREATE OR REPLACE FUNCTION ledger.metrics_snapshot(recent interval DEFAULT interval '5 minutes')
RETURNS TABLE (
    events_unrelayed            bigint,
    feed_position               bigint,
    fan_out_lag                 bigint,
    deliveries_pending          bigint,
    deliveries_delivered_recent bigint,
    deliveries_failed_recent    bigint,
    grants_expired_recent       bigint,
    expiry_due_owners           bigint,
    measured_at                 timestamptz
)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now   timestamptz := clock_timestamp();
    v_since timestamptz;
BEGIN
    IF recent IS NULL OR recent < interval '1 second' OR recent > interval '1 day' THEN
        RAISE EXCEPTION 'invalid argument: recent must be between 1 second and 1 day (% given)', recent
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'recent', 'reason', 'out of range',
                                             'min', '1 second', 'max', '1 day')::text;
    END IF;
    v_since := v_now - recent;
    -- Written by a committed change, not yet copied into the feed (index events_unrelayed).
    SELECT count(*) INTO events_unrelayed FROM ledger.events e WHERE NOT e.relayed;
    SELECT coalesce(max(f.position), 0) INTO feed_position FROM ledger.event_feed f;
    -- Feed positions the slowest active endpoint has not fanned out into deliveries yet.
    SELECT coalesce(feed_position - min(ledger._cursor_position(w.cursor)), 0) INTO fan_out_lag
    FROM ledger.webhook_endpoints w WHERE w.active;
    SELECT count(*) INTO deliveries_pending
    FROM ledger.webhook_deliveries d WHERE d.status = 'pending';
    SELECT count(*) FILTER (WHERE d.status = 'delivered'), count(*) FILTER (WHERE d.status = 'failed')
    INTO deliveries_delivered_recent, deliveries_failed_recent
    FROM ledger.webhook_deliveries d
    WHERE d.status <> 'pending' AND d.finished_at >= v_since;
    SELECT count(*) INTO grants_expired_recent
    FROM ledger.event_feed f
    WHERE f.relayed_at >= v_since AND f.type = 'grant.expired';
    -- Owners with a grant or hold past its expiry that no write has recorded
    -- yet (next_expiry may be early: an upper bound). It stays high when no
    -- `ledger grants expire` job runs and the owners stay idle.
    SELECT count(*) INTO expiry_due_owners
    FROM ledger.accounts a WHERE a.next_expiry IS NOT NULL AND a.next_expiry <= v_now;
    measured_at := v_now;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION ledger.metrics_snapshot(interval) IS $$
One row of figures for monitoring: events written but not yet relayed into
the feed, the feed's last position, how many feed positions the slowest
active webhook endpoint has not fanned out yet, webhook deliveries pending,
those delivered and failed within the last `recent` (1 second to 1 day,
default 5 minutes, else LG007), grant.expired events relayed within it,
and owners with an expiry due that no write has recorded yet. Each figure is
a count over an index (a partial one, or a range of the window), so a call
stays cheap on a large ledger.$$;
