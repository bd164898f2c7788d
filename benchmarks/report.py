"""The report: medians, ratios to the naive FastAPI baseline and to the best peer, a rich
table and JSON."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.runner import Row
from benchmarks.servers import BASELINE, PEER_NAMES

# Figures worth a ratio to the baseline (value / baseline's value).
RATIO_KEYS = (
    "deliveries_per_s",
    "p50_ms",
    "p99_ms",
    "server_cpu_pct",
    "rss_per_conn_kib",
    "server_rss_mib",
)


def ratios(rows: list[Row]) -> dict[tuple[str, str], dict[str, float]]:
    """(scenario, target) → {figure: value / the FastAPI baseline's value}."""
    baselines = {r.scenario: r.median() for r in rows if r.target == BASELINE and r.samples}
    out: dict[tuple[str, str], dict[str, float]] = {}
    for row in rows:
        base = baselines.get(row.scenario)
        if base is None or not row.samples:
            continue
        median = row.median()
        out[row.scenario, row.target] = {
            key: median[key] / base[key]
            for key in RATIO_KEYS
            if key in median and base.get(key, 0) > 0
        }
    return out


def best_peer_ratios(rows: list[Row]) -> dict[tuple[str, str], tuple[str, float]]:
    """(scenario, target) → (the best peer, headline / that peer's headline), for rows
    that are not peers. "Best" is the highest figure where higher is better, else the
    lowest: the S2 and S3 targets are ratios to it."""
    best: dict[str, tuple[str, float]] = {}
    for row in rows:
        value = row.median().get(row.metric) if row.samples else None
        if row.target not in PEER_NAMES or not value:
            continue
        held = best.get(row.scenario)
        if held is None or (value > held[1] if row.higher_is_better else value < held[1]):
            best[row.scenario] = (row.target, value)
    out: dict[tuple[str, str], tuple[str, float]] = {}
    for row in rows:
        if row.target in PEER_NAMES or not row.samples or row.scenario not in best:
            continue
        value = row.median().get(row.metric)
        if value is not None:
            peer, peer_value = best[row.scenario]
            out[row.scenario, row.target] = (peer, value / peer_value)
    return out


def document(rows: list[Row], settings: dict[str, Any]) -> dict[str, Any]:
    ratio_map = ratios(rows)
    best_map = best_peer_ratios(rows)
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "affinity": sorted(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": settings,
        "baseline": BASELINE,
        "results": [
            {
                "scenario": row.scenario,
                "server": row.target,
                "metric": row.metric,
                "higher_is_better": row.higher_is_better,
                "median": row.median(),
                f"ratio_to_{BASELINE}": ratio_map.get((row.scenario, row.target), {}),
                "ratio_to_best_peer": _best_entry(best_map.get((row.scenario, row.target))),
                "reps": row.samples,
                "error": row.error,
            }
            for row in rows
        ],
    }


def _best_entry(entry: tuple[str, float] | None) -> dict[str, Any] | None:
    return None if entry is None else {"peer": entry[0], "ratio": entry[1]}


def write_json(doc: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{datetime.now():%Y-%m-%d-%H%M%S}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


UNITS = {
    "deliveries_per_s": "deliveries/s",
    "p99_ms": "ms p99",
    "rss_per_conn_kib": "KiB/conn",
    "acked_per_s": "acks/s",
    "first_token_p99_ms": "ms 1st-token p99",
}


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}{unit}"
    return f"{value:.3g}{unit}" if abs(value) < 10 else f"{value:.1f}{unit}"


def print_table(rows: list[Row], console: Console | None = None) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=max(console.width, 150))
    ratio_map = ratios(rows)
    best_map = best_peer_ratios(rows)
    table = Table(title="Tidings benchmarks (ratios measured in the same run)")
    columns = ("Scenario", "Server", "Headline", f"vs {BASELINE}", "vs best peer")
    for name in (*columns, "p50 ms", "p99 ms"):
        table.add_column(name, justify="left" if name in ("Scenario", "Server") else "right")
    for name in ("CPU %", "RSS MiB", "Notes"):
        table.add_column(name, justify="right" if name != "Notes" else "left")
    for row in rows:
        if not row.samples:
            table.add_row(
                row.scenario, row.target, "error", "", "", "", "", "", "", row.error or ""
            )
            continue
        m = row.median()
        ratio = ratio_map.get((row.scenario, row.target), {}).get(row.metric)
        best = best_map.get((row.scenario, row.target))
        p50 = m.get("p50_ms", m.get("ack_p50_ms", m.get("first_token_p50_ms")))
        p99 = m.get("p99_ms", m.get("ack_p99_ms", m.get("first_token_p99_ms")))
        notes = []
        for key in ("missing", "connect_failures", "connections_lost", "errors"):
            if m.get(key):
                notes.append(f"{key}={m[key]:.0f}")
        if row.scenario == "S7":
            notes.append(
                f"gap p99 {_fmt(m.get('token_gap_p99_ms'))} ms, "
                f"ack {_fmt(m.get('ack_no_agent_p99_ms'))}→{_fmt(m.get('ack_agent_p99_ms'))} ms p99"
            )
        if len(row.samples) > 1:
            notes.append(f"median of {len(row.samples)}")
        if row.error:
            notes.append(row.error[:60])
        table.add_row(
            row.scenario,
            row.target,
            f"{_fmt(m.get(row.metric))} {UNITS.get(row.metric, row.metric)}",
            _fmt(ratio, "x") if ratio is not None else "",
            f"{_fmt(best[1], 'x')} {best[0]}" if best is not None else "",
            _fmt(p50),
            _fmt(p99),
            _fmt(m.get("server_cpu_pct")),
            _fmt(m.get("server_rss_mib")),
            "; ".join(notes),
        )
    console.print(table)
