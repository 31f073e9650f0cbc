-- Credit grants: every credit is a grant (a lot of credits with a priority
-- and maybe an expiry); every debit spends grants in a fixed order and
-- records what it took (ledger.grant_spending). The helpers here are called
-- by ledger._apply (sql/20_entries.sql), the one write path, under the
-- owner's account row lock; the public functions follow.
--
-- The invariants (ledger.verify() checks them):
--   * a grant's remaining = its amount + the sum of its spending rows, never
--     below 0 (what was spent, expired, voided or taken back is negative,
--     what a reversal gave back positive);
--   * an owner's stored balance = the sum of what remains of its active
--     grants (a grant past expires_at counts at what it had left until its
--     EXPIRE entry is written);
--   * every entry after the owner's grants_since_seq: the grants it made
--     plus its spending rows add up to its amount.
--
-- Spending order: priority (lower first), then the soonest expires_at
-- (never-expiring last), then the oldest (the seq of the entry that made
-- the grant), then grant_id. A grant's credits are usable strictly before
-- expires_at.

-- Guarantees: an entry of a system operation (EXPIRE or VOID) that removes
-- p_amount credits of one grant, with its spending row: the balance goes
-- down by p_amount, the owner's next seq, created_at p_at. The grant row
-- itself is the caller's to update. Callers hold the owner's lock.
CREATE OR REPLACE FUNCTION ledger._grant_exit(
    p_owner_id text, p_grant_id bigint, p_app text, p_kind text, p_amount bigint,
    p_key text, p_fingerprint uuid, p_metadata jsonb, p_at timestamptz)
RETURNS ledger.entry_result
LANGUAGE plpgsql
AS $$
DECLARE
    v_writer text := ledger._writer();
    v_result ledger.entry_result;
    v_seq    bigint;
BEGIN
    WITH a AS (
        UPDATE ledger.accounts a
        SET balance = a.balance - p_amount, last_seq = a.last_seq + 1, updated_at = p_at
        WHERE a.owner_id = p_owner_id
        RETURNING a.balance, a.last_seq)
    INSERT INTO ledger.entries AS e
        (owner_id, seq, app, operation, amount, balance, idempotency_key, fingerprint, metadata,
         created_at, created_by)
    SELECT p_owner_id, a.last_seq, p_app, p_kind, -p_amount, a.balance, p_key, p_fingerprint, p_metadata,
           p_at, v_writer
    FROM a
    RETURNING e.entry_id, e.owner_id, e.app, e.operation, e.amount, e.balance, e.created_at, false, e.seq
    INTO v_result.entry_id, v_result.owner_id, v_result.app, v_result.operation, v_result.amount,
         v_result.balance, v_result.created_at, v_result.replayed, v_seq;
    INSERT INTO ledger.grant_spending (owner_id, entry_id, grant_id, seq, amount)
    VALUES (p_owner_id, v_result.entry_id, p_grant_id, v_seq, -p_amount);
    PERFORM ledger._event(p_owner_id, 'entry.posted', v_seq, p_app,
                          ledger._entry_payload(v_result.entry_id, p_owner_id, p_app, p_kind, -p_amount,
                                                v_result.balance, v_seq, p_at, p_key, p_metadata, NULL, NULL,
                                                NULL),
                          p_at, p_at, p_entry_id => v_result.entry_id, p_grant_id => p_grant_id);
    RETURN v_result;
END
$$;

