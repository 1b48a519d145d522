"""The prompt-robustness figure: per-template accuracies as one box per dataset (T0 paper Fig. 4).

Each box spans the quartiles of a dataset's template accuracies with the median marked, whiskers
to min/max (no outlier rule: with 5–15 prompts every prompt matters), and every template drawn
as a point over its box so single templates stay visible. When the run's datasets include T0's
held-out ones, each published model's figures sit beside the boxes (results.json "published"):
its mean over prompts as a dashed line and its median as a dotted one, across the boxes the
figure covers (ANLI's mean spans R1-R3), with the run's own mean as a black cross. Matplotlib's
Agg backend: no display.
"""
from __future__ import annotations

import io
import os
from typing import Mapping, Optional

import numpy as np

from t0_jax import storage

PLOT_FILE = "accuracy_boxplot.png"


def accuracy_boxplot(datasets: Mapping[str, dict], task_results: Mapping[str, dict],
                     path, title: str = "", published: Optional[dict] = None) -> str:
    """Write the box plot of `results["datasets"]` / `results["tasks"]` to `path` (PNG);
    `published` is results["published"] (percent figures), drawn beside the boxes."""
    import matplotlib  # noqa: PLC0415 - imported on use: costs ~0.5 s

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # noqa: PLC0415

    names = [n for n, d in datasets.items() if d.get("median") is not None]
    values = [[task_results[t]["accuracy"] for t in datasets[n]["tasks"]
               if task_results[t]["accuracy"] is not None] for n in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 2), 4.5))
    if names:
        ax.boxplot(values, whis=(0, 100), showfliers=False)
        for i, v in enumerate(values, start=1):
            jitter = np.linspace(-0.12, 0.12, len(v)) if len(v) > 1 else np.zeros(1)
            ax.scatter(i + jitter, v, s=12, alpha=0.7, zorder=3)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
        if published:
            _draw_published(ax, names, published)
    ax.set_ylabel("accuracy per prompt")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or "accuracy over prompts (median, quartiles, min-max)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    png = io.BytesIO()  # rendered in memory, written as one file or object (t0_jax.storage)
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    storage.write_bytes(path, png.getvalue())
    return os.fspath(path)


def _draw_published(ax, names: list, published: dict) -> None:
    """Published mean (dashed) / median (dotted) per model, and the run's own mean (x)."""
    colors = ("tab:red", "tab:blue", "tab:green", "tab:purple")
    position = {name: i for i, name in enumerate(names, start=1)}
    seen = set()
    for row in published["datasets"].values():
        xs = [position[label] for label in row["labels"] if label in position]
        if not xs:
            continue
        left, right = min(xs) - 0.4, max(xs) + 0.4
        if row["measured"]["mean"] is not None:
            ax.scatter([(left + right) / 2], [row["measured"]["mean"] / 100], marker="x",
                       color="black", zorder=4,
                       label=None if "yours" in seen else "your mean over prompts")
            seen.add("yours")
        for model, figure in row["published"].items():
            color = colors[published["models"].index(model) % len(colors)]
            for stat, style in (("mean", "--"), ("median", ":")):
                if figure.get(stat) is None:
                    continue
                label = f"{model} published {stat}"
                ax.hlines(figure[stat] / 100, left, right, colors=color,
                          linestyles=style, zorder=4, label=None if label in seen else label)
                seen.add(label)
    if seen:
        ax.legend(fontsize=7, loc="lower right")
