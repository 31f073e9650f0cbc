-- Privileges, re-applied after every function load. PUBLIC gets nothing;
-- internal helpers (names starting with _) stay callable only by their owner,
-- except the pure ones that inlined reads run under the caller's role.
-- Everything is owned by ledger_schema_owner (migrations/0009), which no app
-- or operator role can act as; each role below gets only these grants.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ledger FROM PUBLIC, ledger_owner;
-- The functions of schema ledger_shard (what post_entry, create_hold and
-- grant_credits run on the owner's shard) are their owner's alone: callers
-- reach them through the functions of schema ledger, and no role but the
-- owner has USAGE on the schema (migrations/0017_ledger_shard.sql).
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ledger_shard FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA ledger FROM ledger_app, ledger_reader, ledger_owner;

GRANT SELECT ON ledger.apps, ledger.operations, ledger.accounts, ledger.entries, ledger.holds,
                ledger.grants, ledger.grant_spending
    TO ledger_app, ledger_reader, ledger_owner;

-- The API of section 2 for services.
GRANT EXECUTE ON FUNCTION
    ledger.post_entry(text, text, text, text, numeric, text),
    ledger.post_entry(jsonb, text, text, text, text, numeric),
    ledger.get_balance(text),
    ledger.get_entry(bigint, text, text),
    ledger.list_entries(text, bigint, integer, text),
    ledger.balance_at(text, timestamptz),
    ledger.create_hold(text, text, text, text, numeric, interval),
    ledger.capture_hold(bigint, text, numeric, text),
    ledger.release_hold(bigint, text, text),
    ledger.get_hold(bigint, text, text),
    ledger.list_holds(text, text),
    ledger.transfer(text, text, numeric, text, text, text),
    ledger.transfer(jsonb, text, text, numeric, text, text),
    ledger.reverse_entry(bigint, text, text, text, text),
    ledger.grant_credits(text, text, text, text, numeric, timestamptz, integer, text),
    ledger.list_grants(text, boolean),
    ledger.list_spending(text, bigint, bigint, integer),
    ledger.void_grant(bigint, text, text, text, text),
    ledger.expire_grants(integer, interval),
    ledger.list_operations(text),
    ledger.app_report(text, timestamptz, timestamptz),
    ledger.verify()
TO ledger_app;

-- Reads for auditors and reports.
GRANT EXECUTE ON FUNCTION
    ledger.get_balance(text),
    ledger.get_entry(bigint, text, text),
    ledger.list_entries(text, bigint, integer, text),
    ledger.balance_at(text, timestamptz),
    ledger.get_hold(bigint, text, text),
    ledger.list_holds(text, text),
    ledger.list_grants(text, boolean),
    ledger.list_spending(text, bigint, bigint, integer),
    ledger.list_operations(text),
    ledger.app_report(text, timestamptz, timestamptz),
    ledger.verify()
TO ledger_reader, ledger_owner;

-- Operators (members of ledger_owner): define apps and operations, manage
-- HTTP API keys (`ledger keys`), and read as ledger_reader does. No table
-- privilege beyond SELECT and no ownership: the journal's triggers are out
-- of their reach.
GRANT EXECUTE ON FUNCTION
    ledger.define_app(text, text),
    ledger.define_operation(text, text, text, bigint, bigint, bigint, boolean, text, text, interval, integer),
    ledger.expire_grants(integer, interval),
    ledger.create_api_key(text, bytea, text, text),
    ledger.list_api_keys(),
    ledger.revoke_api_key(text)
TO ledger_owner;

-- get_balance runs as its caller (no SECURITY DEFINER, no SET clause on the
-- hottest read), so the helpers it calls do too. _require_id inlines a call
-- of _invalid_id, checked when the query starts.
GRANT EXECUTE ON FUNCTION ledger._require_id(text, text), ledger._invalid_id(text, text),
                          ledger._active_holds(text, bigint, timestamptz),
                          ledger._expired_unwritten(text, timestamptz)
    TO ledger_app, ledger_reader, ledger_owner;

-- HTTP API keys (sql/70_api_keys.sql): the web service only resolves a token
-- hash to its app; creating, listing and revoking keys are ledger_owner's (above).
GRANT EXECUTE ON FUNCTION ledger.api_key_app(bytea), ledger.api_key_lookup(bytea) TO ledger_app;

-- Batches (sql/50_batches.sql): both overloads of post_entries.
GRANT EXECUTE ON FUNCTION ledger.post_entries(text, text), ledger.post_entries(jsonb, text) TO ledger_app;

-- Events (sql/35_events.sql): apps read the feed and set their alert
-- thresholds; the relay runs in list_events and in the webhook dispatcher.
GRANT SELECT ON ledger.events, ledger.event_feed, ledger.balance_alerts TO ledger_app, ledger_reader, ledger_owner;
GRANT EXECUTE ON FUNCTION
    ledger.list_events(text, text, integer),
    ledger.relay_events(integer),
    ledger.set_balance_alert(text, bigint),
    ledger.remove_balance_alert(text, bigint),
    ledger.list_balance_alerts(text)
TO ledger_app;
GRANT EXECUTE ON FUNCTION ledger.list_balance_alerts(text) TO ledger_reader, ledger_owner;

-- Webhooks (sql/80_webhooks.sql). Their tables hold signing secrets and the
-- apps' own metadata: nobody reads them but through these functions.
REVOKE ALL ON ALL TABLES IN SCHEMA ledger FROM ledger_dispatcher;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ledger FROM ledger_dispatcher;
-- Services register, list, disable and delete their app's endpoints, read
-- their delivery log and resend (the HTTP API passes the key's app).
GRANT EXECUTE ON FUNCTION
    ledger.create_webhook_endpoint(text, text, text[], text),
    ledger.set_webhook_endpoint_active(bigint, text, boolean),
    ledger.delete_webhook_endpoint(bigint, text),
    ledger.resend_webhook_event(bigint, text, bigint)
TO ledger_app, ledger_owner;
GRANT EXECUTE ON FUNCTION
    ledger.list_webhook_endpoints(text),
    ledger.get_webhook_endpoint(bigint, text),
    ledger.list_webhook_deliveries(bigint, text, text, bigint, integer),
    ledger.list_webhook_attempts(bigint, text, bigint, integer)
TO ledger_app, ledger_reader, ledger_owner;
-- The dispatcher (`ledger webhooks run`) logs in as a member of
-- ledger_dispatcher: the only role whose call returns signing secrets.
GRANT EXECUTE ON FUNCTION
    ledger.fan_out_webhooks(integer),
    ledger.claim_webhook_deliveries(integer, interval, integer, bigint[]),
    ledger.record_webhook_attempts(text, interval),
    ledger.relay_events(integer)
TO ledger_dispatcher;
-- Retention (`ledger events prune`): operators, or the dispatcher's login.
GRANT EXECUTE ON FUNCTION
    ledger.prune_events(interval, integer),
    ledger.prune_webhook_deliveries(interval, integer)
TO ledger_owner, ledger_dispatcher;
-- Monitoring (sql/85_metrics.sql): counts only, no owner, app or secret.
GRANT EXECUTE ON FUNCTION ledger.metrics_snapshot(interval) TO ledger_app, ledger_reader, ledger_owner;

-- Operators (sql/85_operators.sql). ledger_operator corrects the ledger
-- for any app and resends webhook deliveries; the console's reads are for
-- services, readers, operators and ledger_owner (who
-- read what readers read); ledger_console keeps the console's
-- own users and session key; ledger_owner adds and removes console users
-- (`ledger console add-user`) and records verify runs.
REVOKE ALL ON ALL TABLES IN SCHEMA ledger FROM ledger_operator, ledger_console;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ledger FROM ledger_operator, ledger_console;
GRANT EXECUTE ON FUNCTION
    ledger.operator_grant_credits(text, text, text, text, text, text, numeric, timestamptz, integer),
    ledger.operator_void_grant(text, text, bigint, text, text),
    ledger.operator_reverse_entry(text, text, bigint, text, text),
    ledger.operator_release_hold(text, text, bigint, text, text),
    ledger.resend_webhook_event(bigint, text, bigint),
    ledger.record_verify()
TO ledger_operator;
GRANT EXECUTE ON FUNCTION ledger.record_verify() TO ledger_owner;
GRANT EXECUTE ON FUNCTION
    ledger.list_operator_actions(text, bigint, bigint, integer),
    ledger.owner_history(text, bigint, integer, text, text),
    ledger.balance_series(text, integer),
    ledger.find_owners(text, integer),
    ledger.daily_activity(integer),
    ledger.busiest_owners(interval, integer),
    ledger.list_open_holds(interval, interval, integer),
    ledger.latest_verify()
TO ledger_app, ledger_reader, ledger_owner, ledger_operator;
GRANT EXECUTE ON FUNCTION
    ledger.console_sign_in(text),
    ledger.console_signed_in(text),
    ledger.console_user(text),
    ledger.console_secret()
TO ledger_console;
GRANT EXECUTE ON FUNCTION
    ledger.set_console_user(text, text, text),
    ledger.remove_console_user(text),
    ledger.list_console_users()
TO ledger_owner;
