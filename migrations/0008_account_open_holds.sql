-- How many holds of an account are still open (status 'active': neither
-- captured nor released, expired or not). It lets a debit of an owner
-- without open holds check and write in one UPDATE: that UPDATE's re-check
-- after waiting for the row lock sees the latest row, so a hold created
-- meanwhile is seen through this count (a subquery on ledger.holds would be
-- read with the statement's older snapshot). Kept by create_hold,
-- capture_hold and release_hold under the account lock; verify() checks it.
-- depends: 0007_example_app_content

ALTER TABLE ledger.accounts
    ADD COLUMN open_holds integer NOT NULL DEFAULT 0
        CONSTRAINT accounts_open_holds_non_negative CHECK (open_holds >= 0);

UPDATE ledger.accounts a SET open_holds = h.n
FROM (SELECT h.owner_id, count(*)::integer AS n
      FROM ledger.holds h WHERE h.status = 'active'
      GROUP BY h.owner_id) h
WHERE h.owner_id = a.owner_id;
