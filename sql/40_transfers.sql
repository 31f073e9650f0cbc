-- Cross-owner work: transfers and reversals. Both lock the accounts they
-- touch in owner_id order (as batches do), so two of them never deadlock.

-- Guarantees: the accounts of the given owners exist (created at zero when
-- p_create) and are locked, in a fixed order.
CREATE OR REPLACE FUNCTION ledger._lock_accounts(p_owners text[], p_create boolean)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF p_create THEN
        -- Only owners without an account: ON CONFLICT over rows that exist
        -- would cost a speculative insertion each (batches name 1,000s). A
        -- scalar subquery per owner is one index probe; NOT EXISTS would let
        -- the planner hash the whole accounts table for a large batch.
        INSERT INTO ledger.accounts AS a (owner_id, balance)
        SELECT DISTINCT o, 0 FROM unnest(p_owners) AS o
        WHERE (SELECT true FROM ledger.accounts x WHERE x.owner_id = o LIMIT 1) IS NULL
        ORDER BY o
        ON CONFLICT ON CONSTRAINT accounts_pkey DO NOTHING;
    END IF;
    PERFORM FROM ledger.accounts a WHERE a.owner_id = ANY (p_owners) ORDER BY a.owner_id FOR UPDATE;
END
$$;

CREATE OR REPLACE FUNCTION ledger._transfer_result(p_out ledger.entries, p_replayed boolean)
RETURNS ledger.transfer_result
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_in ledger.entries;
BEGIN
    SELECT i.* INTO v_in FROM ledger.entries i
    WHERE i.transfer_id = p_out.transfer_id AND i.entry_id <> p_out.entry_id AND i.reverses_entry_id IS NULL;
    RETURN (p_out.transfer_id, p_out.entry_id, v_in.entry_id, -p_out.amount, p_out.balance, v_in.balance,
            p_replayed)::ledger.transfer_result;
END
$$;

CREATE OR REPLACE FUNCTION ledger.transfer(
    from_owner      text,
    to_owner        text,
    amount          numeric,
    app             text,
    idempotency_key text,
    metadata        text DEFAULT '{}')
RETURNS ledger.transfer_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_checked text;
    v_locked  boolean;
    v_found   record;
    v_out_op  ledger.operations;
    v_in_op   ledger.operations;
    v_amount  bigint;
    v_meta    jsonb;
    v_fp      uuid;
    v_prior   ledger.entries;
    v_id      bigint;
    v_out     ledger.entry_result;
    v_in      ledger.entry_result;
BEGIN
    v_checked := ledger._require_id('from_owner', transfer.from_owner);
    v_checked := ledger._require_id('to_owner', transfer.to_owner);
    v_checked := ledger._require_id('idempotency_key', transfer.idempotency_key);
    -- The key's lock, then one query for the app's operations and what the
    -- key already names (as in post_entry).
    v_locked := ledger._lock_key(transfer.app, transfer.idempotency_key);
    SELECT o AS out_op, i AS in_op, k AS prior INTO v_found
    FROM ledger._key_use(transfer.app, transfer.idempotency_key) k
    LEFT JOIN ledger._operation_row(transfer.app, 'TRANSFER_OUT') o ON true
    LEFT JOIN ledger._operation_row(transfer.app, 'TRANSFER_IN') i ON true;
    v_out_op := v_found.out_op;
    v_in_op := v_found.in_op;
    IF v_out_op.operation IS NULL THEN
        PERFORM ledger._require_app(transfer.app);  -- no row: the app is unknown
    END IF;
    IF transfer.from_owner = transfer.to_owner THEN
        RAISE EXCEPTION 'invalid argument: a transfer needs two different owners (% given twice)', transfer.from_owner
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'to_owner', 'reason', 'same as from_owner')::text;
    END IF;
    v_amount := ledger._amount_for(v_out_op, transfer.amount);
    v_meta := ledger._metadata(transfer.metadata);
    v_fp := ledger._fingerprint(jsonb_build_array('transfer', transfer.from_owner, transfer.to_owner,
                                                  transfer.amount, v_meta));

    v_prior := v_found.prior;
    IF v_prior.entry_id IS NOT NULL THEN
        PERFORM ledger._require_same_request(transfer.app, transfer.idempotency_key, v_prior.fingerprint, v_fp);
        RETURN ledger._transfer_result(v_prior, true);
    END IF;

    -- Each leg takes its account's lock as it writes (the receiving account
    -- is created by its credit), so the legs go in owner_id order, the
    -- order ledger._lock_accounts locks in: no deadlock with anything.
    v_id := nextval('ledger.transfer_id_seq');
    IF transfer.from_owner < transfer.to_owner THEN
        v_out := ledger._apply(transfer.from_owner, transfer.app, v_out_op, -v_amount,
                               transfer.idempotency_key, v_fp, v_meta, p_transfer_id => v_id);
    END IF;
    v_in := ledger._apply(transfer.to_owner, transfer.app, v_in_op, v_amount,
                          NULL, NULL, v_meta, p_transfer_id => v_id);
    IF transfer.from_owner > transfer.to_owner THEN
        v_out := ledger._apply(transfer.from_owner, transfer.app, v_out_op, -v_amount,
                               transfer.idempotency_key, v_fp, v_meta, p_transfer_id => v_id);
    END IF;
    RETURN (v_id, v_out.entry_id, v_in.entry_id, v_amount, v_out.balance, v_in.balance, false)::ledger.transfer_result;
