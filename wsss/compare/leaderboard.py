"""The leaderboard of a comparison: one row per entry, read from the entries' stage records.

Columns are declared in :data:`COLUMNS` (key, label, which way is better, how to read the value);
the best value of each scored column is marked. Written as ``leaderboard.md`` (best in bold),
``leaderboard.csv`` (raw values), ``leaderboard.json`` (rows, best entry per column, shared stages)
and ``leaderboard.png`` (grouped bars of the quality columns).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsss.io import atomic_write_json, atomic_write_text

Records = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Column:
    """``read(records, context) -> value or None``; ``better`` is ``"high"``, ``"low"`` or None (unscored)."""

    key: str
    label: str
    better: str | None
    read: Callable[[Records, dict[str, Any]], Any]
    digits: int = 2
    quality: bool = False


def _stage(name: str, key: str) -> Callable[[Records, dict[str, Any]], Any]:
    return lambda records, ctx: records.get(name, {}).get(key)


def _seg(key: str) -> Callable[[Records, dict[str, Any]], Any]:
    return lambda records, ctx: records.get(f"train_seg_{ctx['masks']}", {}).get(key)


def _cls_map(records: Records, ctx: dict[str, Any]) -> float | None:
    value = records.get("train_cls", {}).get("metrics", {}).get("val/mAP")
    return None if value is None else 100 * value


def _full_ratio(records: Records, ctx: dict[str, Any]) -> float | None:
    seg = records.get(f"train_seg_{ctx['masks']}", {}).get("miou")
    full = records.get("train_seg_gt", {}).get("miou") or ctx.get("full_miou")
    return seg / full if seg is not None and full and ctx["masks"] != "gt" else None


COLUMNS: list[Column] = [
    Column("cls_map", "cls mAP (val)", "high", _cls_map, quality=True),
    Column("seed_cam_miou", "seed CAM", "high", _stage("pseudo", "seed_cam_miou"), quality=True),
    Column("seed_cam_threshold", "seed thr", None, _stage("pseudo", "seed_cam_threshold")),
    Column("seed_cam_precision", "CAM fg prec", "high", _stage("pseudo", "seed_cam_precision")),
    Column("seed_cam_recall", "CAM fg recall", "high", _stage("pseudo", "seed_cam_recall")),
    Column("pseudo_miou", "pseudo", "high", _stage("pseudo", "pseudo_miou"), quality=True),
    Column("pseudo_crf_miou", "pseudo+CRF", "high", _stage("pseudo", "pseudo_crf_miou"), quality=True),
    Column("pseudo_par_miou", "pseudo+PAR", "high", _stage("pseudo", "pseudo_par_miou"), quality=True),
    Column("pseudo_rw_miou", "pseudo+RW", "high", _stage("pseudo_rw", "pseudo_rw_miou"), quality=True),
    Column("seg_miou", "segmenter (val)", "high", _seg("miou"), quality=True),
    Column("wsss_over_full", "WSSS/full", "high", _full_ratio, digits=3),
    Column("trainable_params", "params (M)", "low",
           lambda r, c: None if r.get("train_cls", {}).get("trainable_params") is None
           else r["train_cls"]["trainable_params"] / 1e6),
    Column("train_cls_seconds", "train-cls s", "low", _stage("train_cls", "seconds"), digits=0),
    Column("cams_seconds", "cams s", "low", _stage("cams", "seconds"), digits=0),
    Column("pseudo_seconds", "pseudo s", "low", _stage("pseudo", "seconds"), digits=0),
    Column("train_aff_seconds", "train-aff s", "low", _stage("train_aff", "seconds"), digits=0),
    Column("pseudo_rw_seconds", "random walk s", "low", _stage("pseudo_rw", "seconds"), digits=0),
    Column("train_seg_seconds", "train-seg s", "low", _seg("seconds"), digits=0),
    Column("peak_rss_mib", "peak RSS MiB", "low", lambda r, c: c.get("peak_rss_mib"), digits=0),
]


def build_rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows ``{"entry", <column key>: value, "shared": [...], "status", "reference"}`` from ``entries`` given as
    ``{"name", "records" (stages.json), "masks" (segmenter.masks name), "peak_rss_mib", "status"}``.

    A fully supervised entry (``segmenter.masks: gt``) gives every other entry its WSSS/full ratio
    when that entry has no fully supervised segmenter of its own."""
    full = [e["records"].get("train_seg_gt", {}).get("miou") for e in entries if e["masks"] == "gt"]
    full_miou = next((f for f in full if f is not None), None)
    rows = []
    for e in entries:
        ctx = {"masks": e["masks"], "full_miou": full_miou, "peak_rss_mib": e.get("peak_rss_mib")}
        row: dict[str, Any] = {"entry": e["name"]}
        for col in COLUMNS:
            value = col.read(e["records"], ctx)
            row[col.key] = None if value is None or (isinstance(value, float) and math.isnan(value)) else value
        row["shared"] = sorted(name for name, rec in e["records"].items() if rec.get("shared_from"))
        row["status"] = e.get("status", "done")
        row["reference"] = e["masks"] == "gt"
        rows.append(row)
    return rows


def best_entries(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """``{column key: [entries holding its best value]}`` for every scored column with a value; fully
    supervised entries are the reference, not competitors."""
    best = {}
    for col in COLUMNS:
        values = [(r[col.key], r["entry"]) for r in rows if r.get(col.key) is not None and not r.get("reference")]
        if col.better is None or not values:
            continue
        target = max(v for v, _ in values) if col.better == "high" else min(v for v, _ in values)
        best[col.key] = [name for v, name in values if v == target]
    return best


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(rows: list[dict[str, Any]], best: dict[str, list[str]]) -> str:
    """The leaderboard as a markdown table; best values in bold, shared stages listed last."""
    header = ["entry"] + [c.label for c in COLUMNS] + ["shared stages"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(COLUMNS) + ["---"]) + "|"]
    for row in rows:
        cells = [row["entry"] + (" (fully supervised)" if row.get("reference") else "")
                 + ("" if row["status"] == "done" else f" ({row['status']})")]
        for col in COLUMNS:
            text = _fmt(row.get(col.key), col.digits)
            cells.append(f"**{text}**" if row["entry"] in best.get(col.key, []) else text)
        cells.append(", ".join(row["shared"]) or "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_leaderboard(out: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Write ``leaderboard.{md,csv,json,png}`` into ``out``; returns the JSON content."""
    from wsss.viz.plots import plot_grouped_bars

    best = best_entries(rows)
    text = markdown(rows, best)
    atomic_write_text(out / "leaderboard.md", text)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["entry"] + [c.key for c in COLUMNS] + ["shared_stages", "status"])
    for row in rows:
        writer.writerow([row["entry"]] + ["" if row.get(c.key) is None else row[c.key] for c in COLUMNS]
                        + [" ".join(row["shared"]), row["status"]])
    atomic_write_text(out / "leaderboard.csv", buf.getvalue())
    data = {"columns": [{"key": c.key, "label": c.label, "better": c.better} for c in COLUMNS],
            "rows": rows, "best": best}
    atomic_write_json(out / "leaderboard.json", data)
    quality = [c for c in COLUMNS if c.quality]
    plot_grouped_bars([c.label for c in quality], {r["entry"]: [r.get(c.key) for c in quality] for r in rows},
                      out / "leaderboard.png", ylabel="percent", title="leaderboard")
    return {**data, "markdown": text}
