"""PNG charts of the reports: titled, labelled, in %, written atomically (mode 0644 under umask 022).

Every chart is one function taking plain numbers (already in %) and an output path; matplotlib
is imported inside, with the non-interactive Agg backend. Bars carry their value as text, so a
zero bar reads "0.0" instead of looking missing.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trace_core.io import atomic_open

#: colours of the series, in order (colour-blind safe Okabe-Ito).
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")


@dataclass(frozen=True)
class Series:
    """One bar series: a name, a value per category (None: not measured) and optional intervals."""

    name: str
    values: Sequence[float | None]
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    _pyplot().close(fig)
    with atomic_open(path, "wb") as fh:
        fh.write(buf.getvalue())
    return path


def grouped_bars(
    categories: Sequence[str],
    series: Sequence[Series],
    out: Path,
    *,
    title: str,
    ylabel: str,
    chance: Sequence[float | None] | None = None,
    averages: bool = True,
) -> Path:
    """Grouped bars per category (values in %), value labels, per-series average lines, chance ticks.

    Args:
        categories: x labels (task labels as in the table).
        series: bar series; ``low``/``high`` draw error bars (e.g. a 95 % interval).
        out: PNG path.
        title: chart title.
        ylabel: y axis label (name the metric and the unit).
        chance: per-category chance level in % (a black tick over each group), or None.
        averages: draw each series' mean over its measured categories as a dashed line.
    """
    plt = _pyplot()
    n = len(categories)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.75 * n + 3), 5.2))
    width = 0.8 / max(len(series), 1)
    for i, s in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        xs = [j - 0.4 + width * (i + 0.5) for j in range(n)]
        vals = [0.0 if v is None else v for v in s.values]
        err = None
        if s.low is not None and s.high is not None:
            err = [[max(v - lo, 0.0) for v, lo in zip(vals, s.low, strict=True)]]
            err.append([max(hi - v, 0.0) for v, hi in zip(vals, s.high, strict=True)])
        ax.bar(xs, vals, width, label=s.name, color=colour, yerr=err, capsize=2 if err else 0)
        tops = s.high if s.high is not None else [v or 0.0 for v in s.values]
        size = 6.5 if len(series) < 3 else 5.0
        for x, v, top in zip(xs, s.values, tops, strict=True):
            label = "–" if v is None else f"{v:.0f}" if len(series) >= 3 else f"{v:.1f}"
            ax.text(x, max(top, v or 0.0) + 0.8, label, ha="center", va="bottom", fontsize=size)
        measured = [v for v in s.values if v is not None]
        if averages and measured:
            mean = sum(measured) / len(measured)
            ax.axhline(mean, color=colour, linestyle="--", linewidth=1, label=f"{s.name} average {mean:.1f}")
    if chance is not None:
        for j, c in enumerate(chance):
            legend = "chance (random ranking)" if j == 0 else None
            if c is not None:
                ax.hlines(c, j - 0.45, j + 0.45, colors="black", linewidth=1.5, label=legend)
    ax.set_xticks(range(n), categories, rotation=50, ha="right", fontsize=8)
    ax.set_xlabel("task")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 125)  # the band above 100 % holds the legend
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper center", ncol=4)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out)


def stacked_bars(
    categories: Sequence[str], parts: Mapping[str, Sequence[float]], out: Path, *, title: str, ylabel: str
) -> Path:
    """Stacked bars (values in %), e.g. the share of queries on each route per task."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(7.0, 0.75 * len(categories) + 3), 5.2))
    bottom = [0.0] * len(categories)
    for i, (name, vals) in enumerate(parts.items()):
        ax.bar(range(len(categories)), vals, 0.7, bottom=bottom, label=name, color=COLOURS[i % len(COLOURS)])
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_xticks(range(len(categories)), categories, rotation=50, ha="right", fontsize=8)
    ax.set_xlabel("task")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 115)  # the band above 100 % holds the legend
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper center", ncol=len(parts))
    fig.tight_layout()
    return save_figure(fig, out)


def read_curve(text: str) -> dict[str, list[tuple[float, float]]]:
    """Columns of a training-curve CSV as ``name -> [(step, value), ...]`` (empty cells skipped)."""
    series: dict[str, list[tuple[float, float]]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        step = float(row["step"])
        for name, cell in row.items():
            if name != "step" and cell not in ("", None):
                series.setdefault(name, []).append((step, float(cell)))
    return series


def training_curve(curve_csv: str, out: Path, *, k: int, chance: float | None = None) -> Path:
    """Two panels from ``reports/train/curve.csv``: the losses, and validation R@k in % with chance."""
    plt = _pyplot()
    series = read_curve(curve_csv)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, name in enumerate(n for n in ("loss", "loss_gen", "loss_ret", "loss_route") if n in series):
        steps, vals = zip(*series[name], strict=True)
        left.plot(steps, vals, marker=".", label=name, color=COLOURS[i])
    left.set_title("training loss (total, generation CE, InfoNCE, routing)", fontsize=10)
    left.set_xlabel("optimizer step")
    left.set_ylabel("loss")
    if left.lines:
        left.legend(fontsize=8)
    val = series.get(f"val_r{k}", [])
    if val:
        steps, vals = zip(*val, strict=True)
        right.plot(steps, [100 * v for v in vals], marker="o", color=COLOURS[2], label=f"validation R@{k}")
    if chance is not None:
        right.axhline(100 * chance, color="black", linestyle=":", label=f"chance {100 * chance:.1f}")
    right.set_title(f"validation R@{k} (held-out training queries, routed)", fontsize=10)
    right.set_xlabel("optimizer step")
    right.set_ylabel(f"R@{k} (%)")
    right.set_ylim(0, 105)
    if right.lines:
        right.legend(fontsize=8)
    fig.suptitle("TRACE training curve", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out)
