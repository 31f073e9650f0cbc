"""`python -m ledger_py ...` is the `ledger` command (e.g. `python -m ledger_py migrate URL`)."""

from ledger_py.cli import main

if __name__ == "__main__":
    main()
