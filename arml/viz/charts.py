"""Plots of numbers, shared by every notebook: curves, scores with their spread, per-class bars, scatters.

Scores come as the notebooks store them: ``(mean, std)`` pairs or bare numbers, in percent, read by
:func:`arml.analysis.mean_std`. A score on our (often synthetic) data and the paper's score are never drawn
on one axis: the paper gets its own panel, since numbers on different data are not comparable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from arml.analysis import mean_std, rank_correlation
from arml.runtime import to_numpy


def curves_plot(
    x, series: dict[str, Sequence[float]], xlabel: str, ylabel: str, title: str | None = None
) -> Figure:
    """Plain line plot of several named series over the same ``x`` (markers on every point)."""
    fig = Figure(figsize=(5.2, 3.4), layout="constrained")
    ax = fig.subplots()
    for name, values in series.items():
        if len(values) != len(x):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(x)} x positions")
        ax.plot(x, values, marker="o", label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def score_plot(
    ours: dict[str, object],
    paper: dict[str, object] | None = None,
    ylabel: str = "test mIoU (%)",
    title: str | None = None,
    ours_title: str = "ours",
    paper_title: str = "paper",
) -> Figure:
    """Points with ±std error bars, one per row (``name → (mean, std)``, percent); the paper on its own.

    Points rather than bars: the axis zooms on the values (differences of a point or two are what matter),
    and a bar cut off above zero would exaggerate them. A std of 0 (one seed) draws no error bar.
    """
    sets = [(ours_title, ours)] + ([(paper_title, paper)] if paper is not None else [])
    n = max(len(v) for _, v in sets)
    fig = Figure(figsize=(min(3 + 0.7 * n, 7) * len(sets), 3.8), layout="constrained")
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
    for ax, (name, rows) in zip(axes, sets, strict=True):
        mean, std = np.array([mean_std(v) for v in rows.values()], dtype=float).reshape(-1, 2).T
        x = np.arange(len(rows))
        spread = np.isfinite(std) & (std > 0)
        ax.plot(x, mean, "o", color="tab:blue", markersize=7, zorder=3)
        if spread.any():
            ax.errorbar(x[spread], mean[spread], yerr=std[spread], fmt="none", ecolor="tab:blue", capsize=5)
        finite = np.isfinite(mean)
        if finite.any():
            err = np.where(spread, std, 0.0)
            low, high = (mean - err)[finite].min(), (mean + err)[finite].max()
            pad = max(high - low, 1.0) * 0.25
            ax.set_ylim(low - pad, high + pad)
        for i in np.flatnonzero(finite):  # the value, written beside its point
            ax.annotate(
                f"{mean[i]:.1f}",
                (x[i], mean[i]),
                xytext=(7, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
            )
        ax.set_xlim(-0.5, len(rows) - 0.5)
        ax.set_xticks(x, list(rows), rotation=20, ha="right")
        ax.set(ylabel=ylabel, title=name)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def sweep_plot(
    labels: Sequence[str],
    ours: Sequence,
    baseline=None,
    paper: Sequence | None = None,
    paper_baseline=None,
    baseline_label: str = "N/A",
    xlabel: str = "ω",
    ylabel: str = "test mIoU (%)",
    title: str | None = None,
    ours_title: str = "ours",
    paper_title: str = "paper",
) -> Figure:
    """A score against a swept setting, with std error bars; the 'off' setting as a dashed line and band.

    The defaults describe the ω sweep of SWV (paper Table 3, notebook 04); any other sweep works the same.

    Args:
        labels: the swept values as tick labels (equally spaced, so "∞" can sit at the end).
        ours: per label, ``(mean, std)`` or a number (percent).
        baseline: ``(mean, std)`` of the run without the component (e.g. no SWV), or None.
        paper, paper_baseline: the paper's values in the same form; drawn in a second panel, since
            scores on other data are not comparable.
        baseline_label: legend text of the baseline.
    """
    sets = [(ours_title, ours, baseline)] + (
        [(paper_title, paper, paper_baseline)] if paper is not None else []
    )
    fig = Figure(figsize=(4.6 * len(sets), 3.4), layout="constrained")
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
    x = np.arange(len(labels))
    for ax, (name, values, base) in zip(axes, sets, strict=True):
        if len(values) != len(labels):
            raise ValueError(f"{name}: {len(values)} values for {len(labels)} labels")
        mean, std = np.array([mean_std(v) for v in values]).T
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=4, color="tab:blue", label=name)
        if base is not None:
            b, s = mean_std(base)
            ax.axhline(b, color="tab:red", linestyle="--", label=baseline_label)
            ax.axhspan(b - s, b + s, color="tab:red", alpha=0.12, linewidth=0)
        ax.set_xticks(x, labels)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def per_class_bars(
    rows: dict[str, tuple[Sequence, Sequence | None]],
    class_names: Sequence[str],
    ylabel: str = "test IoU (%)",
    title: str | None = None,
) -> Figure:
    """Grouped bars: per class, one bar per row (``name → (means, stds or None)`` in percent)."""
    fig = Figure(figsize=(7.5, 3.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(rows), 1)
    x = np.arange(len(class_names))
    for i, (name, (means, stds)) in enumerate(rows.items()):
        if len(means) != len(class_names):
            raise ValueError(f"row {name!r} has {len(means)} values for {len(class_names)} classes")
        m = np.array([np.nan if v is None else v for v in means], dtype=float)
        s = None if stds is None else np.array([0.0 if v is None else v for v in stds], dtype=float)
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, m, width, yerr=s, capsize=2, label=name)
    ax.set_xticks(x, list(class_names))
    ax.set(xlabel="class", ylabel=ylabel)
    ax.grid(axis="y", alpha=0.3)
    # Below the axes, so that no bar is hidden behind it
    ax.legend(
        fontsize=8, ncol=min(len(rows), 6), loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False
    )
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def scatter_plot(
    series: dict[str, tuple[object, object]], xlabel: str, ylabel: str, title: str | None = None
) -> Figure:
    """Scatter plots of named ``(x, y)`` samples side by side, each titled with its Spearman rank correlation
    (:func:`arml.analysis.rank_correlation`)."""
    if not series:
        raise ValueError("scatter_plot needs at least one series")
    fig = Figure(figsize=(3.9 * len(series), 3.4), layout="constrained")
    axes = fig.subplots(1, len(series), squeeze=False)[0]
    for ax, (name, (x, y)) in zip(axes, series.items(), strict=True):
        x, y = to_numpy(x).astype(np.float64).ravel(), to_numpy(y).astype(np.float64).ravel()
        try:
            rho = rank_correlation(x, y)
        except ValueError as err:
            raise ValueError(f"series {name!r}: {err}") from err
        ax.scatter(x, y, s=4, alpha=0.4, linewidths=0)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{name} (Spearman ρ = {rho:.2f})")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
