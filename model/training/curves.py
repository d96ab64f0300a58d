"""Training curves from ``log.jsonl``: mean loss per route over equal windows of steps, as a table."""

from __future__ import annotations

import json
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

LOSS_KEYS = ("lm", "gdino", "unipose", "sd", "ip2p", "tower")  # "tower": stage 0's count pre-training


def read_log(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def curve_table(path: str | Path, windows: int = 5, parts: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per window of steps, one column per loss that the log carries.

    Each cell is the mean of that loss over the logged steps of the window (``-`` where none).
    parts: also a column per part of each decoder's loss (``sd/diffusion``, ``gdino/loss_bbox`` …).
    """
    records = read_log(path)
    if not records:
        return ["steps"], []
    last = records[-1]["step"]
    keys = [k for k in LOSS_KEYS if any(k in r for r in records)]
    if parts:
        logged = dict.fromkeys(k for r in records for k in r if "/" in k)
        keys = [column for k in keys for column in (k, *(p for p in logged if p.startswith(f"{k}/")))]
    bounds = [round(last * i / windows) for i in range(windows + 1)]
    rows = []
    for low, high in pairwise(bounds):
        sums: dict[str, list[float]] = defaultdict(list)
        for record in records:
            if low < record["step"] <= high:
                for key in keys:
                    if key in record:
                        sums[key].append(record[key])
        rows.append([f"{low + 1}–{high}", *(f"{sum(v) / len(v):.3f}" if (v := sums[k]) else "-" for k in keys)])
    return ["steps", *keys], rows


def curve_markdown(path: str | Path, windows: int = 5, parts: bool = False) -> str:
    header, rows = curve_table(path, windows, parts)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
