"""The benchmark server: a throwaway PostgreSQL with durable commits, and a
description of it (settings, version, machine) printed beside every figure."""

from __future__ import annotations

import os
import platform
from typing import Any

import psycopg

from ledger_cli.pgserver import throwaway_server

# fsync and synchronous_commit stay ON (the defaults): a benchmark of a ledger
# measures durable commits. The rest keeps checkpoints out of the measured
# windows and gives the working set room, as a production server would.
SERVER_SETTINGS = {
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "1GB",
    "max_wal_size": "8GB",
    "min_wal_size": "1GB",
    "checkpoint_timeout": "30min",
    "wal_compression": "off",
    "max_connections": "200",
}

# What the report prints beside the figures.
REPORTED_SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "wal_sync_method",
    "wal_buffers",
    "wal_compression",
    "commit_delay",
    "max_wal_size",
    "checkpoint_timeout",
    "shared_buffers",
    "work_mem",
    "effective_cache_size",
    "max_connections",
    "jit",
)


def start_server() -> Any:
    """A running throwaway server (testing.postgresql object) with fsync on."""
    return throwaway_server(fsync=True, settings=SERVER_SETTINGS)


def server_settings(url: str) -> dict[str, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s) ORDER BY name",
            (list(REPORTED_SETTINGS),),
        ).fetchall()
        version = conn.execute("SELECT version()").fetchone()
    settings: dict[str, str] = {}
    for name, setting, unit in rows:
        settings[name] = _pretty(setting, unit)
    if version:
        settings["version"] = str(version[0])
    if settings.get("fsync") != "on" or settings.get("synchronous_commit") != "on":
        raise RuntimeError(f"benchmark server is not durable: {settings}")
    return settings


def _pretty(setting: str, unit: str | None) -> str:
    """8kB-page and kB settings shown in MB, as people read them."""
    if unit in ("8kB", "kB") and setting.lstrip("-").isdigit():
        kb = int(setting) * (8 if unit == "8kB" else 1)
        if kb >= 1024 and kb % 1024 == 0:
            return f"{kb // 1024}MB"
        return f"{kb}kB"
    if unit in ("MB", "s", "ms", "min") and setting.lstrip("-").isdigit():
        return f"{setting}{unit}"
    return setting


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    info["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                    break
    except OSError:
        pass
    return info


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
