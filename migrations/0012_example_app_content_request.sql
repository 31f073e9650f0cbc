-- The example app's content remembers a digest of the request that made it
-- (owner, title and body as sent), so a retry with the same idempotency key
-- but other content is refused (409) instead of answering the first
-- content as if it were the same request. Rows made before have none and
-- replay as they did.
-- depends: 0011_example_app_access_key_secret

ALTER TABLE example_app.content ADD COLUMN request_digest bytea;
