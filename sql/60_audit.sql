-- Audits and reports: read-only, callable by ledger_reader.

-- PL/pgSQL (Citus cannot plan a SQL function over its tables); each check
-- groups by owner, so on a cluster each runs on the workers.
DROP FUNCTION IF EXISTS ledger.verify();  -- it was a SQL function before
CREATE FUNCTION ledger.verify()
RETURNS SETOF ledger.verify_row
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    WITH sums AS (
        SELECT e.owner_id, sum(e.amount) AS total, count(*) AS n, max(e.seq) AS max_seq,
               (array_agg(e.balance ORDER BY e.seq DESC))[1] AS last_balance
        FROM ledger.entries e
        GROUP BY e.owner_id
    )
    SELECT 'balance_matches_entries'::text, a.owner_id,
           format('stored balance %s, sum of %s entries %s', a.balance, coalesce(s.n, 0), coalesce(s.total, 0))
    FROM ledger.accounts a LEFT JOIN sums s ON s.owner_id = a.owner_id
    WHERE a.balance <> coalesce(s.total, 0)
    UNION ALL
    SELECT 'last_entry_balance', a.owner_id,
           format('stored balance %s, balance after the last entry %s', a.balance, s.last_balance)
    FROM ledger.accounts a JOIN sums s ON s.owner_id = a.owner_id
    WHERE a.balance <> s.last_balance
    UNION ALL
    SELECT 'balance_non_negative', a.owner_id, format('balance %s', a.balance)
    FROM ledger.accounts a WHERE a.balance < 0
    UNION ALL
    SELECT 'entry_balance_non_negative', e.owner_id, format('entry %s has balance %s', e.entry_id, e.balance)
    FROM ledger.entries e WHERE e.balance < 0
    UNION ALL
    SELECT 'entry_references', e.owner_id,
           format('entry %s names app %s / operation %s that are not registered', e.entry_id, e.app, e.operation)
    -- Joins, not correlated subqueries (which Citus cannot route).
    FROM ledger.entries e
    LEFT JOIN ledger.apps p ON p.app = e.app
    LEFT JOIN ledger.operations o ON o.operation = e.operation
    WHERE p.app IS NULL OR o.operation IS NULL
    UNION ALL
    SELECT 'open_holds_count', a.owner_id,
           format('open_holds %s, holds not captured or released %s', a.open_holds, coalesce(h.n, 0))
    FROM ledger.accounts a
    LEFT JOIN (SELECT h.owner_id, count(*) AS n FROM ledger.holds h WHERE h.status = 'active'
               GROUP BY h.owner_id) h ON h.owner_id = a.owner_id
    WHERE a.open_holds <> coalesce(h.n, 0)
    UNION ALL
    SELECT 'transfer_legs', min(e.owner_id),
           format('transfer %s has %s legs summing to %s', e.transfer_id, count(*), sum(e.amount))
    FROM ledger.entries e
    WHERE e.transfer_id IS NOT NULL AND e.reverses_entry_id IS NULL
    GROUP BY e.transfer_id
    HAVING count(*) <> 2 OR sum(e.amount) <> 0
    UNION ALL
    -- The owner's order: seq runs 1, 2, 3, ... without a gap, and the
    -- account knows the last one.
    SELECT 'seq_contiguous', a.owner_id,
           format('last_seq %s, %s entries numbered up to %s', a.last_seq, coalesce(s.n, 0), coalesce(s.max_seq, 0))
    FROM ledger.accounts a LEFT JOIN sums s ON s.owner_id = a.owner_id
    WHERE a.last_seq <> coalesce(s.max_seq, 0) OR coalesce(s.n, 0) <> coalesce(s.max_seq, 0)
    UNION ALL
    -- Grants: what remains of each is its amount plus its spending rows,
    -- and a closed grant has nothing left.
    SELECT 'grant_remaining', g.owner_id,
           format('grant %s: amount %s, spending rows %s, remaining %s (status %s)', g.grant_id, g.amount,
                  coalesce(m.moved, 0), g.remaining, g.status)
    FROM ledger.grants g
    LEFT JOIN (SELECT s.owner_id, s.grant_id, sum(s.amount) AS moved FROM ledger.grant_spending s
               GROUP BY s.owner_id, s.grant_id) m ON m.owner_id = g.owner_id AND m.grant_id = g.grant_id
    WHERE g.remaining <> g.amount + coalesce(m.moved, 0) OR g.remaining < 0
       OR (g.status <> 'active' AND g.remaining <> 0)
    UNION ALL
    -- The stored balance is what remains of the owner's grants (one past its
    -- expiry counts until its EXPIRE entry is written).
    SELECT 'balance_matches_grants', a.owner_id,
           format('stored balance %s, remaining of active grants %s', a.balance, coalesce(g.left_over, 0))
    FROM ledger.accounts a
    LEFT JOIN (SELECT g.owner_id, sum(g.remaining) AS left_over FROM ledger.grants g
               WHERE g.status = 'active' GROUP BY g.owner_id) g ON g.owner_id = a.owner_id
    WHERE a.balance <> coalesce(g.left_over, 0)
    UNION ALL
    -- Every entry since grants exist: the grants it made and its spending
    -- rows add up to its amount.
    SELECT 'entry_grants', e.owner_id,
           format('entry %s (%s) of %s: grants made %s, spending rows %s', e.entry_id, e.operation, e.amount,
                  coalesce(gm.made, 0), coalesce(sp.moved, 0))
    FROM ledger.entries e
    JOIN ledger.accounts a ON a.owner_id = e.owner_id
    LEFT JOIN (SELECT g.owner_id, g.entry_id, sum(g.amount) AS made FROM ledger.grants g
               WHERE g.entry_id IS NOT NULL GROUP BY g.owner_id, g.entry_id) gm
           ON gm.owner_id = e.owner_id AND gm.entry_id = e.entry_id
    LEFT JOIN (SELECT s.owner_id, s.entry_id, sum(s.amount) AS moved FROM ledger.grant_spending s
               GROUP BY s.owner_id, s.entry_id) sp
           ON sp.owner_id = e.owner_id AND sp.entry_id = e.entry_id
    WHERE e.seq > a.grants_since_seq AND e.amount <> coalesce(gm.made, 0) + coalesce(sp.moved, 0)
    UNION ALL
    -- next_expiry is never later than the soonest expiry of a grant that
    -- may still hold credits (a write or a read relies on it to look).
    SELECT 'next_expiry', a.owner_id,
           format('next_expiry %s, but a grant with credits expires at %s', a.next_expiry, g.soonest)
    FROM ledger.accounts a
    JOIN (SELECT g.owner_id, min(g.expires_at) AS soonest FROM ledger.grants g
          WHERE g.status = 'active' AND g.remaining > 0 AND g.expires_at IS NOT NULL
          GROUP BY g.owner_id) g ON g.owner_id = a.owner_id
    WHERE a.next_expiry IS NULL OR a.next_expiry > g.soonest;
