"""The benchmark plot: turn latency (p50 and p99, added over each configuration's baseline)
against the offered load, one line per configuration. Needs matplotlib (the `bench` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from bench.__main__ import Results


def plot(res: Results, path: Path) -> None:
    from bench.__main__ import LEVELS, _added, median
    from bench.configs import CONFIGURATIONS

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, key, title in ((axes[0], "p50", "added p50"), (axes[1], "p99", "added p99")):
        for config in CONFIGURATIONS:
            points = []
            for level in LEVELS:
                rows = res.latency.get((config.name, level), [])
                if rows:
                    rate = median([r["rate"] for r in rows])
                    points.append((rate, _added(res, config.name, level, key)))
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=config.label)
        ax.set_title(f"{title} latency vs load (50 % and 80 % of saturation)")
        ax.set_xlabel("offered load (turns/s)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("ms over the baseline (direct, or the VG simulator alone)")
    axes[1].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
