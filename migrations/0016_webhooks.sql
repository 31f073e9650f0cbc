-- Webhooks: the endpoints an app registers, one delivery per (endpoint,
-- event) with a copy of the body it signs, and the log of every attempt.
-- The functions are in sql/80_webhooks.sql; nobody but the schema owner
-- reads these tables directly (sql/90_grants.sql grants no SELECT on them):
-- an endpoint's row holds its signing secret, and a delivery's body carries
-- the app's own metadata.
--
--   webhook_endpoints   per app: URL, event types (NULL: every type), the
--                       secret (whsec_ + base64 of 32 random bytes, kept as
--                       is: an HMAC key cannot be stored as a hash), the
--                       cursor of the app's event feed up to which the
--                       endpoint's deliveries are made (list_events' opaque
--                       cursor), active or disabled
--   webhook_deliveries  one per (endpoint, event): status pending ->
--                       delivered | failed, the body signed on every attempt,
--                       when it may next be tried, the lease of the attempt
--                       in flight, the last outcome
--   webhook_attempts    one per finished attempt: when, HTTP status or error,
--                       how long it took
--
-- No owner_id column: on Citus these stay plain tables of the coordinator
-- (sql/citus/distribute.sql distributes the tables with an owner_id), which
-- is where the dispatcher's statements run.
--
-- ledger_dispatcher is the role of the webhook dispatcher's login (`ledger
-- webhooks run`): it may relay events, fan them out, claim deliveries (the
-- only call that returns secrets) and record attempts, nothing else. Roles
-- are cluster-wide: the CREATE ROLE is guarded.
-- depends: 0015_events

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ledger_dispatcher') THEN
        CREATE ROLE ledger_dispatcher NOLOGIN;
    END IF;
END
$roles$;
GRANT USAGE ON SCHEMA ledger TO ledger_dispatcher;

CREATE TABLE ledger.webhook_endpoints (
    endpoint_id  bigint GENERATED ALWAYS AS IDENTITY
                 CONSTRAINT webhook_endpoints_pkey PRIMARY KEY,
    app          text NOT NULL,
    url          text NOT NULL
                 CONSTRAINT webhook_endpoints_url_valid
                 CHECK (url ~ '^https?://[^/?#[:space:]]+([/?#][^[:space:]]*)?$' AND length(url) <= 2048),
    event_types  text[]
                 CONSTRAINT webhook_endpoints_event_types_valid
                 CHECK (cardinality(event_types) BETWEEN 1 AND 100
                        AND array_position(event_types, NULL) IS NULL),
    description  text CONSTRAINT webhook_endpoints_description_length CHECK (length(description) <= 255),
    secret       text NOT NULL
                 CONSTRAINT webhook_endpoints_secret_format CHECK (secret ~ '^whsec_[A-Za-z0-9+/]{40,}={0,2}$'),
    active       boolean NOT NULL DEFAULT true,
    cursor       text,
    created_at   timestamptz NOT NULL,
    disabled_at  timestamptz,
    CONSTRAINT webhook_endpoints_disabled_at CHECK (active = (disabled_at IS NULL))
);
CREATE INDEX webhook_endpoints_app ON ledger.webhook_endpoints (app);

CREATE TABLE ledger.webhook_deliveries (
    delivery_id      bigint GENERATED ALWAYS AS IDENTITY
                     CONSTRAINT webhook_deliveries_pkey PRIMARY KEY,
    endpoint_id      bigint NOT NULL
                     CONSTRAINT webhook_deliveries_endpoint_fkey
                     REFERENCES ledger.webhook_endpoints (endpoint_id) ON DELETE CASCADE,
    event_id         bigint NOT NULL,
    event_type       text NOT NULL,
    webhook_id       text NOT NULL,
    body             text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CONSTRAINT webhook_deliveries_status_valid
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0 CONSTRAINT webhook_deliveries_attempts_non_negative CHECK (attempts >= 0),
    created_at       timestamptz NOT NULL,
    retry_from       timestamptz NOT NULL,
    next_attempt_at  timestamptz NOT NULL,
    leased_until     timestamptz,
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    finished_at      timestamptz,
    CONSTRAINT webhook_deliveries_once UNIQUE (endpoint_id, event_id),
    CONSTRAINT webhook_deliveries_finished CHECK ((status = 'pending') = (finished_at IS NULL))
);
-- What a claim reads: each endpoint's pending deliveries, soonest first.
CREATE INDEX webhook_deliveries_due ON ledger.webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
-- What resend and retention read.
CREATE INDEX webhook_deliveries_event ON ledger.webhook_deliveries (event_id);
CREATE INDEX webhook_deliveries_finished_at ON ledger.webhook_deliveries (finished_at)
    WHERE status <> 'pending';

CREATE TABLE ledger.webhook_attempts (
    delivery_id  bigint NOT NULL
                 CONSTRAINT webhook_attempts_delivery_fkey
                 REFERENCES ledger.webhook_deliveries (delivery_id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    endpoint_id  bigint NOT NULL,
    event_id     bigint NOT NULL,
    attempted_at timestamptz NOT NULL,
    duration_ms  integer,
    status_code  integer,
    error        text,
    outcome      text NOT NULL
                 CONSTRAINT webhook_attempts_outcome_valid CHECK (outcome IN ('delivered', 'retry', 'failed')),
    CONSTRAINT webhook_attempts_pkey PRIMARY KEY (delivery_id, attempt)
);
CREATE INDEX webhook_attempts_endpoint ON ledger.webhook_attempts (endpoint_id, attempted_at);

-- What the functions return.
CREATE TYPE ledger.webhook_endpoint AS (
    endpoint_id bigint,
    app         text,
    url         text,
    event_types text[],
    description text,
    active      boolean,
    created_at  timestamptz,
    disabled_at timestamptz
);

-- create_webhook_endpoint's answer: the one time the secret is shown.
CREATE TYPE ledger.webhook_endpoint_created AS (
    endpoint_id bigint,
    app         text,
    url         text,
    event_types text[],
    description text,
    active      boolean,
    created_at  timestamptz,
    disabled_at timestamptz,
    secret      text
);

CREATE TYPE ledger.webhook_delivery AS (
    delivery_id      bigint,
    endpoint_id      bigint,
    event_id         bigint,
    event_type       text,
    webhook_id       text,
    status           text,
    attempts         integer,
    created_at       timestamptz,
    next_attempt_at  timestamptz,
    leased_until     timestamptz,
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    finished_at      timestamptz
);

CREATE TYPE ledger.webhook_attempt AS (
    delivery_id  bigint,
    attempt      integer,
    endpoint_id  bigint,
    event_id     bigint,
    attempted_at timestamptz,
    duration_ms  integer,
    status_code  integer,
    error        text,
    outcome      text
);

-- What a dispatcher claims: everything one attempt needs (the secret too).
CREATE TYPE ledger.webhook_claim AS (
    delivery_id  bigint,
    attempt      integer,
    endpoint_id  bigint,
    url          text,
    secret       text,
    webhook_id   text,
    body         text
);

ALTER TABLE ledger.webhook_endpoints OWNER TO ledger_schema_owner;
ALTER TABLE ledger.webhook_deliveries OWNER TO ledger_schema_owner;
ALTER TABLE ledger.webhook_attempts OWNER TO ledger_schema_owner;
ALTER TYPE ledger.webhook_endpoint OWNER TO ledger_schema_owner;
ALTER TYPE ledger.webhook_endpoint_created OWNER TO ledger_schema_owner;
ALTER TYPE ledger.webhook_delivery OWNER TO ledger_schema_owner;
ALTER TYPE ledger.webhook_attempt OWNER TO ledger_schema_owner;
ALTER TYPE ledger.webhook_claim OWNER TO ledger_schema_owner;
