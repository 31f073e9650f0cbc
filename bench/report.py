"""The results: one JSON document, a Markdown table and a PNG chart of the
ratios, each carrying the machine and the server settings."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bench.measure import median_of
from bench.scenarios import (
    DIAGNOSTIC_RATIOS,
    HTTP_WORKER_RSS_MB,
    LATENCY_TARGETS,
    RATE_TARGETS,
    Scenario,
)

SCHEMA_VERSION = 1


def build(
    *,
    plan_info: dict[str, Any],
    machine: dict[str, Any],
    settings: dict[str, str],
    scenarios: list[Scenario],
    extra: dict[str, Any],
) -> dict[str, Any]:
    by_key: dict[str, dict[str, Any]] = {}
    for sc in scenarios:
        status = (
            "skipped" if sc.skip else "error" if sc.error else "ok" if sc.samples else "skipped"
        )
        entry: dict[str, Any] = {
            "title": sc.title,
            "driver": sc.driver,
            "clients": sc.clients,
            "unit": sc.unit,
            "status": status,
            "note": sc.skip or sc.error or sc.note,
            "runs": [dict(s.as_dict(), **w) for s, w in zip(sc.samples, sc.wal, strict=True)]
            if len(sc.wal) == len(sc.samples)
            else [s.as_dict() for s in sc.samples],
            "rate": None,
            "p50_ms": None,
            "p99_ms": None,
        }
        if sc.samples:
            med = median_of(sc.samples)
            entry.update({k: (round(v, 3) if v is not None else None) for k, v in med.items()})
            entry["errors"] = sum(s.errors for s in sc.samples)
        if sc.wal:
            entry["wal_bytes_per_unit"] = statistics.median(w["wal_bytes_per_unit"] for w in sc.wal)
            entry["fpi_per_unit"] = statistics.median(w["fpi_per_unit"] for w in sc.wal)
            entry["checkpoints_during_runs"] = sum(int(w["checkpoints"]) for w in sc.wal)
        for key, value in sc.extra.items():
            if not callable(value):
                entry[key] = value
        by_key[sc.key] = entry

    targets: list[dict[str, Any]] = []
    diagnostics: list[dict[str, Any]] = []
    rows = plan_info.get("growth_rows")
    for rt in RATE_TARGETS + DIAGNOSTIC_RATIOS:
        diagnostic = rt in DIAGNOSTIC_RATIOS
        num, den = by_key.get(rt.numerator), by_key.get(rt.denominator)
        value = None
        why_missing = None
        per_round: list[float] = []
        if not num or not den:
            why_missing = "not run in this mode"
        elif num["rate"] is None or den["rate"] is None:
            missing = num if num["rate"] is None else den
            why_missing = f"{missing['title']}: {missing['note'] or missing['status']}"
        elif len(num["runs"]) == len(den["runs"]) and all(r["rate"] > 0 for r in den["runs"]):
            # Both ran once per round, close in time: the ratio within each
            # round cancels the drift of a shared machine; report their median.
            pairs = zip(num["runs"], den["runs"], strict=True)
            per_round = [a["rate"] / b["rate"] for a, b in pairs]
            value = statistics.median(per_round)
        elif den["rate"] > 0:
            value = num["rate"] / den["rate"]
        title = rt.title
        if rows and rows != 5_000_000:
            title = title.replace("5M", f"{rows:,}")
        (diagnostics if diagnostic else targets).append(
            {
                "title": title,
                "kind": "ratio",
                "numerator": rt.numerator,
                "denominator": rt.denominator,
                "value": round(value, 3) if value is not None else None,
                "per_round": [round(x, 3) for x in per_round],
                "target": f">= {rt.minimum:g}",
                "threshold": rt.minimum,
                "pass": (value >= rt.minimum) if value is not None else None,
                "note": why_missing
                or "; ".join(
                    x
                    for x in (
                        rt.why,
                        rt.if_missed
                        if value is not None and value < rt.minimum and not diagnostic
                        else "",
                    )
                    if x
                )
                or None,
            }
        )
    for lt in LATENCY_TARGETS:
        sc = by_key.get(lt.scenario)
        p99 = sc["p99_ms"] if sc else None
        targets.append(
            {
                "title": lt.title.replace("5M", f"{rows:,}")
                if rows and rows != 5_000_000
                else lt.title,
                "kind": "latency_ms",
                "scenario": lt.scenario,
                "value": p99,
                "target": f"<= {lt.maximum_ms:g} ms",
                "threshold": lt.maximum_ms,
                "pass": (p99 <= lt.maximum_ms) if p99 is not None else None,
                "note": None if sc else "not run in this mode",
            }
        )
    http = by_key.get("http_post_ledger")
    rss = http.get("worker_rss_mb") if http else None
    targets.append(
        {
            "title": "HTTP worker memory after the run (largest worker)",
            "kind": "memory_mb",
            "scenario": "http_post_ledger",
            "value": max(rss) if rss else None,
            "target": f"< {HTTP_WORKER_RSS_MB:g} MB",
            "threshold": HTTP_WORKER_RSS_MB,
            "pass": (max(rss) < HTTP_WORKER_RSS_MB) if rss else None,
            "note": None if rss else "HTTP scenario not run",
        }
    )
    return {
        "schema_version": SCHEMA_VERSION,
        **extra,
        "plan": plan_info,
        "machine": machine,
        "server_settings": settings,
        "scenarios": by_key,
        "targets": targets,
        "diagnostics": [
            {k: v for k, v in d.items() if k not in ("target", "threshold", "pass")}
            for d in diagnostics
        ],
    }


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _verdict(passed: bool | None) -> str:
    return "PASS" if passed is True else "FAIL" if passed is False else "n/a"


def markdown(results: dict[str, Any]) -> str:
    plan, machine, settings = results["plan"], results["machine"], results["server_settings"]
    lines = [
        f"# Ledger benchmark ({plan['mode']}, {results.get('generated_at', '')})",
        "",
        f"Median of {plan['runs']} run(s) of {plan['seconds_per_run']:g} s; "
        f"{plan['clients']} clients unless stated; pgbench `-M prepared "
        f"-j {plan['pgbench_threads']}`, scale {plan['pgbench_scale']}. "
        f"Load average before/after: {results.get('load_average_before')} / "
        f"{results.get('load_average_after')}.",
        "",
        f"**Machine**: {machine.get('cores')} cores, {machine.get('cpu', '?')}, "
        f"{machine.get('memory_gb', '?')} GB, {machine.get('platform')}.  ",
        f"**Server**: {settings.get('version', '?')}.  ",
        "**Settings**: "
        + ", ".join(f"{k}={v}" for k, v in settings.items() if k != "version")
        + ".",
        "",
        "## Targets",
        "",
        "A ratio is the median of the ratios measured within each round (both sides ran",
        "minutes apart at most), which cancels most of the drift of a shared machine.",
        "",
        "| ratio | measured | target | verdict | per round | note |",
        "|---|---:|---|---|---|---|",
    ]
    for t in results["targets"]:
        digits = 3 if t["kind"] == "ratio" else 2 if t["kind"] != "memory_mb" else 1
        rounds = ", ".join(f"{x:.2f}" for x in t.get("per_round", []))
        lines.append(
            f"| {t['title']} | {_fmt(t['value'], digits)} | {t['target']} | "
            f"{_verdict(t['pass'])} | {rounds} | {t['note'] or ''} |"
        )
    if results.get("diagnostics"):
        lines += [
            "",
            "Diagnostic ratios (no target): where the distance to a target comes from.",
            "",
            "| ratio | measured | per round | note |",
            "|---|---:|---|---|",
        ]
        for d in results["diagnostics"]:
            rounds = ", ".join(f"{x:.2f}" for x in d.get("per_round", []))
            lines.append(f"| {d['title']} | {_fmt(d['value'], 2)} | {rounds} | {d['note'] or ''} |")
    lines += [
        "",
        "## Scenarios",
        "",
        "| scenario | clients | rate | unit | p50 ms | p99 ms | WAL B/unit | FPI/unit | runs "
        "| note |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for key, sc in results["scenarios"].items():
        runs = ", ".join(_fmt(r["rate"], 0) for r in sc["runs"]) if sc["runs"] else sc["status"]
        note = sc["note"] or ""
        if sc.get("worker_rss_mb"):
            note += f" worker RSS {sc['worker_rss_mb']} MB"
        if sc.get("errors"):
            note += f" ({sc['errors']} errors)"
        if sc.get("checkpoints_during_runs"):
            note += f" ({sc['checkpoints_during_runs']} checkpoint(s) during its runs)"
        lines.append(
            f"| `{key}`: {sc['title']} | {sc['clients']} | {_fmt(sc['rate'])} | {sc['unit']} | "
            f"{_fmt(sc['p50_ms'], 2)} | {_fmt(sc['p99_ms'], 2)} | "
            f"{_fmt(sc.get('wal_bytes_per_unit'), 0)} | {_fmt(sc.get('fpi_per_unit'), 3)} | "
            f"{runs} | {note.strip()} |"
        )
    if results.get("growth_setup"):
        lines += ["", f"Growth setup: {results['growth_setup']}."]
    lines += [
        "",
        f"All clients connect as {results.get('connect_as', '?')}. "
        "Figures of one machine at one moment: compare ratios, not absolute numbers.",
    ]
    return "\n".join(lines) + "\n"


def chart(results: dict[str, Any], path: Path) -> bool:
    """Each target as a bar of measured/target (1.0 = just met); False when
    matplotlib is not installed (`pip install -e .[bench]`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [t for t in results["targets"] if t["value"] is not None and t["threshold"]]
    fig, ax = plt.subplots(figsize=(10, 0.5 * max(len(rows), 1) + 1.6))
    labels, scores, colors, texts = [], [], [], []
    for t in rows:
        # Higher is better for ratios; lower is better for latency and memory.
        score = (
            t["value"] / t["threshold"]
            if t["kind"] == "ratio"
            else t["threshold"] / max(t["value"], 1e-9)
        )
        labels.append(t["title"])
        scores.append(score)
        colors.append("#2e7d32" if t["pass"] else "#c62828")
        unit = " ms" if t["kind"] == "latency_ms" else " MB" if t["kind"] == "memory_mb" else ""
        texts.append(f"{t['value']:.2f}{unit} (target {t['target']})")
    y = list(range(len(rows)))
    ax.barh(y, scores, color=colors)
    ax.axvline(1.0, color="black", linewidth=1, linestyle="--")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    for i, text in enumerate(texts):
        ax.text(max(scores[i], 1.0), i, "  " + text, va="center", fontsize=7)
    ax.set_xlim(0, max([*scores, 1.0]) * 1.6)
    ax.set_xlabel("measured / target (right of the dashed line: target met)")
    machine, settings = results["machine"], results["server_settings"]
    ax.set_title(
        f"Ledger vs PostgreSQL doing the same work ({results['plan']['mode']}, "
        f"{results.get('generated_at', '')})\n{machine.get('cores')} cores, "
        f"PostgreSQL {str(settings.get('server_version', '?')).split()[0]}, "
        f"fsync={settings.get('fsync')}, "
        f"synchronous_commit={settings.get('synchronous_commit')}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(results: dict[str, Any], folder: Path, stem: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"{stem}.json"
    md_path = folder / f"{stem}.md"
    png_path = folder / f"{stem}.png"
    results = dict(results, chart=png_path.name)
    if not chart(results, png_path):
        results["chart"] = None
        results["chart_note"] = "matplotlib not installed: pip install -e '.[bench]'"
    json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    md = markdown(results)
    if results["chart"]:
        md += f"\n![ratios]({png_path.name})\n"
    md_path.write_text(md, encoding="utf-8")
    return [p for p in (json_path, md_path, png_path) if p.exists()]