END
$$;
COMMENT ON FUNCTION ledger.transfer(text, text, numeric, text, text, text) IS $$
Moves amount from one owner to another in one transaction: a TRANSFER_OUT
entry (carrying the idempotency key) and a TRANSFER_IN entry sharing one
transfer_id. Both accounts are locked in owner_id order, so two transfers
never deadlock. Idempotent by (app, idempotency_key) as post_entry: a retry
returns the first result with replayed = true; the key with another
request is LG005. LG001 when the sender's available credits do not cover
it, LG006 for a bad amount, LG007 for a transfer to oneself or a malformed
argument, LG011 for an unknown app.$$;

CREATE OR REPLACE FUNCTION ledger.transfer(
    metadata        jsonb,
    from_owner      text,
    to_owner        text,
    amount          numeric,
    app             text,
    idempotency_key text)
RETURNS ledger.transfer_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN ledger.transfer(from_owner => transfer.from_owner, to_owner => transfer.to_owner,
                           amount => transfer.amount, app => transfer.app,
                           idempotency_key => transfer.idempotency_key, metadata => transfer.metadata::text);
END
$$;
COMMENT ON FUNCTION ledger.transfer(jsonb, text, text, numeric, text, text) IS $$
transfer for callers that pass metadata as a jsonb value (first, as in
post_entry's jsonb overload); the same guarantees.$$;

CREATE OR REPLACE FUNCTION ledger.reverse_entry(
    entry_id        bigint,
    app             text,
    idempotency_key text,
    reason          text DEFAULT NULL)
RETURNS SETOF ledger.entry_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_orig   ledger.entries;
    v_legs   ledger.entries[];
    v_leg    ledger.entries;
    v_op     ledger.operations;
    v_fp     uuid;
    v_prior  ledger.entries;
    v_meta   jsonb;
    v_first  boolean := true;
    v_result ledger.entry_result;
BEGIN
    IF reverse_entry.entry_id IS NULL THEN
        RAISE EXCEPTION 'invalid argument: entry_id is required'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'entry_id', 'reason', 'required')::text;
    END IF;
    PERFORM ledger._require_app(reverse_entry.app);
    PERFORM ledger._require_id('idempotency_key', reverse_entry.idempotency_key);
    IF length(reverse_entry.reason) > 1000 THEN
        RAISE EXCEPTION 'invalid argument: reason is longer than 1000 characters'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'reason', 'reason', 'too long')::text;
    END IF;
    v_fp := ledger._fingerprint(jsonb_build_array('reverse_entry', reverse_entry.entry_id, reverse_entry.reason));

    v_prior := ledger._claim_key(reverse_entry.app, reverse_entry.idempotency_key);
    IF v_prior.entry_id IS NOT NULL THEN
        PERFORM ledger._require_same_request(reverse_entry.app, reverse_entry.idempotency_key, v_prior.fingerprint, v_fp);
        -- The reversal rows written under this key: the keyed one, and for a
        -- transfer the other leg's reversal.
        RETURN QUERY
            SELECT r.entry_id, r.owner_id, r.app, r.operation, r.amount, r.balance, r.created_at, true
            FROM ledger.entries o
            JOIN ledger.entries r ON r.reverses_entry_id = o.entry_id
            WHERE o.entry_id = v_prior.reverses_entry_id
               OR (o.transfer_id IS NOT NULL
                   AND o.transfer_id = (SELECT x.transfer_id FROM ledger.entries x
                                        WHERE x.entry_id = v_prior.reverses_entry_id))
            ORDER BY o.amount, r.entry_id;
        RETURN;
    END IF;

    SELECT e.* INTO v_orig FROM ledger.entries e WHERE e.entry_id = reverse_entry.entry_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'entry % not found', reverse_entry.entry_id
            USING ERRCODE = 'LG008',
                  DETAIL = json_build_object('entry_id', reverse_entry.entry_id, 'kind', 'entry')::text;
    END IF;
    IF v_orig.app <> reverse_entry.app THEN
        RAISE EXCEPTION 'entry % was written by app %: only that app may reverse it', v_orig.entry_id, v_orig.app
            USING ERRCODE = 'LG003',
                  DETAIL = json_build_object('entry_id', v_orig.entry_id, 'app', reverse_entry.app,
                                             'entry_app', v_orig.app)::text;
    END IF;
    IF v_orig.reverses_entry_id IS NOT NULL THEN
        RAISE EXCEPTION 'invalid argument: entry % is itself a reversal', v_orig.entry_id
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'entry_id', 'reason', 'is a reversal')::text,
                  HINT = 'Post a new entry instead.';
    END IF;

    -- The legs to reverse: the entry, or both legs of its transfer (sending leg first).
    SELECT array_agg(e ORDER BY e.amount, e.entry_id) INTO v_legs
    FROM ledger.entries e
    WHERE e.entry_id = v_orig.entry_id
       OR (v_orig.transfer_id IS NOT NULL AND e.transfer_id = v_orig.transfer_id AND e.reverses_entry_id IS NULL);

    PERFORM ledger._lock_accounts(ARRAY(SELECT (l).owner_id FROM unnest(v_legs) AS l), false);
    -- Under the locks, so a concurrent reversal of the same entry is seen.
    IF EXISTS (SELECT FROM ledger.entries e WHERE e.reverses_entry_id = ANY (ARRAY(SELECT (l).entry_id FROM unnest(v_legs) AS l))) THEN
        RAISE EXCEPTION 'entry % is already reversed', v_orig.entry_id
            USING ERRCODE = 'LG010', DETAIL = json_build_object('entry_id', v_orig.entry_id)::text;
    END IF;

    SELECT o.* INTO v_op FROM ledger.operations o WHERE o.operation = 'REVERSAL';
    FOREACH v_leg IN ARRAY v_legs LOOP
        v_meta := jsonb_strip_nulls(jsonb_build_object('reverses_entry_id', v_leg.entry_id,
                                                       'reason', reverse_entry.reason));
        v_result := ledger._apply(v_leg.owner_id, reverse_entry.app, v_op, -v_leg.amount,
                                  CASE WHEN v_first THEN reverse_entry.idempotency_key END,
                                  CASE WHEN v_first THEN v_fp END,
                                  v_meta, p_reverses => v_leg.entry_id);
        v_first := false;
        RETURN NEXT v_result;
    END LOOP;
    RETURN;
END
$$;
COMMENT ON FUNCTION ledger.reverse_entry(bigint, text, text, text) IS $$
Writes the compensating REVERSAL entry of an entry the calling app wrote
(LG003 otherwise, LG008 for an unknown entry): opposite in sign and linked
to it. For a leg of a transfer both legs are reversed (two rows, the
sending leg first). An entry is reversed once (LG010, decided under the
account locks and backed by a unique index); a reversal is not reversed
(LG007). Reversing a credit already spent is LG001, never a negative
balance. Idempotent by (app, idempotency_key) as post_entry.$$;
