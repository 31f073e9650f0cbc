"""Driving pgbench: a custom script or a built-in one, `-M prepared`, with
per-transaction logs (`--log`) read back for the latency percentiles."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from bench.measure import Sample, sample_from_latencies
from ledger_cli.pgserver import find_program


@dataclass(frozen=True)
class Target:
    """Where pgbench connects (libpq environment variables)."""

    host: str
    port: int
    user: str
    dbname: str

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PGHOST=self.host, PGPORT=str(self.port), PGUSER=self.user, PGDATABASE=self.dbname
        )
        return env


class PgbenchFailed(RuntimeError):
    pass


def pgbench_program() -> str:
    return shutil.which("pgbench") or find_program("pgbench")


def initialize(target: Target, scale: int) -> None:
    """pgbench's own tables (pgbench_accounts, ...), for tpcb-like and select-only."""
    _run([pgbench_program(), "-i", "-q", "-s", str(scale)], target)


_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)


def run(
    target: Target,
    *,
    script: str | None = None,
    builtin: str | None = None,
    clients: int,
    threads: int,
    seconds: float,
    per_txn: int = 1,
) -> Sample:
    """One timed pgbench run. `per_txn` scales the rate when one transaction
    carries several units (the entries of a batch)."""
    if (script is None) == (builtin is None):
        raise ValueError("give a script or a builtin")
    threads = max(1, min(threads, clients))
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        args = [
            pgbench_program(),
            "-n",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            str(threads),
            "-T",
            str(max(1, round(seconds))),
            "--log",
            f"--log-prefix={tmp}/txn",
        ]
        if script is not None:
            path = os.path.join(tmp, "script.sql")
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(script)
            args += ["-f", path]
        else:
            args += ["-b", str(builtin)]
        out = _run(args, target)
        latencies: list[float] = []
        for log in glob.glob(f"{tmp}/txn.*"):
            with open(log, encoding="utf-8") as fh:
                for line in fh:
                    # client_id transaction_no time script_no time_epoch time_us
                    fields = line.split()
                    if len(fields) >= 3 and fields[2].isdigit():
                        latencies.append(int(fields[2]) / 1000.0)
    tps = _TPS.search(out)
    failed = _FAILED.search(out)
    rate = float(tps.group(1)) * per_txn if tps else None
    return sample_from_latencies(
        latencies,
        seconds,
        rate=rate,
        per_call=per_txn,
        errors=int(failed.group(1)) if failed else 0,
    )


def _run(args: list[str], target: Target) -> str:
    proc = subprocess.run(args, env=target.env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise PgbenchFailed(f"pgbench exited {proc.returncode}: {tail}")
    return proc.stdout
