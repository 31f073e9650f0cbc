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
    SELECT 'holds_covered', a.owner_id,
           format('active holds %s exceed balance %s', h.held, a.balance)
    FROM ledger.accounts a
    JOIN (SELECT h.owner_id, sum(h.amount) AS held FROM ledger.holds h
          WHERE h.status = 'active' AND h.expires_at > clock_timestamp()
          GROUP BY h.owner_id) h ON h.owner_id = a.owner_id
    WHERE h.held > a.balance
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
    WHERE a.last_seq <> coalesce(s.max_seq, 0) OR coalesce(s.n, 0) <> coalesce(s.max_seq, 0);
END
$$;
COMMENT ON FUNCTION ledger.verify() IS $$
The ledger's self-check: one row per discrepancy, no rows when healthy.
Checks that every stored balance equals the sum of its entries and the
last entry's running balance, that no balance is negative, that entries
reference known apps and operations, that an account's active holds do not
exceed its balance, that each account counts its open holds right, that
every transfer has two legs summing to zero, and that each owner's entries
are numbered 1, 2, 3, ... (seq) up to the account's last_seq. The last
entry is the last by seq. Read-only; reads the
whole journal.$$;

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
        SELECT e.app, e.operation, count(*)::bigint,
               coalesce(sum(e.amount) FILTER (WHERE e.amount > 0), 0)::bigint,
               coalesce(-sum(e.amount) FILTER (WHERE e.amount < 0), 0)::bigint,
               count(DISTINCT e.owner_id)::bigint
        FROM ledger.entries e
        WHERE e.app = app_report.app
          AND e.created_at >= app_report.from_time AND e.created_at < app_report.to_time
        GROUP BY e.app, e.operation
        ORDER BY e.operation;
END
$$;
COMMENT ON FUNCTION ledger.app_report(text, timestamptz, timestamptz) IS $$
Per operation of the app's entries created in [from_time, to_time): how
many, the credits issued, the credits consumed (a positive number) and the
distinct owners. LG007 for a NULL or reversed range, LG011 for an unknown
app. Read-only.$$;
