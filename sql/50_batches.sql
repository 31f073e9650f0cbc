-- Batches: ledger.post_entries posts up to 10,000 entries in one call and one
-- transaction, all or nothing, with the rules of post_entry for every item.
--
-- Set-based: a handful of whole-batch statements, not a loop over post_entry.
--   1. validate every item (one SELECT calling the shared rule helpers);
--   2. lock every touched account, one at a time in owner_id order (ledger._lock_accounts);
--   3. one query classifies each item (write, replay of a stored entry,
--      repeat of an earlier item of the batch, key conflict) against the
--      app's entries and holds, counts limits and computes each owner's
--      running balance with window functions, and marks what fails;
--   4. one INSERT of all new entries in input order (each owner's items get
--      its next seqs in input order), one UPDATE of the accounts (balance and
--      last seq), the results in input order.
-- An error names the failing item: "batch item <index>: ..." and "index" in
-- the DETAIL JSON, with the SQLSTATE post_entry would raise. Input errors
-- (shape, types, operation, amount, metadata) are reported first, for the
-- lowest index; then ledger-state errors (LG005 key, LG004 limit, LG001
-- insufficient, LG006 overflow) for the lowest index, which is the error a
-- sequence of post_entry calls would have stopped at.
--
-- Idempotency keys under concurrency. A key belongs to (owner, app): an
-- item's key to the item's owner. Every writing function takes the owner's
-- account row lock before it looks at a key of that owner; a batch locks all
-- its owners (one at a time, in owner_id order) and only then classifies its
-- keys against the entries and holds committed before. So a batch of any
-- size serializes with single calls on each key through the owner's lock:
-- a concurrent identical request replays, a different one is LG005, and no
-- hold and entry can share a key (the gap a key lock per item left for
-- batches of more than 64 items, which skipped them, is closed). The unique
-- index entries_owner_app_idempotency_key backs it: a key is never written
-- twice whatever happens.

-- The shape of a batch item: NULL when it is a JSON object with only
-- post_entry's parameter names, string (or null/missing) ids and a number
-- (or null/missing) amount; else what is wrong with it. One rule, used by the
-- fast path as a predicate and by ledger._batch_check_item to explain it.
CREATE OR REPLACE FUNCTION ledger._batch_shape_problem(p_item jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE
        WHEN jsonb_typeof(p_item) IS DISTINCT FROM 'object' THEN 'not an object'
        WHEN p_item - ARRAY['owner_id', 'app', 'operation', 'idempotency_key', 'amount', 'metadata'] <> '{}'
            THEN 'unknown key'
        WHEN jsonb_typeof(p_item -> 'owner_id') NOT IN ('string', 'null') THEN 'owner_id'
        WHEN jsonb_typeof(p_item -> 'idempotency_key') NOT IN ('string', 'null') THEN 'idempotency_key'
        WHEN jsonb_typeof(p_item -> 'app') NOT IN ('string', 'null') THEN 'app'
        WHEN jsonb_typeof(p_item -> 'operation') NOT IN ('string', 'null') THEN 'operation'
        WHEN jsonb_typeof(p_item -> 'amount') NOT IN ('number', 'null') THEN 'amount'
    END
$$;

-- Guarantees: raises the error of one invalid batch item, or returns: its
-- shape (LG007; LG006 for an amount that is not a number), then the rules of
-- post_entry through the same helpers in the same order (owner_id,
-- idempotency_key, app and operation, amount, metadata). The error path of
-- the set-based validation in ledger._post_entries, which checks the same.
CREATE OR REPLACE FUNCTION ledger._batch_check_item(p_item jsonb)
RETURNS void
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_problem text := ledger._batch_shape_problem(p_item);
    v_op      ledger.operations;
    v_unknown text;
BEGIN
    IF v_problem = 'not an object' THEN
        RAISE EXCEPTION 'invalid argument: a batch item must be a JSON object, not %',
                coalesce(jsonb_typeof(p_item), 'null')
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'entries', 'reason', 'item not an object')::text,
                  HINT = 'Items are objects keyed like post_entry''s parameters.';
    ELSIF v_problem = 'unknown key' THEN
        SELECT min(k) INTO v_unknown
        FROM jsonb_object_keys(p_item - ARRAY['owner_id', 'app', 'operation', 'idempotency_key', 'amount', 'metadata']) AS k;
        RAISE EXCEPTION 'invalid argument: unknown key % in a batch item', v_unknown
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', v_unknown, 'reason', 'unknown key')::text,
                  HINT = 'Items are keyed like post_entry''s parameters: owner_id, app, operation, '
                         'idempotency_key, amount, metadata.';
    ELSIF v_problem = 'amount' THEN
        RAISE EXCEPTION 'invalid amount: amount must be a JSON number or null, not %', jsonb_typeof(p_item -> 'amount')
            USING ERRCODE = 'LG006',
                  DETAIL = json_build_object('field', 'amount', 'reason', 'not a number')::text;
    ELSIF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'invalid argument: % must be a JSON string, not %', v_problem, jsonb_typeof(p_item -> v_problem)
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', v_problem, 'reason', 'not a string')::text;
    END IF;
    PERFORM ledger._require_id('owner_id', p_item ->> 'owner_id');
    PERFORM ledger._require_id('idempotency_key', p_item ->> 'idempotency_key');
    v_op := ledger._operation_for(p_item ->> 'app', p_item ->> 'operation');
    PERFORM ledger._amount_for(v_op.operation, v_op.default_amount, v_op.min_amount, v_op.max_amount,
                               v_op.caller_sets_amount, (p_item ->> 'amount')::numeric);
    PERFORM ledger._metadata(p_item ->> 'metadata');