-- Guarantees: records what the clock changed for the owner by p_at: the
-- EXPIRE entry of every grant that still had credits at its expires_at <=
-- p_at (oldest expiry first; the grant reads expired, closed_at = the
-- instant it expired; a grant.expired event), and every active hold whose
-- expires_at <= p_at as expired (a hold.expired event; open_holds counted
-- down); then sets the account's next_expiry to the soonest expiry still
-- ahead (of a grant with credits or of an active hold), and returns the
-- balance after. Callers hold the owner's lock and read p_at under it.
CREATE OR REPLACE FUNCTION ledger._expire_due(p_owner_id text, p_at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_grant   record;
    v_hold    record;
    v_holds   integer := 0;
    v_entry   ledger.entry_result;
    v_seq     bigint;
    v_next    timestamptz;
    v_next_h  timestamptz;
    v_balance bigint;
BEGIN
    FOR v_grant IN
        SELECT g.grant_id, g.app, g.operation, g.amount, g.remaining, g.expires_at FROM ledger.grants g
        WHERE g.owner_id = p_owner_id AND g.status = 'active' AND g.remaining > 0 AND g.expires_at <= p_at
        ORDER BY g.expires_at, g.seq, g.grant_id
    LOOP
        v_entry := ledger._grant_exit(p_owner_id, v_grant.grant_id, v_grant.app, 'EXPIRE', v_grant.remaining,
                                      NULL, NULL,
                                      jsonb_build_object('grant_id', v_grant.grant_id,
                                                         'expires_at', v_grant.expires_at),
                                      p_at);
        UPDATE ledger.grants g SET remaining = 0, status = 'expired', closed_at = v_grant.expires_at
        WHERE g.owner_id = p_owner_id AND g.grant_id = v_grant.grant_id;
        SELECT a.last_seq INTO v_seq FROM ledger.accounts a WHERE a.owner_id = p_owner_id;
        PERFORM ledger._event(p_owner_id, 'grant.expired', v_seq, v_grant.app,
                              jsonb_build_object('grant_id', v_grant.grant_id, 'owner_id', p_owner_id,
                                                 'app', v_grant.app, 'operation', v_grant.operation,
                                                 'amount', v_grant.amount, 'expired', v_grant.remaining,
                                                 'expires_at', v_grant.expires_at,
                                                 'entry_id', v_entry.entry_id),
                              v_grant.expires_at, p_at, p_entry_id => v_entry.entry_id,
                              p_grant_id => v_grant.grant_id);
    END LOOP;
    FOR v_hold IN
        SELECT h.hold_id, h.app, h.operation, h.amount, h.expires_at FROM ledger.holds h
        WHERE h.owner_id = p_owner_id AND h.status = 'active' AND h.expires_at <= p_at
        ORDER BY h.expires_at, h.hold_id
    LOOP
        UPDATE ledger.holds h SET status = 'expired', closed_at = v_hold.expires_at
        WHERE h.owner_id = p_owner_id AND h.hold_id = v_hold.hold_id;
        v_holds := v_holds + 1;
        SELECT a.last_seq INTO v_seq FROM ledger.accounts a WHERE a.owner_id = p_owner_id;
        PERFORM ledger._event(p_owner_id, 'hold.expired', v_seq, v_hold.app,
                              ledger._hold_payload(v_hold.hold_id, p_owner_id, v_hold.app, v_hold.operation,
                                                   v_hold.amount, 'expired', v_hold.expires_at, NULL),
                              v_hold.expires_at, p_at, p_hold_id => v_hold.hold_id);
    END LOOP;
    SELECT min(g.expires_at) INTO v_next FROM ledger.grants g
    WHERE g.owner_id = p_owner_id AND g.status = 'active' AND g.remaining > 0 AND g.expires_at IS NOT NULL;
    SELECT min(h.expires_at) INTO v_next_h FROM ledger.holds h
    WHERE h.owner_id = p_owner_id AND h.status = 'active';
    UPDATE ledger.accounts a
    SET next_expiry = CASE WHEN v_next IS NULL THEN v_next_h
                           WHEN v_next_h IS NULL THEN v_next ELSE least(v_next, v_next_h) END,
        open_holds = a.open_holds - v_holds
    WHERE a.owner_id = p_owner_id
    RETURNING a.balance INTO v_balance;
    RETURN v_balance;
END
$$;

-- Guarantees: a new grant of p_amount made by entry p_entry_id (seq p_seq),
-- and the account's next_expiry moved up to its expiry. A grant whose
-- expiry is already at or before p_at (a transfer's receiving leg that read
-- the clock after its source grant expired) expires at once, with its
-- EXPIRE entry. Callers hold the owner's lock.
CREATE OR REPLACE FUNCTION ledger._grant(
    p_owner_id text, p_entry_id bigint, p_seq bigint, p_app text, p_operation text, p_amount bigint,
    p_priority integer, p_expires_at timestamptz, p_at timestamptz,
    p_source_owner text DEFAULT NULL, p_source_grant bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO ledger.grants AS g
        (owner_id, entry_id, seq, app, operation, amount, remaining, priority, expires_at, created_at,
         source_owner_id, source_grant_id)
    VALUES (p_owner_id, p_entry_id, p_seq, p_app, p_operation, p_amount, p_amount, coalesce(p_priority, 50),
            p_expires_at, p_at, p_source_owner, p_source_grant)
    RETURNING g.grant_id INTO v_id;
    IF p_expires_at IS NOT NULL THEN
        IF p_expires_at <= p_at THEN
            PERFORM ledger._grant_exit(p_owner_id, v_id, p_app, 'EXPIRE', p_amount, NULL, NULL,
                                       jsonb_build_object('grant_id', v_id, 'expires_at', p_expires_at), p_at);
            UPDATE ledger.grants g SET remaining = 0, status = 'expired', closed_at = p_expires_at
            WHERE g.owner_id = p_owner_id AND g.grant_id = v_id;
        ELSE
            UPDATE ledger.accounts a SET next_expiry = p_expires_at
            WHERE a.owner_id = p_owner_id AND (a.next_expiry IS NULL OR a.next_expiry > p_expires_at);
        END IF;
    END IF;
    RETURN v_id;
END
$$;

-- Guarantees: p_take credits taken from grant p_grant_id (which has at
-- least that many left) for entry p_entry_id, recorded as its spending row;
-- the debit that empties the grant closes it as spent (at p_at).
CREATE OR REPLACE FUNCTION ledger._take(
    p_owner_id text, p_entry_id bigint, p_seq bigint, p_grant_id bigint, p_take bigint, p_at timestamptz)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    WITH u AS (
        UPDATE ledger.grants g
        SET remaining = g.remaining - p_take,
            status = CASE WHEN g.remaining = p_take THEN 'spent' ELSE 'active' END,
            closed_at = CASE WHEN g.remaining = p_take THEN p_at END
        WHERE g.owner_id = p_owner_id AND g.grant_id = p_grant_id
        RETURNING g.grant_id)
    INSERT INTO ledger.grant_spending (owner_id, entry_id, grant_id, seq, amount)
    SELECT p_owner_id, p_entry_id, u.grant_id, p_seq, -p_take FROM u;
END
$$;

-- Guarantees: p_amount credits taken from the owner's usable grants in
-- spending order, each take recorded as a spending row of entry p_entry_id.
-- Only grants made before that entry (seq < p_seq) are spent, so a batch
-- item never spends a grant a later item makes. Callers hold the owner's
-- lock, have expired what was due at p_at and checked the balance: the
-- grants always cover it (the stored balance is the sum of what remains).
CREATE OR REPLACE FUNCTION ledger._spend(
    p_owner_id text, p_entry_id bigint, p_seq bigint, p_amount bigint, p_at timestamptz)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_left  bigint := p_amount;
    v_take  bigint;
    v_grant record;
BEGIN
    -- Mostly the first active grant in spending order covers the debit: one
    -- probe of the spending-order index and one statement, without the
    -- cursor the loop below opens. The grant found is used only if it is
    -- also first among those usable here (made before this entry, not past
    -- its expiry), else the loop decides: the probe names the owner alone
    -- (with the seq and the clock in it as well, the plan cache planned it
    -- afresh at every call, three to five times the cost).
    SELECT g.grant_id, g.remaining, g.seq, g.expires_at INTO v_grant FROM ledger.grants g
    WHERE g.owner_id = p_owner_id AND g.status = 'active'
    ORDER BY g.priority, g.expires_at, g.seq, g.grant_id
    LIMIT 1;
    IF v_grant.remaining >= p_amount AND v_grant.seq < p_seq
       AND (v_grant.expires_at IS NULL OR v_grant.expires_at > p_at) THEN
        PERFORM ledger._take(p_owner_id, p_entry_id, p_seq, v_grant.grant_id, p_amount, p_at);
        RETURN;
    END IF;
    FOR v_grant IN
        SELECT g.grant_id, g.remaining FROM ledger.grants g
        WHERE g.owner_id = p_owner_id AND g.status = 'active' AND g.remaining > 0
          AND (g.expires_at IS NULL OR g.expires_at > p_at) AND g.seq < p_seq
        ORDER BY g.priority, g.expires_at, g.seq, g.grant_id
    LOOP
        v_take := least(v_grant.remaining, v_left);
        PERFORM ledger._take(p_owner_id, p_entry_id, p_seq, v_grant.grant_id, v_take, p_at);
        v_left := v_left - v_take;
        EXIT WHEN v_left = 0;
    END LOOP;
    IF v_left > 0 THEN
        RAISE EXCEPTION 'ledger invariant broken: the grants of owner % do not cover a debit of % (% short)',
                p_owner_id, p_amount, v_left
            USING ERRCODE = 'XX000', HINT = 'Run ledger.verify().';
    END IF;
END
$$;

-- Guarantees: a reversal (entry p_entry_id) of debit p_reverses gives its
-- credits back to the grants the debit spent. Credits given back to a grant
-- that has expired or was voided since (or is past its expiry) leave again
-- at once: an EXPIRE (VOID) entry right after the reversal, in the same
-- transaction. A debit without spending rows (written before grants
-- existed) gives its credits back as a new never-expiring grant. Callers
-- hold the owner's lock.
CREATE OR REPLACE FUNCTION ledger._give_back(
    p_owner_id text, p_entry_id bigint, p_seq bigint, p_reverses bigint, p_app text, p_amount bigint,
    p_at timestamptz)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_back  record;
    v_found boolean := false;
BEGIN
    FOR v_back IN
        SELECT s.grant_id, -s.amount AS amount, g.app, g.status, g.expires_at
        FROM ledger.grant_spending s
        JOIN ledger.grants g ON g.owner_id = s.owner_id AND g.grant_id = s.grant_id
        WHERE s.owner_id = p_owner_id AND s.entry_id = p_reverses AND s.amount < 0
        ORDER BY s.grant_id
    LOOP
        v_found := true;
        INSERT INTO ledger.grant_spending (owner_id, entry_id, grant_id, seq, amount)
        VALUES (p_owner_id, p_entry_id, v_back.grant_id, p_seq, v_back.amount);
        IF v_back.status IN ('active', 'spent') AND (v_back.expires_at IS NULL OR v_back.expires_at > p_at) THEN
            -- A spent grant that gets credits back is active again.
            UPDATE ledger.grants g SET remaining = g.remaining + v_back.amount, status = 'active', closed_at = NULL
            WHERE g.owner_id = p_owner_id AND g.grant_id = v_back.grant_id;
            IF v_back.expires_at IS NOT NULL THEN
                UPDATE ledger.accounts a SET next_expiry = v_back.expires_at
                WHERE a.owner_id = p_owner_id AND (a.next_expiry IS NULL OR a.next_expiry > v_back.expires_at);
            END IF;
        ELSE
            -- Closed (or past its expiry with nothing left): the credits come
            -- back and leave again; the grant's remaining stays 0.
            PERFORM ledger._grant_exit(p_owner_id, v_back.grant_id, v_back.app,
                                       CASE v_back.status WHEN 'voided' THEN 'VOID' ELSE 'EXPIRE' END,
                                       v_back.amount, NULL, NULL,
                                       jsonb_build_object('grant_id', v_back.grant_id,
                                                          'given_back_by', p_entry_id), p_at);
            IF v_back.status IN ('active', 'spent') THEN
                UPDATE ledger.grants g SET status = 'expired', closed_at = v_back.expires_at
                WHERE g.owner_id = p_owner_id AND g.grant_id = v_back.grant_id;
            END IF;
        END IF;
    END LOOP;
    IF NOT v_found THEN
        PERFORM ledger._grant(p_owner_id, p_entry_id, p_seq, p_app, 'REVERSAL', p_amount, 50, NULL, p_at);
    END IF;
END
$$;

-- Guarantees: a reversal (entry p_entry_id) of credit p_reverses takes back
-- the grants that credit made, whole: only while none of their credits was
-- spent, expired or voided (else LG001, naming what is left; void_grant
-- removes what is left of a grant). The grants read voided afterwards. A
-- credit without grants (written before grants existed) is taken in
-- spending order. Callers hold the owner's lock.
CREATE OR REPLACE FUNCTION ledger._take_back(
    p_owner_id text, p_entry_id bigint, p_seq bigint, p_reverses bigint, p_amount bigint, p_at timestamptz)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_usable bigint;
    v_count  integer;
    v_grant  record;
BEGIN
    SELECT coalesce(sum(CASE WHEN g.status = 'active' AND (g.expires_at IS NULL OR g.expires_at > p_at)
                             THEN g.remaining ELSE 0 END), 0),
           count(*)
    INTO v_usable, v_count
    FROM ledger.grants g WHERE g.owner_id = p_owner_id AND g.entry_id = p_reverses;
    IF v_count = 0 THEN
        PERFORM ledger._spend(p_owner_id, p_entry_id, p_seq, p_amount, p_at);
        RETURN;
    END IF;
    IF v_usable < p_amount THEN
        RAISE EXCEPTION 'insufficient credits: entry % of owner % cannot be reversed, % of its % credits are left',
                p_reverses, p_owner_id, v_usable, p_amount
            USING ERRCODE = 'LG001',
                  DETAIL = json_build_object('owner_id', p_owner_id, 'needed', p_amount, 'available', v_usable,
                                             'entry_id', p_reverses)::text,
                  HINT = 'Credits of this entry were spent, expired or voided; ledger.void_grant() removes what '
                         'is left of its grant.';
    END IF;
    INSERT INTO ledger.grant_spending (owner_id, entry_id, grant_id, seq, amount)
    SELECT p_owner_id, p_entry_id, g.grant_id, p_seq, -g.remaining
    FROM ledger.grants g WHERE g.owner_id = p_owner_id AND g.entry_id = p_reverses;
    UPDATE ledger.grants g SET remaining = 0, status = 'voided', closed_at = p_at
    WHERE g.owner_id = p_owner_id AND g.entry_id = p_reverses;
    FOR v_grant IN
        SELECT g.grant_id, g.app, g.operation, g.amount FROM ledger.grants g
        WHERE g.owner_id = p_owner_id AND g.entry_id = p_reverses
    LOOP
        PERFORM ledger._event(p_owner_id, 'grant.voided', p_seq, v_grant.app,
                              jsonb_build_object('grant_id', v_grant.grant_id, 'owner_id', p_owner_id,
                                                 'app', v_grant.app, 'operation', v_grant.operation,
                                                 'amount', v_grant.amount, 'voided', v_grant.amount,
                                                 'entry_id', p_entry_id, 'reversal', true),
                              p_at, p_at, p_entry_id => p_entry_id, p_grant_id => v_grant.grant_id);
    END LOOP;
END
$$;

-- Guarantees: the grant rows of one new entry, as ledger._apply decides
-- them: a credit makes a grant (or, for a transfer's receiving leg, one per
-- part of p_parts, mirroring the sender's grants), a reversal gives back or
-- takes back, a debit spends. Callers hold the owner's lock.
CREATE OR REPLACE FUNCTION ledger._grant_rows(
    p_owner_id text, p_entry_id bigint, p_seq bigint, p_app text, p_operation text, p_amount bigint,
    p_reverses bigint, p_priority integer, p_expires_at timestamptz, p_parts jsonb, p_at timestamptz)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_part jsonb;
BEGIN
    IF p_reverses IS NOT NULL THEN
        IF p_amount > 0 THEN
            PERFORM ledger._give_back(p_owner_id, p_entry_id, p_seq, p_reverses, p_app, p_amount, p_at);
        ELSE
            PERFORM ledger._take_back(p_owner_id, p_entry_id, p_seq, p_reverses, -p_amount, p_at);
        END IF;
    ELSIF p_amount < 0 THEN
        PERFORM ledger._spend(p_owner_id, p_entry_id, p_seq, -p_amount, p_at);
    ELSIF p_parts IS NOT NULL THEN
        FOR v_part IN SELECT x FROM jsonb_array_elements(p_parts) AS x LOOP
            PERFORM ledger._grant(p_owner_id, p_entry_id, p_seq, p_app, p_operation,
                                  (v_part ->> 'amount')::bigint, (v_part ->> 'priority')::integer,
                                  (v_part ->> 'expires_at')::timestamptz, p_at,
                                  v_part ->> 'source_owner_id', (v_part ->> 'source_grant_id')::bigint);
        END LOOP;
    ELSE
        PERFORM ledger._grant(p_owner_id, p_entry_id, p_seq, p_app, p_operation, p_amount, p_priority,
                              p_expires_at, p_at);
    END IF;
END
$$;

-- Guarantees: what a transfer's receiving leg makes: the sender's grants
-- that its sending leg (entry p_out_entry_id) spent, grouped by expiry and
-- priority, as parts for ledger._grant_rows. One owner per statement.
CREATE OR REPLACE FUNCTION ledger._transfer_parts(p_from_owner text, p_out_entry_id bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_parts jsonb;
BEGIN
    SELECT jsonb_agg(jsonb_build_object('amount', p.amount, 'priority', p.priority, 'expires_at', p.expires_at,
                                        'source_owner_id', p_from_owner,
                                        'source_grant_id', CASE WHEN p.n = 1 THEN p.first_grant END)
                     ORDER BY p.priority, p.expires_at)
    INTO v_parts
    FROM (SELECT g.priority, g.expires_at, -sum(s.amount) AS amount, count(*) AS n, min(g.grant_id) AS first_grant
          FROM ledger.grant_spending s
          JOIN ledger.grants g ON g.owner_id = s.owner_id AND g.grant_id = s.grant_id
          WHERE s.owner_id = p_from_owner AND s.entry_id = p_out_entry_id
          GROUP BY g.priority, g.expires_at) p;
    RETURN v_parts;
END
$$;

-- Guarantees: raises LG008 for a grant that is not there (of that owner,
-- when one is named).
CREATE OR REPLACE FUNCTION ledger._grant_not_found(p_grant_id bigint, p_owner_id text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_owner_id IS NULL THEN
        RAISE EXCEPTION 'grant % not found', p_grant_id
            USING ERRCODE = 'LG008', DETAIL = json_build_object('grant_id', p_grant_id, 'kind', 'grant')::text;
    END IF;
    RAISE EXCEPTION 'grant % of owner % not found', p_grant_id, p_owner_id
        USING ERRCODE = 'LG008',
              DETAIL = json_build_object('grant_id', p_grant_id, 'owner_id', p_owner_id, 'kind', 'grant')::text;
END
$$;

-- The status a reader sees: active (credits left, before expiry), spent
-- (nothing left), expired (its expiry came with credits left, the EXPIRE
-- entry written or not) or voided.
CREATE OR REPLACE FUNCTION ledger._grant_status(
    p_status text, p_remaining bigint, p_expires_at timestamptz, p_at timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN p_status <> 'active' THEN p_status
                WHEN p_remaining = 0 THEN 'spent'
                WHEN p_expires_at <= p_at THEN 'expired'
                ELSE 'active' END
$$;

-- grant_credits as it runs on the owner's shard; ledger.grant_credits
-- (below) is the entry point. As ledger_shard.post_entry
-- (sql/20_entries.sql): on Citus distributed by owner_id and run whole on
-- the owner's worker.
CREATE OR REPLACE FUNCTION ledger_shard.grant_credits(
    owner_id        text,
    app             text,
    operation       text,
    idempotency_key text,
    amount          numeric,
    expires_at      timestamptz,
    priority        integer,
    metadata        text,
    created_by      text)
RETURNS ledger.entry_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_op     ledger.operations;
    v_amount bigint;
    v_meta   jsonb;
    v_fp     uuid;
    v_now    timestamptz := clock_timestamp();
BEGIN
    PERFORM set_config('ledger.writer', grant_credits.created_by, true);  -- ledger._writer()
    PERFORM ledger._require_id('owner_id', grant_credits.owner_id);
    PERFORM ledger._require_id('idempotency_key', grant_credits.idempotency_key);
    v_op := ledger._operation_for(grant_credits.app, grant_credits.operation);
    IF v_op.direction IS DISTINCT FROM 'credit' THEN
        RAISE EXCEPTION 'invalid argument: % is a debit operation; grants are credits', grant_credits.operation
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'operation', 'reason', 'not a credit')::text;
    END IF;
    v_amount := ledger._amount_for(v_op.operation, v_op.default_amount, v_op.min_amount, v_op.max_amount,
                                   v_op.caller_sets_amount, grant_credits.amount);
    IF grant_credits.expires_at IS NOT NULL THEN
        IF grant_credits.expires_at <= v_now THEN
            RAISE EXCEPTION 'invalid argument: expires_at % is not in the future', grant_credits.expires_at
                USING ERRCODE = 'LG007',
                      DETAIL = json_build_object('field', 'expires_at', 'reason', 'in the past')::text;
        END IF;
        IF v_op.expires_after IS NOT NULL AND grant_credits.expires_at > v_now + v_op.expires_after THEN
            RAISE EXCEPTION 'invalid argument: grants of % expire within % of being made; expires_at % is later',
                    v_op.operation, v_op.expires_after, grant_credits.expires_at
                USING ERRCODE = 'LG007',
                      DETAIL = json_build_object('field', 'expires_at', 'reason', 'beyond the operation''s expiry',
                                                 'expires_after', v_op.expires_after::text)::text,
                      HINT = 'A caller may shorten an operation''s expiry, never extend it.';
        END IF;
    END IF;
    IF grant_credits.priority IS NOT NULL AND (grant_credits.priority < 0 OR grant_credits.priority > 1000) THEN
        RAISE EXCEPTION 'invalid argument: priority must be between 0 and 1000 (% given)', grant_credits.priority
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'priority', 'reason', 'out of range', 'min', 0,
                                             'max', 1000)::text;
    END IF;
    v_meta := ledger._metadata(grant_credits.metadata);
    v_fp := ledger._fingerprint(jsonb_build_array('grant_credits', grant_credits.owner_id, grant_credits.operation,
                                                  grant_credits.amount, grant_credits.expires_at,
                                                  grant_credits.priority, v_meta));
    RETURN ledger._apply(grant_credits.owner_id, grant_credits.app, v_op.operation, v_op.limit_per, v_amount,
                         grant_credits.idempotency_key, v_fp, v_meta,
                         p_priority => coalesce(grant_credits.priority, v_op.grant_priority),
                         p_expires_after => v_op.expires_after, p_expires_at => grant_credits.expires_at);
END
$$;

-- The entry point, never distributed: as ledger.post_entry.
CREATE OR REPLACE FUNCTION ledger.grant_credits(
    owner_id        text,
    app             text,
    operation       text,
    idempotency_key text,
    amount          numeric DEFAULT NULL,
    expires_at      timestamptz DEFAULT NULL,
    priority        integer DEFAULT NULL,
    metadata        text DEFAULT '{}')
RETURNS ledger.entry_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_owner  text := ledger._require_id('owner_id', grant_credits.owner_id);
    v_writer text := ledger._writer();
    v_result ledger.entry_result;
BEGIN
    SELECT * INTO v_result
    FROM ledger_shard.grant_credits(v_owner, grant_credits.app, grant_credits.operation,
                                    grant_credits.idempotency_key, grant_credits.amount, grant_credits.expires_at,
                                    grant_credits.priority, grant_credits.metadata, v_writer);
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION ledger.grant_credits(text, text, text, text, numeric, timestamptz, integer, text) IS $$
Posts a credit of a credit operation (LG007 for a debit one) whose grant
expires at expires_at (NULL: the operation's expires_after after it is
made, or never) and is spent with priority (NULL: the operation's
grant_priority; lower is spent first; 0 to 1000, else LG007). expires_at
must be in the future and, for an operation whose grants expire, no later
than now + its expires_after: a caller may shorten an expiry, never extend
it (LG007, field expires_at). Otherwise post_entry's rules: idempotent by
(owner_id, app, idempotency_key), the operation's amount rules and limit,
LG002, LG003, LG004, LG005, LG006, LG011. Returns the entry.$$;

CREATE OR REPLACE FUNCTION ledger.list_grants(owner_id text, include_closed boolean DEFAULT false)
RETURNS SETOF ledger.grant_row
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_at timestamptz := clock_timestamp();
BEGIN
    PERFORM ledger._require_id('owner_id', list_grants.owner_id);
    RETURN QUERY
        SELECT g.grant_id, g.entry_id, g.owner_id, g.app, g.operation, g.amount, g.remaining, g.priority,
               g.expires_at, 'active'::text, g.created_at
        FROM ledger.grants g
        WHERE g.owner_id = list_grants.owner_id AND g.status = 'active' AND g.remaining > 0
          AND (g.expires_at IS NULL OR g.expires_at > v_at)
        ORDER BY g.priority, g.expires_at, g.seq, g.grant_id;
    IF coalesce(list_grants.include_closed, false) THEN
        RETURN QUERY
            SELECT g.grant_id, g.entry_id, g.owner_id, g.app, g.operation, g.amount, 0::bigint, g.priority,
                   g.expires_at, ledger._grant_status(g.status, g.remaining, g.expires_at, v_at), g.created_at
            FROM ledger.grants g
            WHERE g.owner_id = list_grants.owner_id
              AND NOT (g.status = 'active' AND g.remaining > 0 AND (g.expires_at IS NULL OR g.expires_at > v_at))
            ORDER BY g.seq DESC, g.grant_id DESC;
    END IF;
END
$$;
COMMENT ON FUNCTION ledger.list_grants(text, boolean) IS $$
An owner's grants that still hold credits, in the order debits spend them
(priority, then the soonest expiry with never-expiring last, then the
oldest), remaining = what can still be spent. With include_closed, then
the closed ones newest first, remaining 0 and status spent (nothing left),
expired (its expiry came with credits left: from expires_at on, whether or
not its EXPIRE entry is written yet) or voided (void_grant, or a reversed
credit). LG007 for a malformed owner_id. Read-only.$$;

CREATE OR REPLACE FUNCTION ledger.list_spending(
    owner_id text, entry_id bigint DEFAULT NULL, grant_id bigint DEFAULT NULL, max_rows integer DEFAULT 100)
RETURNS SETOF ledger.spending_row
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ledger._require_id('owner_id', list_spending.owner_id);
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 1000 THEN
        RAISE EXCEPTION 'invalid argument: max_rows must be between 1 and 1000 (% given)', max_rows
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'max_rows', 'reason', 'out of range',
                                             'min', 1, 'max', 1000)::text;
    END IF;
    RETURN QUERY
        SELECT s.owner_id, s.entry_id, s.grant_id, s.seq, e.operation, s.amount, e.created_at
        FROM ledger.grant_spending s
        JOIN ledger.entries e ON e.owner_id = s.owner_id AND e.entry_id = s.entry_id
        WHERE s.owner_id = list_spending.owner_id
          AND (list_spending.entry_id IS NULL OR s.entry_id = list_spending.entry_id)
          AND (list_spending.grant_id IS NULL OR s.grant_id = list_spending.grant_id)
        ORDER BY s.seq DESC, s.grant_id
        LIMIT list_spending.max_rows;
END
$$;
COMMENT ON FUNCTION ledger.list_spending(text, bigint, bigint, integer) IS $$
Where an owner's credits went: the spending rows, newest first (by the
entry's seq), max_rows (1 to 1000, else LG007) at most. amount is negative
for credits an entry took from a grant (a debit, a capture, a transfer's
sending leg, an EXPIRE or VOID entry, a reversed credit) and positive for
credits a reversal gave back. With entry_id, what that entry did to which
grants; with grant_id, everything that happened to that grant after it
was made. Read-only.$$;

CREATE OR REPLACE FUNCTION ledger.void_grant(
    grant_id        bigint,
    app             text,
    idempotency_key text,
    reason          text DEFAULT NULL,
    owner_id        text DEFAULT NULL)
RETURNS ledger.entry_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_grant   ledger.grants;
    v_account record;
    v_at      timestamptz;
    v_fp      uuid;
    v_result  ledger.entry_result;
    v_alerts  boolean;
    v_before  bigint;
    v_seq     bigint;
BEGIN
    IF void_grant.grant_id IS NULL THEN
        RAISE EXCEPTION 'invalid argument: grant_id is required'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'grant_id', 'reason', 'required')::text;
    END IF;
    PERFORM ledger._require_app(void_grant.app);
    PERFORM ledger._require_id('idempotency_key', void_grant.idempotency_key);
    IF length(void_grant.reason) > 1000 THEN
        RAISE EXCEPTION 'invalid argument: reason is longer than 1000 characters'
            USING ERRCODE = 'LG007', DETAIL = json_build_object('field', 'reason', 'reason', 'too long')::text;
    END IF;
    v_fp := ledger._fingerprint(jsonb_build_array('void_grant', void_grant.grant_id, void_grant.reason));
    IF void_grant.owner_id IS NOT NULL THEN
        PERFORM ledger._require_id('owner_id', void_grant.owner_id);
        SELECT g.* INTO v_grant FROM ledger.grants g
        WHERE g.owner_id = void_grant.owner_id AND g.grant_id = void_grant.grant_id;
    ELSE
        SELECT g.* INTO v_grant FROM ledger.grants g WHERE g.grant_id = void_grant.grant_id;
    END IF;
    IF NOT FOUND THEN
        PERFORM ledger._grant_not_found(void_grant.grant_id, void_grant.owner_id);
    END IF;
    IF v_grant.app <> void_grant.app THEN
        RAISE EXCEPTION 'grant % was made by app %: only that app may void it', v_grant.grant_id, v_grant.app
            USING ERRCODE = 'LG003',
                  DETAIL = json_build_object('grant_id', v_grant.grant_id, 'app', void_grant.app,
                                             'grant_app', v_grant.app)::text;
    END IF;

    v_account := ledger._lock_account(v_grant.owner_id, false);
    v_at := clock_timestamp();
    v_alerts := ledger._alerts_on();
    IF v_alerts THEN
        v_before := ledger._stored_available(v_grant.owner_id);
    END IF;
    IF v_account.next_expiry <= v_at THEN
        PERFORM ledger._expire_due(v_grant.owner_id, v_at);
    END IF;
    v_result := ledger._replay(v_grant.owner_id, void_grant.app, void_grant.idempotency_key, v_fp);
    IF v_result.entry_id IS NOT NULL THEN
        RETURN v_result;
    END IF;
    SELECT g.* INTO v_grant FROM ledger.grants g
    WHERE g.owner_id = v_grant.owner_id AND g.grant_id = v_grant.grant_id;
    IF v_grant.status <> 'active' OR v_grant.remaining = 0 THEN
        RAISE EXCEPTION 'grant % is not active: it is %', v_grant.grant_id,
                ledger._grant_status(v_grant.status, v_grant.remaining, v_grant.expires_at, v_at)
            USING ERRCODE = 'LG014',
                  DETAIL = json_build_object('grant_id', v_grant.grant_id, 'owner_id', v_grant.owner_id,
                                             'status', ledger._grant_status(v_grant.status, v_grant.remaining,
                                                                            v_grant.expires_at, v_at))::text;
    END IF;
    v_result := ledger._grant_exit(v_grant.owner_id, v_grant.grant_id, v_grant.app, 'VOID', v_grant.remaining,
                                   void_grant.idempotency_key, v_fp,
                                   jsonb_strip_nulls(jsonb_build_object('grant_id', v_grant.grant_id,
                                                                        'reason', void_grant.reason)),
                                   v_at);
    UPDATE ledger.grants g SET remaining = 0, status = 'voided', closed_at = v_at
    WHERE g.owner_id = v_grant.owner_id AND g.grant_id = v_grant.grant_id;
    SELECT a.last_seq INTO v_seq FROM ledger.accounts a WHERE a.owner_id = v_grant.owner_id;
    PERFORM ledger._event(v_grant.owner_id, 'grant.voided', v_seq, v_grant.app,
                          jsonb_strip_nulls(jsonb_build_object(
                              'grant_id', v_grant.grant_id, 'owner_id', v_grant.owner_id, 'app', v_grant.app,
                              'operation', v_grant.operation, 'amount', v_grant.amount,
                              'voided', v_grant.remaining, 'entry_id', v_result.entry_id,
                              'reason', void_grant.reason, 'idempotency_key', void_grant.idempotency_key)),
                          v_at, v_at, p_entry_id => v_result.entry_id, p_grant_id => v_grant.grant_id);
    IF v_alerts THEN
        PERFORM ledger._balance_alerts(v_grant.owner_id, v_before,
                                       ledger._stored_available(v_grant.owner_id), v_at);
    END IF;
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION ledger.void_grant(bigint, text, text, text, text) IS $$
Removes what remains of a grant with a VOID entry (its negative amount);
what was spent stays spent. Only the app that made the grant (LG003);
LG008 for an unknown grant; LG014 when nothing is left (spent, expired or
voided). Idempotent by (the grant's owner, app, idempotency_key) as
post_entry: a retry returns the VOID entry with replayed = true. Credits
a hold reserved are not protected: a void (like an expiry) may leave an
open hold uncovered, and its capture then fails with LG001. With owner_id
the call goes straight to that owner's grants; without, the grant is found
by its id first.$$;

-- It gained warn_before (trailing, with a default).
DROP FUNCTION IF EXISTS ledger.expire_grants(integer);
CREATE OR REPLACE FUNCTION ledger.expire_grants(max_rows integer DEFAULT 1000,
                                                warn_before interval DEFAULT interval '1 day')
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_owner  text;
    v_at     timestamptz;
    v_due    integer;
    v_done   integer := 0;
    v_alerts boolean := ledger._alerts_on();
    v_before bigint;
    v_grant  record;
    v_seq    bigint;
    v_warned integer := 0;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 100000 THEN
        RAISE EXCEPTION 'invalid argument: max_rows must be between 1 and 100000 (% given)', max_rows
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'max_rows', 'reason', 'out of range',
                                             'min', 1, 'max', 100000)::text;
    END IF;
    IF warn_before < interval '0' OR warn_before > interval '365 days' THEN
        RAISE EXCEPTION 'invalid argument: warn_before must be between 0 and 365 days (% given)', warn_before
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'warn_before', 'reason', 'out of range')::text;
    END IF;
    FOR v_owner IN
        SELECT a.owner_id FROM ledger.accounts a
        WHERE a.next_expiry <= clock_timestamp()
        ORDER BY a.next_expiry
        LIMIT expire_grants.max_rows
    LOOP
        -- An owner a writer holds is skipped: its writer expires what is due.
        PERFORM 1 FROM ledger.accounts a WHERE a.owner_id = v_owner FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        v_at := clock_timestamp();
        IF v_alerts THEN
            v_before := ledger._stored_available(v_owner);
        END IF;
        SELECT count(*) INTO v_due FROM ledger.grants g
        WHERE g.owner_id = v_owner AND g.status = 'active' AND g.remaining > 0 AND g.expires_at <= v_at;
        PERFORM ledger._expire_due(v_owner, v_at);
        IF v_alerts THEN
            PERFORM ledger._balance_alerts(v_owner, v_before, ledger._stored_available(v_owner), v_at);
        END IF;
        v_done := v_done + v_due;
        EXIT WHEN v_done >= expire_grants.max_rows;
    END LOOP;
    -- grant.expiring: once per grant, warn_before ahead of its expiry.
    IF coalesce(warn_before, interval '0') > interval '0' THEN
        FOR v_owner IN
            SELECT DISTINCT g.owner_id FROM ledger.grants g
            WHERE g.status = 'active' AND NOT g.expiring_notified AND g.remaining > 0
              AND g.expires_at <= clock_timestamp() + expire_grants.warn_before
            LIMIT expire_grants.max_rows
        LOOP
            PERFORM 1 FROM ledger.accounts a WHERE a.owner_id = v_owner FOR UPDATE SKIP LOCKED;
            CONTINUE WHEN NOT FOUND;
            v_at := clock_timestamp();
            SELECT a.last_seq INTO v_seq FROM ledger.accounts a WHERE a.owner_id = v_owner;
            FOR v_grant IN
                SELECT g.grant_id, g.app, g.operation, g.amount, g.remaining, g.expires_at FROM ledger.grants g
                WHERE g.owner_id = v_owner AND g.status = 'active' AND NOT g.expiring_notified
                  AND g.remaining > 0 AND g.expires_at > v_at
                  AND g.expires_at <= v_at + expire_grants.warn_before
                ORDER BY g.expires_at, g.grant_id
            LOOP
                PERFORM ledger._event(v_owner, 'grant.expiring', v_seq, v_grant.app,
                                      jsonb_build_object('grant_id', v_grant.grant_id, 'owner_id', v_owner,
                                                         'app', v_grant.app, 'operation', v_grant.operation,
                                                         'amount', v_grant.amount,
                                                         'remaining', v_grant.remaining,
                                                         'expires_at', v_grant.expires_at),
                                      v_at, v_at, p_grant_id => v_grant.grant_id);
                UPDATE ledger.grants g SET expiring_notified = true
                WHERE g.owner_id = v_owner AND g.grant_id = v_grant.grant_id;
                v_warned := v_warned + 1;
            END LOOP;
            EXIT WHEN v_warned >= expire_grants.max_rows;
        END LOOP;
    END IF;
    RETURN v_done;
END
$$;
COMMENT ON FUNCTION ledger.expire_grants(integer, interval) IS $$
Writes the EXPIRE entries of grants past their expires_at, owner by owner
(soonest expiry first), each owner under its account row lock, and returns
how many grants it expired (max_rows, 1 to 100000, bounds the owners it
looks at and stops it once that many grants are done). On the way it
records the owners' holds that expired (hold.expired events) and their
balance alerts, and it sends one grant.expiring event per grant that
expires within warn_before (0 to 365 days, default 1 day; 0 sends none).
An owner that a writer holds is skipped, never waited for (its next write
records what is due), so it cannot deadlock with writes; several sessions
may run it at once and never expire a grant twice. Readers never need it:
from expires_at on, a grant's credits are gone for get_balance,
balance_at, list_grants and every debit. The locks last until the caller
commits: run it in its own short transaction (ledger grants expire does).$$;
