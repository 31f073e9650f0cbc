-- Cross-owner work: transfers and reversals. Both lock the accounts they
-- touch in owner_id order (as batches do), so two of them never deadlock.

-- Guarantees: the accounts of the given owners exist (created at zero when
-- p_create) and are locked, one owner per statement, in owner_id order (as
-- every writer that touches several owners does): no deadlock between them.
-- Returns the owners in that order with their balance and last seq under the
-- lock (an owner without an account, when not p_create, is left out).
DROP FUNCTION IF EXISTS ledger._lock_accounts(text[], boolean);
CREATE FUNCTION ledger._lock_accounts(p_owners text[], p_create boolean)
RETURNS TABLE (owner_id text, balance bigint, last_seq bigint, next_expiry timestamptz)
LANGUAGE plpgsql
AS $$
DECLARE
    v_owner   text;
    v_account record;
BEGIN
    FOR v_owner IN SELECT DISTINCT o FROM unnest(p_owners) AS o ORDER BY o LOOP
        v_account := ledger._lock_account(v_owner, p_create);
        IF v_account.balance IS NOT NULL THEN
            owner_id := v_owner;
            balance := v_account.balance;
            last_seq := v_account.last_seq;
            next_expiry := v_account.next_expiry;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

-- The result of a transfer from its sending leg: the receiving leg is the
-- other owner's leg of the same transfer (one leg per owner, a unique index).
DROP FUNCTION IF EXISTS ledger._transfer_result(ledger.entries, boolean);
CREATE OR REPLACE FUNCTION ledger._transfer_result(
    p_transfer_id bigint, p_out_entry_id bigint, p_out_amount bigint, p_out_balance bigint,
    p_to_owner text, p_replayed boolean)
RETURNS ledger.transfer_result
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_in_id      bigint;
    v_in_balance bigint;
BEGIN
    SELECT i.entry_id, i.balance INTO v_in_id, v_in_balance FROM ledger.entries i
    WHERE i.transfer_id = p_transfer_id AND i.owner_id = p_to_owner;
    RETURN (p_transfer_id, p_out_entry_id, v_in_id, -p_out_amount, p_out_balance, v_in_balance,
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
    v_out_op  ledger.operations;
    v_in_op   ledger.operations;
    v_amount  bigint;
    v_meta    jsonb;
    v_fp      uuid;
    v_prior   ledger.entries;
    v_id      bigint;
    v_out     ledger.entry_result;
    v_in      ledger.entry_result;
    v_seq     bigint;
BEGIN
    v_checked := ledger._require_id('from_owner', transfer.from_owner);
    v_checked := ledger._require_id('to_owner', transfer.to_owner);
    v_checked := ledger._require_id('idempotency_key', transfer.idempotency_key);
    SELECT o.* INTO v_out_op FROM ledger.operations o
    WHERE o.operation = 'TRANSFER_OUT' AND EXISTS (SELECT 1 FROM ledger.apps a WHERE a.app = transfer.app);
    IF NOT FOUND THEN
        PERFORM ledger._require_app(transfer.app);  -- no row: the app is unknown
    END IF;
    SELECT o.* INTO v_in_op FROM ledger.operations o WHERE o.operation = 'TRANSFER_IN';
    IF transfer.from_owner = transfer.to_owner THEN
        RAISE EXCEPTION 'invalid argument: a transfer needs two different owners (% given twice)', transfer.from_owner
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'to_owner', 'reason', 'same as from_owner')::text;
    END IF;
    v_amount := ledger._amount_for(v_out_op.operation, v_out_op.default_amount, v_out_op.min_amount,
                                   v_out_op.max_amount, v_out_op.caller_sets_amount, transfer.amount);
    v_meta := ledger._metadata(transfer.metadata);
    v_fp := ledger._fingerprint(jsonb_build_array('transfer', transfer.from_owner, transfer.to_owner,
                                                  transfer.amount, v_meta));

    -- The accounts are locked one at a time in owner_id order: a receiver
    -- that sorts first is locked (made if new) before anything else; the
    -- sending leg's ledger._apply then locks the sender and looks at the key,
    -- which belongs to the sender, under that lock: a replay (or LG005)
    -- before anything is written. The receiving leg's credit locks the
    -- receiver when it sorts last.
    IF transfer.to_owner < transfer.from_owner THEN
        PERFORM ledger._lock_account(transfer.to_owner, true);
    END IF;
    v_id := nextval('ledger.transfer_id_seq');
    v_out := ledger._apply(transfer.from_owner, transfer.app, v_out_op.operation, NULL, -v_amount,
                           transfer.idempotency_key, v_fp, v_meta, p_transfer_id => v_id);
    IF v_out.replayed THEN
        SELECT e.* INTO v_prior FROM ledger.entries e
        WHERE e.owner_id = transfer.from_owner AND e.entry_id = v_out.entry_id;
        RETURN ledger._transfer_result(v_prior.transfer_id, v_prior.entry_id, v_prior.amount, v_prior.balance,
                                       transfer.to_owner, true);
    END IF;
    -- The receiver's grants mirror the sender's grants the credits came
    -- from: their expiry and priority travel with them.
    v_in := ledger._apply(transfer.to_owner, transfer.app, v_in_op.operation, NULL, v_amount,
                          NULL, NULL, v_meta, p_transfer_id => v_id,
                          p_parts => ledger._transfer_parts(transfer.from_owner, v_out.entry_id));
    -- transfer.posted, the sender's (the receiver has its TRANSFER_IN entry.posted).
    SELECT e.seq INTO v_seq FROM ledger.entries e
    WHERE e.owner_id = transfer.from_owner AND e.entry_id = v_out.entry_id;
    PERFORM ledger._event(transfer.from_owner, 'transfer.posted', v_seq, transfer.app,
                          jsonb_build_object('transfer_id', v_id, 'from_owner', transfer.from_owner,
                                             'to_owner', transfer.to_owner, 'amount', v_amount,
                                             'from_entry_id', v_out.entry_id, 'to_entry_id', v_in.entry_id,
                                             'idempotency_key', transfer.idempotency_key,
                                             'metadata', v_meta),
                          v_out.created_at, clock_timestamp(), p_entry_id => v_out.entry_id);
    RETURN (v_id, v_out.entry_id, v_in.entry_id, v_amount, v_out.balance, v_in.balance, false)::ledger.transfer_result;
