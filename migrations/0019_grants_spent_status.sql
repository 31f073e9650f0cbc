-- A grant whose credits are all spent is stored as `spent` (closed_at: the
-- write that emptied it), no longer as an `active` grant with nothing left.
--
-- Why: the spending-order index held only grants with credits left
-- (`status = 'active' AND remaining > 0`), so every debit's UPDATE of
-- `remaining` changed that predicate's inputs and could never be a HOT
-- update: each debit added a new entry to every index of the grants table,
-- and an owner debited often (one grant, many debits) made its spending
-- probe walk past a growing run of dead index entries. With the predicate on
-- `status` alone, a debit that leaves credits in the grant updates only
-- `remaining`, which no index holds: a HOT update, no index entry. The one
-- debit that empties a grant also sets `spent`, which takes it out of the
-- index, so spent grants never slow the probe either. A reversal giving
-- credits back to a spent grant makes it active again.
-- depends: 0017_ledger_shard

ALTER TABLE ledger.grants DROP CONSTRAINT grants_status_valid;
ALTER TABLE ledger.grants ADD CONSTRAINT grants_status_valid
    CHECK (status IN ('active', 'spent', 'expired', 'voided'));

-- Grants emptied by debits before this release: spent, closed when the last
-- entry that changed them was written (their creation, if none did).
UPDATE ledger.grants g
SET status = 'spent',
    closed_at = coalesce((SELECT max(e.created_at)
                          FROM ledger.grant_spending s
                          JOIN ledger.entries e ON e.owner_id = s.owner_id AND e.entry_id = s.entry_id
                          WHERE s.owner_id = g.owner_id AND s.grant_id = g.grant_id),
                         g.created_at)
WHERE g.status = 'active' AND g.remaining = 0;

-- An active grant has credits left: the status says whether it can be spent.
ALTER TABLE ledger.grants ADD CONSTRAINT grants_active_not_empty CHECK (status <> 'active' OR remaining > 0);

DROP INDEX ledger.grants_spending_order;
CREATE INDEX grants_spending_order ON ledger.grants (owner_id, priority, expires_at, seq, grant_id)
    WHERE status = 'active';

-- Room on each page for the new version of a grant a debit updates (a HOT
-- update needs it on the same page).
ALTER TABLE ledger.grants SET (fillfactor = 90);
