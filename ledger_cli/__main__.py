"""`python -m ledger_cli ...` is the `ledger` command (e.g. `python -m ledger_cli migrate URL`)."""

from ledger_cli.cli import main

if __name__ == "__main__":
    main()
