"""The Citus fixtures (`citus_cluster`, `citus_template_url`) live in
tests/conftest.py: the SQL contract tests (tests/sql/conftest.py) run on the
cluster too.
"""
