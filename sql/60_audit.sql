-- Audits and reports: read-only, callable by ledger_reader.

CREATE OR REPLACE FUNCTION ledger.verify()
RETURNS SETOF ledger.verify_row
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH sums AS (
        SELECT e.owner_id, sum(e.amount) AS total, count(*) AS n,
               (array_agg(e.balance ORDER BY e.entry_id DESC))[1] AS last_balance
        FROM ledger.entries e
        GROUP BY e.owner_id
    )
    SELECT 'balance_matches_entries', a.owner_id,
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
    FROM ledger.entries e
    WHERE NOT EXISTS (SELECT FROM ledger.apps p WHERE p.app = e.app)
       OR NOT EXISTS (SELECT FROM ledger.operations o WHERE o.operation = e.operation)
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
$$;
COMMENT ON FUNCTION ledger.verify() IS $$
The ledger's self-check: one row per discrepancy, no rows when healthy.
Checks that every stored balance equals the sum of its entries and the
last entry's running balance, that no balance is negative, that entries
reference known apps and operations, that an account's active holds do not
exceed its balance, that each account counts its open holds right, and
that every transfer has two legs summing to zero. Read-only; reads the
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
