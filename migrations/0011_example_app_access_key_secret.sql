-- The example app's secret for the idempotency keys of its CONTENT_ACCESS
-- debits. web/example_app.py derives the key of reader R's access to content
-- C as HMAC-SHA256(secret, "C:R"): a fixed length whatever the reader id,
-- and a key no other caller of the app can compute, so none can post an
-- entry under it first and block the reader's access with a conflict.
-- The secret is made here, by the database's strong random source
-- (gen_random_uuid: 122 random bits each, 244 in all), and never leaves the
-- database except to the role the web app connects as.
-- depends: 0009_schema_owner

CREATE TABLE example_app.access_key_secret (
    only_row boolean PRIMARY KEY DEFAULT true CONSTRAINT access_key_secret_one_row CHECK (only_row),
    secret   bytea NOT NULL CONSTRAINT access_key_secret_length CHECK (length(secret) >= 32)
);

INSERT INTO example_app.access_key_secret (secret)
VALUES (decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));

ALTER TABLE example_app.access_key_secret OWNER TO ledger_schema_owner;
REVOKE ALL ON example_app.access_key_secret FROM PUBLIC;
GRANT SELECT ON example_app.access_key_secret TO ledger_app;
