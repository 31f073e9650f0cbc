def test_post_and_balance(conn):
    row = conn.execute(
        "SELECT * FROM ledger.post_entry(owner_id => 'alice', app => 'core', operation => 'CREDIT_ADD',"
        " idempotency_key => 'k1', amount => 25)"
    ).fetchone()
    assert row[5] == 25
    bal = conn.execute("SELECT * FROM ledger.get_balance('alice')").fetchone()
    assert bal[1:4] == (25, 0, 25)