END
$$;
COMMENT ON FUNCTION ledger.verify() IS $$
The ledger's self-check: one row per discrepancy, no rows when healthy.
Checks that every stored balance equals the sum of its entries and the
last entry's running balance, that no balance is negative, that entries
reference known apps and operations, that each account counts its open
holds right, that every transfer has two legs summing to zero, that each
owner's entries are numbered 1, 2, 3, ... (seq) up to the account's
last_seq; and for grants: that each grant's remaining is its amount plus
its spending rows (0 once closed), that a stored balance is the sum of
what remains of the owner's active grants, that every entry since grants
exist is matched by the grants it made plus its spending rows, and that
the account's next_expiry is not later than a grant's expiry. (Active
holds may exceed the balance: a grant that expires or is voided under an
open hold can leave it uncovered; its capture then fails.) Read-only;
reads the whole journal.$$;

CREATE OR REPLACE FUNCTION ledger.app_report(app text, from_time timestamptz, to_time timestamptz)
RETURNS SETOF ledger.report_row
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ledger._require_app(app_report.app);
    IF app_report.from_time IS NULL OR app_report.to_time IS NULL OR app_report.from_time > app_report.to_time THEN
        RAISE EXCEPTION 'invalid argument: from_time and to_time are required and from_time <= to_time'
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'from_time', 'reason', 'invalid range')::text;
    END IF;
    RETURN QUERY
        WITH made AS (
            SELECT e.operation, count(*)::bigint AS entries,
                   coalesce(sum(e.amount) FILTER (WHERE e.amount > 0), 0)::bigint AS credited,
                   coalesce(-sum(e.amount) FILTER (WHERE e.amount < 0), 0)::bigint AS debited,
                   count(DISTINCT e.owner_id)::bigint AS owners
            FROM ledger.entries e
            WHERE e.app = app_report.app
              AND e.created_at >= app_report.from_time AND e.created_at < app_report.to_time
            GROUP BY e.operation
        ), gone AS (
            -- Credits of the app's grants, by the operation that made them,
            -- that left by an EXPIRE or VOID entry written in the window.
            SELECT g.operation,
                   coalesce(-sum(s.amount) FILTER (WHERE x.operation = 'EXPIRE'), 0)::bigint AS expired,
                   coalesce(-sum(s.amount) FILTER (WHERE x.operation = 'VOID'), 0)::bigint AS voided
            FROM ledger.grants g
            JOIN ledger.grant_spending s ON s.owner_id = g.owner_id AND s.grant_id = g.grant_id
            JOIN ledger.entries x ON x.owner_id = s.owner_id AND x.entry_id = s.entry_id
            WHERE g.app = app_report.app AND x.operation IN ('EXPIRE', 'VOID')
              AND x.created_at >= app_report.from_time AND x.created_at < app_report.to_time
            GROUP BY g.operation
        )
        SELECT app_report.app, coalesce(m.operation, d.operation), coalesce(m.entries, 0),
               coalesce(m.credited, 0), coalesce(m.debited, 0), coalesce(m.owners, 0),
               coalesce(d.expired, 0), coalesce(d.voided, 0)
        FROM made m
        FULL JOIN gone d ON d.operation = m.operation
        ORDER BY 2;
END
$$;
COMMENT ON FUNCTION ledger.app_report(text, timestamptz, timestamptz) IS $$
Per operation of the app's entries created in [from_time, to_time): how
many, the credits issued, the credits consumed (a positive number) and the
distinct owners; and, per operation that made grants, the credits of those
grants that expired and that were voided in the window (expired, voided). LG007 for a NULL or reversed range, LG011 for an unknown
app. Read-only.$$;
