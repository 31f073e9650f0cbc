-- Events: a transactional outbox and a feed that never skips.
--
--   events          the outbox, per owner: every writing function writes its
--                   events here in the transaction of the change (distributed
--                   by owner_id on Citus, like the owner's other rows).
--   event_feed      the feed readers follow: a relay (ledger.relay_events, one
--                   at a time) copies committed, not yet relayed events here
--                   and gives each the next position. A reader reads positions
--                   in order; an event whose transaction commits late is
--                   relayed late, at a later position, so a reader that passed
--                   its neighbours still gets it. One table on one node (the
--                   coordinator on Citus), so what a reader sees of it is
--                   consistent.
--   balance_alerts  per app, the thresholds of available credits whose
--                   crossings make balance alerts (a reference table on Citus).
--
-- Holds that expire by the clock are now recorded when first observed
-- (status 'expired', closed_at = expires_at); accounts.next_expiry is the
-- soonest expiry of a grant with credits or of an active hold, and grants
-- remember whether their grant.expiring warning went out.
-- depends: 0014_credit_grants

CREATE TABLE ledger.events (
    owner_id    text NOT NULL,
    event_id    bigint GENERATED ALWAYS AS IDENTITY,
    type        text NOT NULL
                CONSTRAINT events_type_valid CHECK (type IN (
                    'entry.posted', 'hold.created', 'hold.captured', 'hold.released', 'hold.expired',
                    'transfer.posted', 'entry.reversed', 'grant.expired', 'grant.voided', 'grant.expiring',
                    'balance.below_threshold', 'balance.depleted', 'balance.recovered')),
    seq         bigint NOT NULL,
    entry_id    bigint,
    hold_id     bigint,
    grant_id    bigint,
    app         text,
    payload     jsonb NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    relayed     boolean NOT NULL DEFAULT false,
    CONSTRAINT events_pkey PRIMARY KEY (owner_id, event_id)
);
-- What the relay has still to copy, in the order it copies: by the instant
-- each event was recorded (under its owner's lock), then seq, then id (ids
-- are not time order: on Citus each node draws from its own range).
CREATE INDEX events_unrelayed ON ledger.events (recorded_at, seq, event_id) WHERE NOT relayed;
-- An owner's events in order (and the retention of old ones).
CREATE INDEX events_owner_seq ON ledger.events (owner_id, seq, event_id);

CREATE TABLE ledger.event_feed (
    position    bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT event_feed_pkey PRIMARY KEY,
    owner_id    text NOT NULL,
    event_id    bigint NOT NULL,
    type        text NOT NULL,
    seq         bigint NOT NULL,
    entry_id    bigint,
    hold_id     bigint,
    grant_id    bigint,
    app         text,
    payload     jsonb NOT NULL,
    occurred_at timestamptz NOT NULL,
    relayed_at  timestamptz NOT NULL,
    CONSTRAINT event_feed_event_once UNIQUE (owner_id, event_id)
);
CREATE INDEX event_feed_relayed_at ON ledger.event_feed (relayed_at);

CREATE TABLE ledger.balance_alerts (
    app        text NOT NULL REFERENCES ledger.apps (app),
    threshold  bigint NOT NULL CONSTRAINT balance_alerts_threshold_positive CHECK (threshold > 0),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT balance_alerts_pkey PRIMARY KEY (app, threshold)
);

ALTER TABLE ledger.holds DROP CONSTRAINT holds_status_valid;
ALTER TABLE ledger.holds ADD CONSTRAINT holds_status_valid
    CHECK (status IN ('active', 'captured', 'released', 'expired'));
ALTER TABLE ledger.grants ADD COLUMN expiring_notified boolean NOT NULL DEFAULT false;
-- Grants whose grant.expiring warning is still to go out.
CREATE INDEX grants_to_warn ON ledger.grants (expires_at)
    WHERE status = 'active' AND NOT expiring_notified AND expires_at IS NOT NULL;

-- next_expiry now also covers active holds.
UPDATE ledger.accounts a SET next_expiry = h.soonest
FROM (SELECT h.owner_id, min(h.expires_at) AS soonest FROM ledger.holds h
      WHERE h.status = 'active' GROUP BY h.owner_id) h
WHERE h.owner_id = a.owner_id AND (a.next_expiry IS NULL OR a.next_expiry > h.soonest);

-- On a ledger already distributed on Citus: the outbox joins the owners'
-- shards, the thresholds become a reference table, the feed stays on the
-- coordinator (sql/citus/distribute.sql leaves it there too).
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
        EXECUTE 'SELECT create_distributed_table(''ledger.events'', ''owner_id'', colocate_with := ''ledger.accounts'')';
        EXECUTE 'SELECT create_reference_table(''ledger.balance_alerts'')';
    END IF;
END
$citus$;

ALTER TABLE ledger.events OWNER TO ledger_schema_owner;
ALTER TABLE ledger.event_feed OWNER TO ledger_schema_owner;
ALTER TABLE ledger.balance_alerts OWNER TO ledger_schema_owner;

CREATE TYPE ledger.event_row AS (
    cursor      text,
    event_id    bigint,
    type        text,
    owner_id    text,
    seq         bigint,
    entry_id    bigint,
    hold_id     bigint,
    grant_id    bigint,
    payload     jsonb,
    occurred_at timestamptz
);
ALTER TYPE ledger.event_row OWNER TO ledger_schema_owner;