END
$$;

-- Guarantees: re-raises an error of batch item p_index with its SQLSTATE,
-- MESSAGE prefixed by "batch item <index>: ", DETAIL (a JSON object) gaining
-- "index", and the HINT kept.
CREATE OR REPLACE FUNCTION ledger._batch_error(
    p_index integer, p_state text, p_message text, p_detail text, p_hint text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_detail jsonb;
BEGIN
    BEGIN
        v_detail := p_detail::jsonb;
    EXCEPTION WHEN OTHERS THEN
        v_detail := NULL;
    END;
    IF jsonb_typeof(v_detail) = 'object' THEN
        v_detail := v_detail || jsonb_build_object('index', p_index);
    ELSE
        v_detail := jsonb_strip_nulls(jsonb_build_object('index', p_index, 'detail', nullif(p_detail, '')));
    END IF;
    IF coalesce(p_hint, '') = '' THEN
        RAISE EXCEPTION USING ERRCODE = p_state, MESSAGE = format('batch item %s: %s', p_index, p_message),
                              DETAIL = v_detail::text;
    END IF;
    RAISE EXCEPTION USING ERRCODE = p_state, MESSAGE = format('batch item %s: %s', p_index, p_message),
                          DETAIL = v_detail::text, HINT = p_hint;
END
$$;

-- Guarantees: raises the error of the first (lowest index) invalid item of
-- the batch, naming its index; returns normally when every item is valid.
-- The error path of the set-based validation, which does not know which
-- item it failed on: items are checked one by one, in input order. An item
-- without a key is checked with the key '<p_key>:<index>' it is given when
-- the request carries p_key (ledger._post_entries).
DROP FUNCTION IF EXISTS ledger._batch_first_invalid(jsonb);  -- it took no request key before
CREATE OR REPLACE FUNCTION ledger._batch_first_invalid(p_entries jsonb, p_key text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_index  integer;
    v_item   jsonb;
    v_state  text;
    v_msg    text;
    v_detail text;
    v_hint   text;
BEGIN
    FOR v_item, v_index IN
        SELECT i.item, i.ord - 1 FROM jsonb_array_elements(p_entries) WITH ORDINALITY AS i(item, ord) ORDER BY i.ord
    LOOP
        IF p_key IS NOT NULL AND jsonb_typeof(v_item) = 'object'
           AND jsonb_typeof(v_item -> 'idempotency_key') IS DISTINCT FROM 'string' THEN
            v_item := v_item || jsonb_build_object('idempotency_key', p_key || ':' || v_index);
        END IF;
        BEGIN
            PERFORM ledger._batch_check_item(v_item);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT,
                                    v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
            PERFORM ledger._batch_error(v_index, v_state, v_msg, v_detail, v_hint);
        END;
    END LOOP;
END
$$;

-- Guarantees: the batch as jsonb, or LG007: not JSON, JSON holding what
-- the database cannot store (\u0000, a lone surrogate escape, a number
-- beyond numeric), or an object repeating a key at any depth (jsonb would
-- keep the last one silently); for a JSON array the error names the first
-- such item. ledger._invalid_json and ledger._require_unique_keys word the
-- reasons, as they do for metadata. (PostgreSQL's JSON functions refuse
-- \u0000 anywhere in an object, so the field cannot be named.) Only text can
-- be checked for duplicate keys: a jsonb argument has already lost them.
CREATE OR REPLACE FUNCTION ledger._batch_json(p_entries text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_jsonb  jsonb;
    v_json   json;
    v_item   json;
    v_index  integer;
    v_state  text;
    v_msg    text;
    v_detail text;
BEGIN
    IF p_entries IS NULL THEN
        RETURN NULL;
    END IF;
    BEGIN
        v_jsonb := p_entries::jsonb;
        PERFORM ledger._require_unique_keys('entries', p_entries, v_jsonb, true);
        RETURN v_jsonb;
    EXCEPTION WHEN data_exception OR statement_too_complex THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT,
                                v_detail = PG_EXCEPTION_DETAIL;  -- find out where, below
    END;
    BEGIN
        v_json := p_entries::json;   -- syntax only: keeps \u0000, surrogates and huge numbers as text
    EXCEPTION WHEN data_exception OR statement_too_complex THEN
        PERFORM ledger._invalid_json('entries', p_entries, v_state, v_msg, v_detail);
    END;
    IF json_typeof(v_json) = 'array' THEN
        FOR v_item, v_index IN
            SELECT i.item, i.ord - 1 FROM json_array_elements(v_json) WITH ORDINALITY AS i(item, ord) ORDER BY i.ord
        LOOP
            BEGIN
                PERFORM v_item::jsonb;
            EXCEPTION WHEN data_exception OR statement_too_complex THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT,
                                        v_detail = PG_EXCEPTION_DETAIL;
                PERFORM ledger._invalid_json('entries', v_item::text, v_state, v_msg, v_detail, v_index);
            END;
        END LOOP;
    END IF;
    PERFORM ledger._invalid_json('entries', p_entries, v_state, v_msg, v_detail);
    RETURN NULL;  -- not reached: ledger._invalid_json always raises
END
$$;

-- Guarantees: the whole of post_entries once the batch is jsonb. Runs inside
-- the SECURITY DEFINER entry points; see the head of this file. p_key is the
-- request's idempotency key (see ledger.post_entries).
DROP FUNCTION IF EXISTS ledger._post_entries(jsonb);  -- it took no request key before
CREATE OR REPLACE FUNCTION ledger._post_entries(p_entries jsonb, p_key text DEFAULT NULL)
RETURNS SETOF ledger.entry_result
LANGUAGE plpgsql
AS $$
DECLARE
    c_max_items constant integer := 10000;
    v_count     integer;
    v_valid     bigint;
    v_shape_ok  boolean;
    v_phase     text;
    v_blame     integer;
    -- One element per item, in input order (index = position - 1).
    v_owner     text[];
    v_app       text[];
    v_operation text[];
    v_key       text[];
    v_amount    bigint[];
    v_limit     text[];
    v_fp        uuid[];
    v_request   uuid;         -- fingerprint of the whole request (items keyed by p_key)
    v_meta      jsonb[];
    v_priority  integer[];    -- a credit's grant: priority
    v_expires   interval[];   --   and expiry after the write (NULL never)
    v_next      timestamptz[];  -- the locked owners' next_expiry
    v_due       text[];       -- owners with a grant expired by v_at
    r_entry     bigint[];     -- the results, in input order
    r_owner     text[];
    r_app       text[];
    r_operation text[];
    r_amount    bigint[];
    r_balance   bigint[];
    r_created   timestamptz[];
    r_replayed  boolean[];
    r_seq       bigint[];     -- the seq of an entry this batch wrote (else NULL)
    v_alerts    boolean;      -- whether any app has a balance alert
    v_before    bigint[];     -- per locked owner: available before the batch
    v_status    text[];       -- write | replay | repeat | LG005 | LG004 | LG001 | LG006
    v_balance   numeric[];    -- balance after the item (items to write)
    v_available numeric[];    -- available before the item (debits to write)
    v_prior     bigint[];     -- the stored entry a replay returns
    v_seq       bigint[];     -- the owner's seq of the item (items to write)
    v_locked    text[];       -- the touched owners, in owner_id order, with
    v_base      bigint[];     --   their balance
    v_base_seq  bigint[];     --   and last seq under the lock
    v_at        timestamptz;
    v_writer    text;
    v_i         integer;
    v_state     text;
    v_msg       text;
    v_detail    text;
    v_hint      text;
    v_cons      text;
BEGIN
    IF p_entries IS NULL OR jsonb_typeof(p_entries) <> 'array' THEN
        RAISE EXCEPTION 'invalid argument: entries must be a JSON array, not %',
                coalesce(jsonb_typeof(p_entries), 'null')
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'entries', 'reason',
                                             CASE WHEN p_entries IS NULL THEN 'required' ELSE 'not an array' END)::text,
                  HINT = 'entries is a JSON array of objects keyed like post_entry''s parameters.';
    END IF;
    v_count := jsonb_array_length(p_entries);
    IF v_count = 0 OR v_count > c_max_items THEN
        RAISE EXCEPTION 'invalid argument: a batch holds 1 to % entries (% given)', c_max_items, v_count
            USING ERRCODE = 'LG007',
                  DETAIL = json_build_object('field', 'entries', 'reason', CASE v_count WHEN 0 THEN 'empty' ELSE 'too many' END,
                                             'count', v_count, 'max', c_max_items)::text;
    END IF;

    IF p_key IS NOT NULL THEN
        PERFORM ledger._require_id('idempotency_key', p_key);
        v_request := ledger._fingerprint(jsonb_build_array('post_entries', p_entries));
    END IF;

    BEGIN
        -- 1. Every item through the rules of post_entry, in one statement:
        -- the shape rule, the helpers post_entry calls (operations resolved
        -- once per distinct app and operation) and post_entry's fingerprint.
        -- Any error, a bad shape or a lost item sends us to the error path,
        -- which checks the items one by one to name the first bad one.
        v_phase := 'validate';
        -- An item without its own key, in a request with key K, is keyed
        -- 'K:<index>' and fingerprinted with the whole request: K then names
        -- this request as a whole (another batch under K conflicts, LG005).
        WITH raw AS (
            SELECT i.ord, i.item, i.item ->> 'app' AS app, i.item ->> 'operation' AS operation,
                   (i.item ->> 'amount')::numeric AS amount_given,
                   i.item ->> 'idempotency_key' IS NULL AND p_key IS NOT NULL AS request_keyed,
                   coalesce(i.item ->> 'idempotency_key', p_key || ':' || (i.ord - 1)) AS key_given
            FROM jsonb_array_elements(p_entries) WITH ORDINALITY AS i(item, ord)
        ), ops AS MATERIALIZED (
            SELECT d.app, d.operation, ledger._operation_for(d.app, d.operation) AS op
            FROM (SELECT DISTINCT r.app, r.operation FROM raw r) d
        ), checked AS MATERIALIZED (
            SELECT r.ord, r.amount_given, r.request_keyed,
                   ledger._batch_shape_problem(r.item) IS NULL AS shape_ok,
                   ledger._require_id('owner_id', r.item ->> 'owner_id') AS owner_id,
                   ledger._require_id('idempotency_key', r.key_given) AS idempotency_key,
                   o.app, (o.op).operation, (o.op).direction, (o.op).limit_per,
                   (o.op).grant_priority, (o.op).expires_after,
                   ledger._amount_for((o.op).operation, (o.op).default_amount, (o.op).min_amount,
                                      (o.op).max_amount, (o.op).caller_sets_amount, r.amount_given) AS magnitude,
                   ledger._metadata(r.item ->> 'metadata') AS metadata
            FROM raw r
            JOIN ops o ON o.app = r.app AND o.operation = r.operation
        )
        SELECT count(*), coalesce(bool_and(c.shape_ok), false),
               array_agg(c.owner_id ORDER BY c.ord), array_agg(c.app ORDER BY c.ord),
               array_agg(c.operation ORDER BY c.ord), array_agg(c.idempotency_key ORDER BY c.ord),
               array_agg(CASE c.direction WHEN 'debit' THEN -c.magnitude ELSE c.magnitude END ORDER BY c.ord),
               array_agg(c.limit_per ORDER BY c.ord),
               array_agg(CASE WHEN c.request_keyed THEN v_request
                              ELSE ledger._fingerprint(jsonb_build_array('post_entry', c.owner_id, c.operation,
                                                                         c.amount_given, c.metadata)) END
                         ORDER BY c.ord),
               array_agg(c.metadata ORDER BY c.ord),
               array_agg(c.grant_priority ORDER BY c.ord), array_agg(c.expires_after ORDER BY c.ord)
        INTO v_valid, v_shape_ok, v_owner, v_app, v_operation, v_key, v_amount, v_limit, v_fp, v_meta,
             v_priority, v_expires
        FROM checked c;
        IF v_valid <> v_count OR NOT v_shape_ok THEN
            RAISE EXCEPTION 'a batch item is invalid';  -- the error path names it
        END IF;

        -- 2. Every touched account, created at zero if new, locked one owner
        -- at a time in owner_id order. A key belongs to its item's owner, and
        -- every request of a key looks at it under that owner's lock: from
        -- here on what the keys name is final until we commit.
        v_phase := 'decide';
        SELECT array_agg(l.owner_id ORDER BY l.owner_id), array_agg(l.balance ORDER BY l.owner_id),
               array_agg(l.last_seq ORDER BY l.owner_id),
               array_agg(l.next_expiry ORDER BY l.owner_id)
        INTO v_locked, v_base, v_base_seq, v_next
        FROM ledger._lock_accounts(v_owner, true) l;
        v_at := clock_timestamp();
        v_writer := ledger._writer();
        SELECT array_agg(l.owner_id ORDER BY l.owner_id) INTO v_due
        FROM unnest(v_locked, v_next) AS l(owner_id, next_expiry) WHERE l.next_expiry <= v_at;
        -- Balance alerts compare each owner's available credits before and
        -- after the whole batch (one transaction: what lies between is never
        -- seen by anyone). On Citus, _apply does it item by item.
        v_alerts := ledger._alerts_on();
        IF v_alerts AND to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
            SELECT array_agg(ledger._stored_available(l.owner_id) ORDER BY l.o) INTO v_before
            FROM unnest(v_locked) WITH ORDINALITY AS l(owner_id, o);
        END IF;
        -- The owners' grants that expired by now leave first (their EXPIRE
        -- entries), as at any write; then their balances and seqs are read again.
        IF v_due IS NOT NULL THEN
            FOR v_i IN 1 .. cardinality(v_due) LOOP
                PERFORM ledger._expire_due(v_due[v_i], v_at);
            END LOOP;
            SELECT array_agg(a.balance ORDER BY l.o), array_agg(a.last_seq ORDER BY l.o)
            INTO v_base, v_base_seq
            FROM unnest(v_locked) WITH ORDINALITY AS l(owner_id, o)
            CROSS JOIN LATERAL (SELECT x.balance, x.last_seq FROM ledger.accounts x
                                WHERE x.owner_id = l.owner_id) a;
        END IF;

        -- On Citus (the ledger distributed by owner: docs/CITUS.md) the
        -- whole-batch queries below join the items with several owners'
        -- shards, which Citus cannot plan ("complex joins are only supported
        -- when all distributed tables are co-located and joined on their
        -- distribution columns"). There the items go, in input order, through
        -- the one write path of post_entry, each on its owner's shard, under
        -- the locks taken above: the same results and the same first error
        -- (a sequence of post_entry calls stops at it), the entries of one
        -- owner in input order, one created_at for the batch. Plain
        -- PostgreSQL never takes this branch.
        IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
            v_phase := 'one by one';
            FOR v_i IN 1 .. v_count LOOP
                v_blame := v_i - 1;
                RETURN NEXT ledger._apply(v_owner[v_i], v_app[v_i], v_operation[v_i], v_limit[v_i],
                                          v_amount[v_i], v_key[v_i], v_fp[v_i], v_meta[v_i],
                                          p_at => v_at, p_priority => v_priority[v_i],
                                          p_expires_after => v_expires[v_i]);
            END LOOP;
            RETURN;
        END IF;

        -- 3. Under the locks: keys, limits and running balances of the whole batch.
        WITH items AS (
            SELECT t.ord - 1 AS idx, t.owner_id, t.app, t.operation, t.idempotency_key, t.amount,
                   t.limit_per, t.fingerprint
            FROM unnest(v_owner, v_app, v_operation, v_key, v_amount, v_limit, v_fp)
                 WITH ORDINALITY AS t(owner_id, app, operation, idempotency_key, amount, limit_per, fingerprint, ord)
        ), prior AS MATERIALIZED (
            -- Keys are unique per (owner, app) across entries and holds: what
            -- the batch's keys already name, by inner joins on the owner and
            -- the key (a probe of each unique index per item; Citus pushes an
            -- equality join on owner_id to the shards, where a correlated
            -- subquery over the items could not run).
            SELECT DISTINCT e.owner_id, e.app, e.idempotency_key, e.entry_id, e.fingerprint
            FROM items it
            JOIN ledger.entries e
              ON e.owner_id = it.owner_id AND e.app = it.app AND e.idempotency_key = it.idempotency_key
        ), held_keys AS MATERIALIZED (
            SELECT DISTINCT h.owner_id, h.app, h.idempotency_key
            FROM items it
            JOIN ledger.holds h
              ON h.owner_id = it.owner_id AND h.app = it.app AND h.idempotency_key = it.idempotency_key
        ), keyed AS (
            SELECT it.*, p.entry_id AS prior_id, p.fingerprint AS prior_fp, hk.owner_id IS NOT NULL AS hold_key
            FROM items it
            LEFT JOIN prior p
                   ON p.owner_id = it.owner_id AND p.app = it.app AND p.idempotency_key = it.idempotency_key
            LEFT JOIN held_keys hk
                   ON hk.owner_id = it.owner_id AND hk.app = it.app AND hk.idempotency_key = it.idempotency_key
        ), repeated AS (
            -- Keys given more than once in the batch for one owner (usually none): their first item.
            SELECT d.owner_id, d.app, d.idempotency_key, d.first_idx, it.fingerprint AS first_fp
            FROM (SELECT it.owner_id, it.app, it.idempotency_key, min(it.idx) AS first_idx
                  FROM items it GROUP BY it.owner_id, it.app, it.idempotency_key HAVING count(*) > 1) d
            JOIN items it ON it.idx = d.first_idx
        ), classified AS (
            SELECT k.*,
                   CASE WHEN k.prior_id IS NOT NULL THEN
                            CASE WHEN k.prior_fp = k.fingerprint THEN 'replay' ELSE 'LG005' END
                        WHEN k.hold_key THEN 'LG005'
                        WHEN r.first_idx < k.idx THEN
                            CASE WHEN r.first_fp = k.fingerprint THEN 'repeat' ELSE 'LG005' END
                        ELSE 'write' END AS status
            FROM keyed k
            LEFT JOIN repeated r ON r.owner_id = k.owner_id AND r.app = k.app
                                AND r.idempotency_key = k.idempotency_key
        ), limited AS (
            -- Operations granted once per owner (ever or per day): an earlier
            -- item of the batch counts like an earlier entry.
            SELECT c.idx,
                   row_number() OVER (PARTITION BY c.owner_id, c.operation ORDER BY c.idx) > 1
                   OR ledger._limit_reached(c.owner_id, c.operation, c.limit_per) AS hit
            FROM classified c
            WHERE c.status = 'write' AND c.limit_per IS NOT NULL
        ), held AS (
            SELECT o.owner_id, h.held
            FROM (SELECT DISTINCT c.owner_id FROM classified c WHERE c.status = 'write' AND c.amount < 0) o
            CROSS JOIN LATERAL (SELECT ledger._active_holds(o.owner_id, NULL, v_at) AS held) h
        ), locked AS (
            SELECT l.owner_id, l.balance, l.last_seq
            FROM unnest(v_locked, v_base, v_base_seq) AS l(owner_id, balance, last_seq)
        ), writes AS (
            -- Each owner's running balance and seq, item after item, from the locked row.
            SELECT c.idx, c.amount, coalesce(h.held, 0) AS held,
                   a.balance + sum(c.amount) OVER (PARTITION BY c.owner_id ORDER BY c.idx) AS balance_after,
                   a.last_seq + row_number() OVER (PARTITION BY c.owner_id ORDER BY c.idx) AS seq
            FROM classified c
            JOIN locked a ON a.owner_id = c.owner_id
            LEFT JOIN held h ON h.owner_id = c.owner_id
            WHERE c.status = 'write'
        )
        SELECT array_agg(CASE WHEN c.status <> 'write' THEN c.status
                              WHEN l.hit THEN 'LG004'
                              WHEN w.amount < 0 AND w.balance_after < w.held THEN 'LG001'
                              WHEN w.balance_after > 9223372036854775807 THEN 'LG006'
                              ELSE 'write' END ORDER BY c.idx),
               array_agg(w.balance_after ORDER BY c.idx),
               array_agg(w.balance_after - w.amount - w.held ORDER BY c.idx),
               array_agg(c.prior_id ORDER BY c.idx),
               array_agg(w.seq ORDER BY c.idx)
        INTO v_status, v_balance, v_available, v_prior, v_seq
        FROM classified c
        LEFT JOIN writes w ON w.idx = c.idx
        LEFT JOIN limited l ON l.idx = c.idx;

        -- The first failing item, with the error post_entry raises for it.
        SELECT t.ord::integer - 1 INTO v_blame
        FROM unnest(v_status) WITH ORDINALITY AS t(status, ord)
        WHERE t.status LIKE 'LG%'
        ORDER BY t.ord
        LIMIT 1;
        IF v_blame IS NOT NULL THEN
            v_i := v_blame + 1;
            CASE v_status[v_i]
                WHEN 'LG005' THEN
                    PERFORM ledger._key_conflict(v_app[v_i], v_key[v_i]);
                WHEN 'LG004' THEN
                    PERFORM ledger._limit_error(v_owner[v_i], v_operation[v_i], v_limit[v_i]);
                WHEN 'LG001' THEN
                    PERFORM ledger._insufficient(v_owner[v_i], -v_amount[v_i], v_available[v_i]::bigint);
                ELSE
                    PERFORM ledger._balance_overflow(v_owner[v_i], v_amount[v_i]);
            END CASE;
        END IF;

        -- 4. Write: the new entries in input order, the accounts, the results.
        -- Each credit makes its grant in the same statement; the debits spend
        -- grants after it, in input order (ledger._spend: an item spends only
        -- grants made before it).
        v_phase := 'write';
        WITH items AS (
            SELECT t.ord, t.owner_id, t.app, t.operation, t.idempotency_key, t.amount, t.fingerprint,
                   t.metadata, t.status, t.balance, t.prior, t.seq, t.priority,
                   v_at + t.expires_after AS expires_at
            FROM unnest(v_owner, v_app, v_operation, v_key, v_amount, v_fp, v_meta, v_status, v_balance, v_prior,
                        v_seq, v_priority, v_expires)
                 WITH ORDINALITY AS t(owner_id, app, operation, idempotency_key, amount, fingerprint,
                                      metadata, status, balance, prior, seq, priority, expires_after, ord)
        ), replayed AS MATERIALIZED (
            -- The stored entries that replays return (an inner join by owner and id).
            SELECT e.entry_id, e.owner_id, e.app, e.operation, e.amount, e.balance, e.created_at
            FROM items it
            JOIN ledger.entries e ON e.owner_id = it.owner_id AND e.entry_id = it.prior
        ), written AS (
            INSERT INTO ledger.entries AS e
                (owner_id, seq, app, operation, amount, balance, idempotency_key, fingerprint, metadata,
                 created_at, created_by)
            SELECT it.owner_id, it.seq, it.app, it.operation, it.amount, it.balance::bigint, it.idempotency_key,
                   it.fingerprint, it.metadata, v_at, v_writer
            FROM items it
            WHERE it.status = 'write'
            ORDER BY it.ord
            RETURNING e.entry_id, e.owner_id, e.app, e.operation, e.amount, e.balance, e.created_at,
                      e.idempotency_key, e.seq, e.metadata
        ), posted AS (
            INSERT INTO ledger.events (owner_id, type, seq, entry_id, app, payload, occurred_at, recorded_at)
            SELECT w.owner_id, 'entry.posted', w.seq, w.entry_id, w.app,
                   ledger._entry_payload(w.entry_id, w.owner_id, w.app, w.operation, w.amount, w.balance, w.seq,
                                         w.created_at, w.idempotency_key, w.metadata, NULL, NULL, NULL),
                   v_at, v_at
            FROM written w
        ), made AS (
            INSERT INTO ledger.grants
                (owner_id, entry_id, seq, app, operation, amount, remaining, priority, expires_at, created_at)
            SELECT w.owner_id, w.entry_id, w.seq, w.app, w.operation, w.amount, w.amount, it.priority,
                   it.expires_at, v_at
            FROM written w
            JOIN items it ON it.owner_id = w.owner_id AND it.seq = w.seq
            WHERE w.amount > 0
        ), accounts AS (
            UPDATE ledger.accounts a
            SET balance = (a.balance + s.total)::bigint, last_seq = s.last_seq, updated_at = v_at,
                next_expiry = CASE WHEN s.next_expiry IS NULL THEN a.next_expiry
                                   ELSE least(a.next_expiry, s.next_expiry) END
            FROM (SELECT it.owner_id, sum(it.amount) AS total, max(it.seq) AS last_seq,
                         min(it.expires_at) FILTER (WHERE it.amount > 0) AS next_expiry
                  FROM items it WHERE it.status = 'write' GROUP BY it.owner_id) s
            WHERE a.owner_id = s.owner_id
        )
        SELECT array_agg(coalesce(w.entry_id, p.entry_id) ORDER BY it.ord),
               array_agg(coalesce(w.owner_id, p.owner_id) ORDER BY it.ord),
               array_agg(coalesce(w.app, p.app) ORDER BY it.ord),
               array_agg(coalesce(w.operation, p.operation) ORDER BY it.ord),
               array_agg(coalesce(w.amount, p.amount) ORDER BY it.ord),
               array_agg(coalesce(w.balance, p.balance) ORDER BY it.ord),
               array_agg(coalesce(w.created_at, p.created_at) ORDER BY it.ord),
               array_agg(it.status <> 'write' ORDER BY it.ord),
               array_agg(CASE WHEN it.status = 'write' THEN w.seq END ORDER BY it.ord)
        INTO r_entry, r_owner, r_app, r_operation, r_amount, r_balance, r_created, r_replayed, r_seq
        FROM items it
        -- A repeat inside the batch returns the entry its key's first item wrote.
        LEFT JOIN written w ON w.owner_id = it.owner_id AND w.app = it.app AND w.idempotency_key = it.idempotency_key
        LEFT JOIN (SELECT DISTINCT * FROM replayed) p ON p.owner_id = it.owner_id AND p.entry_id = it.prior;

        FOR v_i IN 1 .. v_count LOOP
            IF r_seq[v_i] IS NOT NULL AND r_amount[v_i] < 0 THEN
                PERFORM ledger._spend(r_owner[v_i], r_entry[v_i], r_seq[v_i], -r_amount[v_i], v_at);
            END IF;
        END LOOP;
        IF v_before IS NOT NULL THEN
            FOR v_i IN 1 .. cardinality(v_locked) LOOP
                PERFORM ledger._balance_alerts(v_locked[v_i], v_before[v_i],
                                               ledger._stored_available(v_locked[v_i]), v_at);
            END LOOP;
        END IF;
        RETURN QUERY
            SELECT t.entry_id, t.owner_id, t.app, t.operation, t.amount, t.balance, t.created_at, t.replayed
            FROM unnest(r_entry, r_owner, r_app, r_operation, r_amount, r_balance, r_created, r_replayed)
                 WITH ORDINALITY AS t(entry_id, owner_id, app, operation, amount, balance, created_at, replayed, o)
            ORDER BY t.o;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT,
                                v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT,
                                v_cons = CONSTRAINT_NAME;
        IF v_phase = 'validate' THEN
            -- Which item? Check them one by one, in input order.
            PERFORM ledger._batch_first_invalid(p_entries, p_key);
        ELSIF v_phase = 'write' AND v_state = '23505' AND v_cons = 'entries_owner_app_idempotency_key' THEN
            -- Not expected (every writer of a key holds its owner's lock while
            -- it looks at it), but should a key have been written meanwhile,
            -- the first such item is a key conflict, never a unique violation.
            SELECT t.ord::integer - 1 INTO v_blame
            FROM unnest(v_owner, v_app, v_key, v_status) WITH ORDINALITY AS t(owner_id, app, idempotency_key, status, ord)
            WHERE t.status = 'write'
              AND EXISTS (SELECT 1 FROM ledger.entries e
                          WHERE e.owner_id = t.owner_id AND e.app = t.app AND e.idempotency_key = t.idempotency_key)
            ORDER BY t.ord
            LIMIT 1;
            IF v_blame IS NOT NULL THEN
                BEGIN
                    PERFORM ledger._require_same_request(v_app[v_blame + 1], v_key[v_blame + 1], NULL,
                                                         v_fp[v_blame + 1]);
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT,
                                            v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
                END;
            END IF;
        END IF;
        IF v_blame IS NOT NULL AND v_state LIKE 'LG%' THEN
            PERFORM ledger._batch_error(v_blame, v_state, v_msg, v_detail, v_hint);
        END IF;
        RAISE;
    END;
END
$$;

DROP FUNCTION IF EXISTS ledger.post_entries(text);   -- it took no request key before
DROP FUNCTION IF EXISTS ledger.post_entries(jsonb);
-- entries is text so that malformed JSON, duplicate keys and \u0000 reach
-- the checks (guarantees: the COMMENT below).
CREATE OR REPLACE FUNCTION ledger.post_entries(entries text, idempotency_key text DEFAULT NULL)
RETURNS SETOF ledger.entry_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT * FROM ledger._post_entries(ledger._batch_json(post_entries.entries),
                                                    post_entries.idempotency_key);
END
$$;
COMMENT ON FUNCTION ledger.post_entries(text, text) IS $$
Posts a JSON array of 1 to 10,000 entries (objects keyed like post_entry's
parameters: owner_id, app, operation, idempotency_key, amount, metadata) in
one transaction, all or nothing, under post_entry's rules for every item.
Returns one row per item in input order; replayed = true for a key already
used by the same request, earlier or in the same batch (nothing written
for it). Locks the touched accounts in owner_id order, so two batches never
deadlock. With idempotency_key K, an item without a key of its own is keyed
'K:<index>' and carries the fingerprint of the whole batch: the same batch
under K replays every item, any other is LG005. Errors: LG007 for a batch
that is not a non-empty JSON array of at most 10,000 objects, an unknown
field, a key repeated in one JSON object or text the database cannot
store; per item the SQLSTATE post_entry raises, with "batch item <index>:"
in the message and "index" in the DETAIL (input errors for the lowest
index first, then ledger-state errors).$$;

CREATE OR REPLACE FUNCTION ledger.post_entries(entries jsonb, idempotency_key text DEFAULT NULL)
RETURNS SETOF ledger.entry_result
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT * FROM ledger._post_entries(post_entries.entries, post_entries.idempotency_key);
END
$$;
COMMENT ON FUNCTION ledger.post_entries(jsonb, text) IS $$
post_entries for callers that pass a jsonb value; the same guarantees. A
jsonb value has already kept only the last of a repeated key: send text to
have such a batch refused.$$;
