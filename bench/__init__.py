"""Benchmarks of the ledger against PostgreSQL doing the same physical work.

`python -m bench` (full) or `python -m bench --quick` (seconds, used by the
test suite). Every scenario runs on one throwaway server with fsync and
synchronous_commit on, in the same run as its baseline (README: Benchmarks).
"""
