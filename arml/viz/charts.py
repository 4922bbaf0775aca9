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

_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_LINESTYLES = ("-", "--", "-.", ":")


def curves_plot(
    x, series: dict[str, Sequence[float]], xlabel: str, ylabel: str, title: str | None = None
) -> Figure:
    """Line plot of several named series over the same ``x``, each with its own marker and dash.

    Series that coincide stay visible: every series has a distinct marker and line style, later series are
    drawn thinner with smaller markers on top of earlier ones, and a series equal to an earlier one (within
    1e-9) is labelled "(= <earlier name>)" in the legend.
    """
    fig = Figure(figsize=(5.2, 3.4), layout="constrained")
    ax = fig.subplots()
    drawn: dict[str, np.ndarray] = {}
    for i, (name, values) in enumerate(series.items()):
        if len(values) != len(x):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(x)} x positions")
        arr = np.asarray(values, dtype=float)
        same = next(
            (n for n, v in drawn.items() if np.allclose(arr, v, rtol=0, atol=1e-9, equal_nan=True)), None
        )
        ax.plot(
            x,
            arr,
            marker=_MARKERS[i % len(_MARKERS)],
            linestyle=_LINESTYLES[i % len(_LINESTYLES)],
            markersize=max(7.5 - 1.5 * i, 3.0),
            linewidth=max(2.2 - 0.4 * i, 1.0),
            markerfacecolor="none" if i % 2 else None,
            label=name if same is None else f"{name} (= {same})",
            zorder=2 + i,
        )
        drawn[name] = arr
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


# Reference lines: distinct from the blue scores and the red dashed baseline of sweep_plot.
_REFERENCE_STYLES = (
    ("tab:green", (0, (4, 2))),
    ("tab:purple", "-."),
    ("tab:orange", ":"),
    ("tab:brown", (0, (8, 2, 2, 2))),
    ("tab:gray", (0, (1, 1))),
)


def _finite_values(values) -> np.ndarray:
    """The finite numbers of one group of per-seed scores (None and NaN skipped); a bare number is one."""
    if values is None:
        return np.zeros(0)
    values = [values] if np.isscalar(values) else list(values)
    arr = np.array([np.nan if v is None else v for v in values], dtype=float)
    return arr[np.isfinite(arr)]


def _jitter(k: int, width: float = 0.12) -> np.ndarray:
    """``k`` evenly spread horizontal offsets within ``width``, centred on 0 (deterministic jitter)."""
    return np.linspace(-width / 2, width / 2, k) if k > 1 else np.zeros(k)


def _draw_points(ax, x: np.ndarray, groups: list[np.ndarray], shift: float) -> None:
    """Per-seed values as small translucent dots, ``shift`` to the left of each mean, in one collection."""
    xs = [xi - shift + _jitter(len(g)) for xi, g in zip(x, groups, strict=True)]
    if any(len(g) for g in groups):
        ax.scatter(
            np.concatenate(xs),
            np.concatenate(groups),
            s=16,
            color="tab:blue",
            alpha=0.45,
            linewidths=0,
            zorder=2,
            label="per seed",
        )


def _draw_reference_lines(ax, reference_lines: dict[str, float]) -> list[float]:
    """Labelled horizontal lines (for the legend), each in its own colour and dash; returns their values."""
    values = []
    for i, (label, value) in enumerate(reference_lines.items()):
        if value is None or not np.isfinite(value):
            raise ValueError(f"reference line {label!r} needs a finite value, got {value!r}")
        color, dash = _REFERENCE_STYLES[i % len(_REFERENCE_STYLES)]
        ax.axhline(
            value, color=color, linestyle=dash, linewidth=1.3, zorder=1, label=f"{label} ({value:.1f})"
        )
        values.append(float(value))
    return values


def _mark_single_runs(ax, x: np.ndarray, mean: np.ndarray, single: np.ndarray) -> None:
    """Say where a value is one run, so that a missing error bar is not read as "no spread".

    Every finite value a single run (a one-seed notebook): one note in the corner, not one per point.
    """
    finite = np.isfinite(mean)
    if finite.sum() > 1 and single[finite].all():
        ax.text(
            0.02,
            0.02,
            "single runs: no error bars",
            transform=ax.transAxes,
            fontsize=7,
            color="0.35",
            style="italic",
        )
        return
    for i in np.flatnonzero(single & finite):
        ax.annotate(
            "single run",
            (x[i], mean[i]),
            xytext=(0, -8),
            textcoords="offset points",
            ha="center",
            va="top",
            fontsize=7,
            color="0.35",
            style="italic",
        )


def _single_runs(std: np.ndarray, groups: list[np.ndarray] | None) -> np.ndarray:
    """Which values are one run: one per-seed point where points are given, else a std of 0 (or none)."""
    no_spread = ~(np.isfinite(std) & (std > 0))
    if groups is None:
        return no_spread
    return np.array([len(g) == 1 if len(g) else flat for g, flat in zip(groups, no_spread, strict=True)])