END
$$;
COMMENT ON FUNCTION ledger.transfer(text, text, numeric, text, text, text) IS $$
Moves amount from one owner to another in one transaction: a TRANSFER_OUT
entry (carrying the idempotency key) and a TRANSFER_IN entry sharing one
transfer_id. Both accounts are locked one at a time in owner_id order, so
two transfers never deadlock. The key belongs to the sender: idempotent by
(from_owner, app, idempotency_key) as post_entry (the receiving leg carries
no key); a retry returns the first result with replayed = true; the key
with another request is LG005. LG001 when the sender's available credits
do not cover it, LG006 for a bad amount, LG007 for a transfer to oneself
or a malformed argument, LG011 for an unknown app.$$;

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

DROP FUNCTION IF EXISTS ledger.reverse_entry(bigint, text, text, text);
CREATE OR REPLACE FUNCTION ledger.reverse_entry(
    entry_id        bigint,
    app             text,
    idempotency_key text,
    reason          text DEFAULT NULL,
    owner_id        text DEFAULT NULL)
RETURNS SETOF ledger.entry_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_orig      ledger.entries;
    v_owners    text[];
    v_ids       bigint[];
    v_amounts   bigint[];
    v_key_owner text;
    v_op        text;
    v_fp        uuid;
    v_prior     ledger.entries;
    v_meta      jsonb;
    v_result    ledger.entry_result;
    v_seq       bigint;
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

    -- The entry: straight from its owner's rows when owner_id is given, else by its id.
    IF reverse_entry.owner_id IS NOT NULL THEN
        PERFORM ledger._require_id('owner_id', reverse_entry.owner_id);
        SELECT e.* INTO v_orig FROM ledger.entries e
        WHERE e.owner_id = reverse_entry.owner_id AND e.entry_id = reverse_entry.entry_id;
    ELSE
        SELECT e.* INTO v_orig FROM ledger.entries e WHERE e.entry_id = reverse_entry.entry_id;
    END IF;
    IF NOT FOUND THEN
        PERFORM ledger._entry_not_found(reverse_entry.entry_id, reverse_entry.owner_id);
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
    IF v_orig.transfer_id IS NULL THEN
        v_owners := ARRAY[v_orig.owner_id];
        v_ids := ARRAY[v_orig.entry_id];
        v_amounts := ARRAY[v_orig.amount];
    ELSE
        SELECT array_agg(e.owner_id ORDER BY e.amount, e.owner_id), array_agg(e.entry_id ORDER BY e.amount, e.owner_id),
               array_agg(e.amount ORDER BY e.amount, e.owner_id)
        INTO v_owners, v_ids, v_amounts
        FROM ledger.entries e WHERE e.transfer_id = v_orig.transfer_id;
    END IF;
    -- The key belongs to the owner of the entry; for a transfer, the sender.
    v_key_owner := v_owners[1];

    PERFORM ledger._lock_accounts(v_owners, false);
    -- Under the locks: the key, then whether it was reversed already.
    v_prior := ledger._key_entry(v_key_owner, reverse_entry.app, reverse_entry.idempotency_key);
    IF v_prior.entry_id IS NOT NULL THEN
        PERFORM ledger._require_same_request(reverse_entry.app, reverse_entry.idempotency_key, v_prior.fingerprint, v_fp);
        FOR v_i IN 1 .. array_length(v_ids, 1) LOOP
            SELECT r.entry_id, r.owner_id, r.app, r.operation, r.amount, r.balance, r.created_at, true
            INTO v_result
            FROM ledger.entries r
            WHERE r.owner_id = v_owners[v_i] AND r.reverses_entry_id = v_ids[v_i];
            RETURN NEXT v_result;
        END LOOP;
        RETURN;
    END IF;
    FOR v_i IN 1 .. array_length(v_ids, 1) LOOP
        PERFORM 1 FROM ledger.entries e WHERE e.owner_id = v_owners[v_i] AND e.reverses_entry_id = v_ids[v_i];
        IF FOUND THEN
            RAISE EXCEPTION 'entry % is already reversed', v_orig.entry_id
                USING ERRCODE = 'LG010', DETAIL = json_build_object('entry_id', v_orig.entry_id)::text;
        END IF;
    END LOOP;

    SELECT o.operation INTO v_op FROM ledger.operations o WHERE o.operation = 'REVERSAL';
    FOR v_i IN 1 .. array_length(v_ids, 1) LOOP
        v_meta := jsonb_strip_nulls(jsonb_build_object('reverses_entry_id', v_ids[v_i],
                                                       'reason', reverse_entry.reason));
        v_result := ledger._apply(v_owners[v_i], reverse_entry.app, v_op, NULL, -v_amounts[v_i],
                                  CASE WHEN v_i = 1 THEN reverse_entry.idempotency_key END,
                                  CASE WHEN v_i = 1 THEN v_fp END,
                                  v_meta, p_reverses => v_ids[v_i]);
        SELECT e.seq INTO v_seq FROM ledger.entries e
        WHERE e.owner_id = v_owners[v_i] AND e.entry_id = v_result.entry_id;
        PERFORM ledger._event(v_owners[v_i], 'entry.reversed', v_seq, reverse_entry.app,
                              jsonb_strip_nulls(jsonb_build_object(
                                  'entry_id', v_ids[v_i], 'owner_id', v_owners[v_i],
                                  'reversal_entry_id', v_result.entry_id, 'amount', v_result.amount,
                                  'reason', reverse_entry.reason,
                                  'idempotency_key', CASE WHEN v_i = 1 THEN reverse_entry.idempotency_key END)),
                              v_result.created_at, v_result.created_at, p_entry_id => v_ids[v_i]);
        RETURN NEXT v_result;
    END LOOP;
    RETURN;
END
$$;
COMMENT ON FUNCTION ledger.reverse_entry(bigint, text, text, text, text) IS $$
Writes the compensating REVERSAL entry of an entry the calling app wrote
(LG003 otherwise, LG008 for an unknown entry): opposite in sign and linked
to it. For a leg of a transfer both legs are reversed (two rows, the
sending leg first). An entry is reversed once (LG010, decided under the
account locks and backed by a unique index); a reversal is not reversed
(LG007). Reversing a credit already spent is LG001, never a negative
balance. The key belongs to the owner of the entry (for a transfer, the
original sender): idempotent by (that owner, app, idempotency_key) as
post_entry. With owner_id the call goes straight to that owner's entry
(LG008 for an entry of another owner); without, the entry is found by its
id first.$$;
