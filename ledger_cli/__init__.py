"""ledger_cli: the operators' tools of the shared credit ledger.

The `ledger` command (`ledger_cli.cli`), the embedded PostgreSQL cluster it
runs when no LEDGER_DATABASE_URL is set (`ledger_cli.localdb`), and the safe
running of PostgreSQL's server programs, also as root (`ledger_cli.pgserver`,
used by the test harness and the benchmarks too).

This package sits on top of the others: it calls `ledger_py` and starts the
`web` application in gunicorn; neither of them imports it.
"""
