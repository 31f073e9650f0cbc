-- The example content app's own tables, in a schema of its own: the ledger
-- knows nothing of them. A content row is inserted in the same transaction
-- as the capture of its CONTENT_CREATION hold, so content exists exactly when
-- it was paid for; an access row is inserted in the same transaction as its
-- CONTENT_ACCESS debit, so a reader pays once per content.
-- depends: 0006_api_keys

CREATE SCHEMA example_app AUTHORIZATION ledger_owner;
REVOKE ALL ON SCHEMA example_app FROM PUBLIC;
GRANT USAGE ON SCHEMA example_app TO ledger_app, ledger_reader;

CREATE TABLE example_app.content (
    content_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id   text NOT NULL CONSTRAINT content_owner_id_length CHECK (length(owner_id) BETWEEN 1 AND 255),
    title      text NOT NULL CONSTRAINT content_title_length CHECK (length(title) BETWEEN 1 AND 500),
    body       text NOT NULL,
    -- The hold that paid for it (its capture's entry): one content per hold,
    -- which makes a retried creation find the content it already made.
    hold_id    bigint NOT NULL CONSTRAINT content_hold_id_unique UNIQUE,
    entry_id   bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);

-- Who has accessed what: one row, hence one charge, per reader and content.
CREATE TABLE example_app.content_access (
    content_id  bigint NOT NULL REFERENCES example_app.content (content_id),
    owner_id    text NOT NULL,
    entry_id    bigint NOT NULL,
    accessed_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    PRIMARY KEY (content_id, owner_id)
);

ALTER TABLE example_app.content OWNER TO ledger_owner;
ALTER TABLE example_app.content_access OWNER TO ledger_owner;
GRANT SELECT, INSERT ON example_app.content, example_app.content_access TO ledger_app;
GRANT SELECT ON example_app.content, example_app.content_access TO ledger_reader;
