"""The operators' console at /console: server-rendered pages (Jinja), charts as
SVG drawn here, one stylesheet served by the app, no script.

It holds no rule of the ledger. Every page is a few ledger_py reads; every
correction is one call of an operator function (sql/85_operators.sql), which
acts through the apps' own write functions and records who and why.

Who may do what is decided twice, the second time by the database:

- a person signs in with a console user (`ledger console add-user`); the
  session is a signed cookie (HttpOnly, SameSite=Strict) that carries the
  user, its role and a random CSRF token, and ends 8 hours after sign-in;
  app API keys are never looked at here;
- every request re-reads the user (a removed user or a changed role ends
  the session) and runs its statements in one transaction under one
  database role chosen by the user's console role (SET LOCAL ROLE): pages
  read as ledger_reader, an operator's correction runs as ledger_operator.
  A viewer's request never runs as ledger_operator, so even a bug in this
  module could not make a viewer's request correct the ledger: the database
  refuses the call.

The web service's database login must therefore be a member of
ledger_reader, ledger_operator and ledger_console (README, "The operators'
console"); the roles are settings (LEDGER_CONSOLE_READ_ROLE, ..._WRITE_ROLE,
..._AUTH_ROLE) for a deployment that gives them other names.
"""

from __future__ import annotations

from web.console.views import bp, register

__all__ = ["bp", "register"]
