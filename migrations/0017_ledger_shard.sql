-- Schema ledger_shard: the single-owner write functions (post_entry,
-- create_hold, grant_credits) as they run on the owner's shard. Callers
-- reach them only through the functions of the same name in schema ledger,
-- which check the owner and pass the caller's role along; no role but
-- ledger_schema_owner may use this schema.
--
-- Why a schema of its own: on Citus (sql/citus/distribute.sql) these are the
-- functions distributed by owner_id, and Citus 12.1 crashes the coordinator's
-- backend (every session of the server restarted) when a distributed
-- function is called with a NULL owner_id, or from a subquery or a CTE
-- (docs/CITUS.md, "A distributed function crashes Citus 12.1"). Permission
-- to EXECUTE is checked only after Citus has planned the call; the schema's
-- USAGE is checked while the statement is parsed, so a role without it
-- cannot reach one of these functions in any form of call. On plain
-- PostgreSQL the schema is the same, and nothing is distributed.
-- depends: 0016_webhooks

CREATE SCHEMA IF NOT EXISTS ledger_shard AUTHORIZATION ledger_schema_owner;
REVOKE ALL ON SCHEMA ledger_shard FROM PUBLIC;
