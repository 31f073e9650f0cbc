-- Owner-scoped keys and order. Every PRIMARY KEY, UNIQUE and FOREIGN KEY
-- among the per-owner tables (accounts, entries, holds) includes owner_id, so
-- that the same schema can be distributed by owner_id (Citus refuses any
-- other) and one owner's rows always live together:
--
--   entries  PRIMARY KEY (owner_id, entry_id)         was (entry_id)
--            UNIQUE (owner_id, seq)                   new: the owner's order
--            UNIQUE (owner_id, app, idempotency_key)  was (app, idempotency_key)
--            UNIQUE (reverses_entry_id, owner_id)     was (reverses_entry_id): reversed once
--            UNIQUE (transfer_id, owner_id)           was a plain index: one leg per owner
--            FK (owner_id, hold_id) -> holds          was (hold_id)
--            FK (owner_id, reverses_entry_id) -> entries (owner_id, entry_id)
--   holds    PRIMARY KEY (owner_id, hold_id)          was (hold_id)
--            UNIQUE (owner_id, app, idempotency_key)  was (app, idempotency_key)
--            FK (owner_id, entry_id) -> entries       was (entry_id)
--   accounts PRIMARY KEY (owner_id), unchanged; gains last_seq.
--
-- entry_id and hold_id stay unique numbers (identity columns) with the same
-- meaning in the API; plain indexes on them serve a lookup by id alone.
--
-- seq: each owner's entries are numbered 1, 2, 3, ... in the order the
-- owner's account row lock gave them (accounts.last_seq is the last one,
-- bumped in the UPDATE that changes the balance). Entries written before
-- this migration are numbered in entry_id order, which was their lock order:
-- every writer took the owner's row lock before drawing the entry's id.
--
-- An idempotency key now belongs to (owner_id, app): the same key for
-- another owner is another request (the functions of sql/ follow).
-- depends: 0012_example_app_content_request

-- The foreign keys that rest on the old single-column keys go first.
ALTER TABLE ledger.entries DROP CONSTRAINT IF EXISTS entries_hold_fk;
ALTER TABLE ledger.entries DROP CONSTRAINT IF EXISTS entries_reverses_entry_id_fkey;
ALTER TABLE ledger.holds DROP CONSTRAINT IF EXISTS holds_entry_id_fkey;

-- The owner's order. The journal refuses UPDATE (a trigger), so the one
-- backfill runs with that trigger off, inside this migration's transaction.
ALTER TABLE ledger.accounts ADD COLUMN last_seq bigint NOT NULL DEFAULT 0
    CONSTRAINT accounts_last_seq_non_negative CHECK (last_seq >= 0);
ALTER TABLE ledger.entries ADD COLUMN seq bigint;
ALTER TABLE ledger.entries DISABLE TRIGGER entries_append_only;
UPDATE ledger.entries e SET seq = n.seq
FROM (SELECT x.entry_id, row_number() OVER (PARTITION BY x.owner_id ORDER BY x.entry_id) AS seq
      FROM ledger.entries x) n
WHERE n.entry_id = e.entry_id;
ALTER TABLE ledger.entries ENABLE TRIGGER entries_append_only;
ALTER TABLE ledger.entries ALTER COLUMN seq SET NOT NULL;
ALTER TABLE ledger.entries ADD CONSTRAINT entries_seq_positive CHECK (seq >= 1);
UPDATE ledger.accounts a SET last_seq = s.last_seq
FROM (SELECT e.owner_id, max(e.seq) AS last_seq FROM ledger.entries e GROUP BY e.owner_id) s
WHERE s.owner_id = a.owner_id;

-- entries: keys that include owner_id.
ALTER TABLE ledger.entries DROP CONSTRAINT entries_pkey;
ALTER TABLE ledger.entries ADD CONSTRAINT entries_pkey PRIMARY KEY (owner_id, entry_id);
-- An owner's history, newest first: list_entries, verify(), balance_at ties.
ALTER TABLE ledger.entries ADD CONSTRAINT entries_owner_seq UNIQUE (owner_id, seq);
-- A lookup by entry_id alone (get_entry without owner_id) finds the owner here.
DROP INDEX ledger.entries_owner_entry_id;
CREATE INDEX entries_entry_id ON ledger.entries (entry_id);
DROP INDEX ledger.entries_app_idempotency_key;
CREATE UNIQUE INDEX entries_owner_app_idempotency_key ON ledger.entries (owner_id, app, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- balance_at: the last entry at or before an instant, ties in the owner's order.
DROP INDEX ledger.entries_owner_created_at;
CREATE INDEX entries_owner_created_at ON ledger.entries (owner_id, created_at DESC, seq DESC);
-- An entry is reversed at most once (a reversal has the owner of what it reverses).
DROP INDEX ledger.entries_reverses_once;
CREATE UNIQUE INDEX entries_reverses_once ON ledger.entries (reverses_entry_id, owner_id)
    WHERE reverses_entry_id IS NOT NULL;
-- The legs of a transfer: one per owner (a transfer is between two owners).
DROP INDEX ledger.entries_transfer_id;
CREATE UNIQUE INDEX entries_transfer_leg ON ledger.entries (transfer_id, owner_id)
    WHERE transfer_id IS NOT NULL;

-- holds: keys that include owner_id.
ALTER TABLE ledger.holds DROP CONSTRAINT holds_pkey;
ALTER TABLE ledger.holds ADD CONSTRAINT holds_pkey PRIMARY KEY (owner_id, hold_id);
DROP INDEX ledger.holds_owner;   -- the primary key serves an owner's holds, newest first
CREATE INDEX holds_hold_id ON ledger.holds (hold_id);
DROP INDEX ledger.holds_app_idempotency_key;
CREATE UNIQUE INDEX holds_owner_app_idempotency_key ON ledger.holds (owner_id, app, idempotency_key);

-- Foreign keys among per-owner tables, each through owner_id.
ALTER TABLE ledger.entries
    ADD CONSTRAINT entries_hold_fk FOREIGN KEY (owner_id, hold_id)
        REFERENCES ledger.holds (owner_id, hold_id),
    ADD CONSTRAINT entries_reverses_fk FOREIGN KEY (owner_id, reverses_entry_id)
        REFERENCES ledger.entries (owner_id, entry_id);
ALTER TABLE ledger.holds
    ADD CONSTRAINT holds_entry_fk FOREIGN KEY (owner_id, entry_id)
        REFERENCES ledger.entries (owner_id, entry_id);
