"""``python -m benchmarks plot results.json``: one PNG bar chart per workload."""

from __future__ import annotations

import json
import os
from typing import Any


def plot(path: str, out_dir: str | None = None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(path) as f:
        report = json.load(f)
    out_dir = out_dir or os.path.dirname(os.path.abspath(path))
    written = []
    results: dict[str, Any] = report["results"]
    for w in ("W1", "W2", "W3", "W4", "W5", "M1"):
        rows = [(e, r[w]) for e, r in results.items() if isinstance(r.get(w), dict) and r[w].get("value") is not None]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(7, 3.5))
        names = [e for e, _ in rows]
        values = [r["value"] for _, r in rows]
        lo = [r["value"] - r.get("min", r["value"]) for _, r in rows]
        hi = [r.get("max", r["value"]) - r["value"] for _, r in rows]
        colors = ["#d9480f" if e == "burla" else "#868e96" for e in names]
        ax.bar(names, values, yerr=[lo, hi], color=colors, capsize=3)
        unit = rows[0][1].get("unit", "")
        better = rows[0][1].get("better", "")
        ax.set_title(f"{w} ({unit}, {better} is better) — {report['machine']['cpus']} CPUs")
        if w in ("W1", "W2") and max(values) / max(min(values), 1e-9) > 50:
            ax.set_yscale("log")
        fig.tight_layout()
        png = os.path.join(out_dir, f"{w}.png")
        fig.savefig(png, dpi=100)
        plt.close(fig)
        written.append(png)
    return written