def score_plot(
    ours: dict[str, object],
    paper: dict[str, object] | None = None,
    ylabel: str = "test mIoU (%)",
    title: str | None = None,
    ours_title: str = "ours",
    paper_title: str = "paper",
    points: dict[str, Sequence[float]] | None = None,
    reference_lines: dict[str, float] | None = None,
) -> Figure:
    """Points with ±std error bars, one per row (``name → (mean, std)``, percent); the paper on its own.

    Points rather than bars: the axis zooms on the values (differences of a point or two are what matter),
    and a bar cut off above zero would exaggerate them.

    Args:
        ours, paper: ``name → (mean, std)`` or a bare number (percent); the paper gets its own panel.
        points: optional per-seed values (percent) of rows of ``ours``, drawn as small dots beside the
            mean: with 2–3 seeds the dots say more than a std computed from them.
        reference_lines: optional ``label → value`` (percent) drawn as labelled horizontal lines on the
            "ours" panel, e.g. a floor such as "label only" on the same data (never a paper score: the
            paper's numbers are on other data and stay in their own panel).

    A row of ``ours`` that is a single run draws no error bar and says "single run" instead (one note
    for the panel when every row is): one seed has no spread to show, which is not the same as a spread of
    0. A row is a single run when ``points`` gives exactly one finite value for it or, without points, when
    its std is 0 or missing. The paper's rows are published summaries and are not labelled.
    """
    if points is not None and set(points) - set(ours):
        raise ValueError(f"points for rows not in ours: {sorted(set(points) - set(ours))}")
    sets = [(ours_title, ours)] + ([(paper_title, paper)] if paper is not None else [])
    n = max(len(v) for _, v in sets)
    fig = Figure(figsize=(min(3 + 0.7 * n, 7) * len(sets), 3.8), layout="constrained")
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
    for panel, (ax, (name, rows)) in enumerate(zip(axes, sets, strict=True)):
        mean, std = np.array([mean_std(v) for v in rows.values()], dtype=float).reshape(-1, 2).T
        x = np.arange(len(rows))
        spread = np.isfinite(std) & (std > 0)
        groups = [_finite_values(points.get(k)) for k in rows] if points and panel == 0 else None
        extra: list[float] = []  # further values the y-axis must show
        ax.plot(x, mean, "o", color="tab:blue", markersize=7, zorder=3)
        if spread.any():
            ax.errorbar(x[spread], mean[spread], yerr=std[spread], fmt="none", ecolor="tab:blue", capsize=5)
        if groups is not None:
            _draw_points(ax, x, groups, shift=0.2)
            extra += [float(v) for g in groups for v in g]
        if reference_lines and panel == 0:
            extra += _draw_reference_lines(ax, reference_lines)
        finite = np.isfinite(mean)
        if finite.any() or extra:
            err = np.where(spread, std, 0.0)
            low = min([*(mean - err)[finite], *extra])
            high = max([*(mean + err)[finite], *extra])
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
        if panel == 0:
            _mark_single_runs(ax, x, mean, _single_runs(std, groups))
        ax.set_xlim(-0.5, len(rows) - 0.5)
        ax.set_xticks(x, list(rows), rotation=20, ha="right")
        ax.set(ylabel=ylabel, title=name)
        ax.grid(axis="y", alpha=0.3)
        if panel == 0 and (groups is not None or reference_lines):
            ax.legend(fontsize=7, loc="best", framealpha=0.85)
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
    points: Sequence[Sequence[float]] | None = None,
    reference_lines: dict[str, float] | None = None,
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
        points: optional, per label, the per-seed values (percent; None or empty for none), drawn as small
            dots beside each mean of "ours".
        reference_lines: optional ``label → value`` (percent), labelled horizontal lines on "ours" (values
            on the same data, never the paper's).

    A value of "ours" that is a single run (one per-seed point, or without points a std of 0) draws no
    error bar and says "single run" (one note for the panel when every value is).
    """
    if points is not None and len(points) != len(labels):
        raise ValueError(f"points: {len(points)} groups for {len(labels)} labels")
    sets = [(ours_title, ours, baseline)] + (
        [(paper_title, paper, paper_baseline)] if paper is not None else []
    )
    fig = Figure(figsize=(4.6 * len(sets), 3.4), layout="constrained")
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
    x = np.arange(len(labels))
    for panel, (ax, (name, values, base)) in enumerate(zip(axes, sets, strict=True)):
        if len(values) != len(labels):
            raise ValueError(f"{name}: {len(values)} values for {len(labels)} labels")
        mean, std = np.array([mean_std(v) for v in values], dtype=float).reshape(-1, 2).T
        spread = np.isfinite(std) & (std > 0)
        ax.plot(x, mean, marker="o", color="tab:blue", label=name, zorder=3)
        if spread.any():
            ax.errorbar(x[spread], mean[spread], yerr=std[spread], fmt="none", ecolor="tab:blue", capsize=4)
        if base is not None:
            b, s = mean_std(base)
            ax.axhline(b, color="tab:red", linestyle="--", label=baseline_label)
            ax.axhspan(b - s, b + s, color="tab:red", alpha=0.12, linewidth=0)
        groups = None
        if panel == 0:
            if points is not None:
                groups = [_finite_values(p) for p in points]
                _draw_points(ax, x, groups, shift=0.15)
            if reference_lines:
                refs = _draw_reference_lines(ax, reference_lines)
                low, high = ax.get_ylim()  # autoscaled; keep the lines clear of the frame
                pad = 0.06 * (max(high, *refs) - min(low, *refs))
                ax.set_ylim(min(low, min(refs) - pad), max(high, max(refs) + pad))
            _mark_single_runs(ax, x, mean, _single_runs(std, groups))
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
