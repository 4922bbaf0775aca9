"""Figures of stage-2 training over epochs (notebook 06): convergence, memorisation, SWV's votes.

The numbers are what every stage-2 run logs per epoch in ``history.json`` (:mod:`arml.stage2`): the
validation mIoU of F_a, and the training probe of :mod:`arml.train_probe` (F_a against the pseudo masks and
against the truth on training images; the voters' agreement and how often a disputed pixel is mislabelled).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

_STYLES = ("-", "--", "-.", ":")


def _mean_with_seeds(ax, values: np.ndarray, label: str, color, style: str = "-") -> None:
    """The mean over seeds as a line, each seed as a thin line of the same colour."""
    epochs = np.arange(1, values.shape[1] + 1)
    for row in values:
        ax.plot(epochs, 100 * row, color=color, alpha=0.25, linewidth=0.8, linestyle=style)
    with np.errstate(all="ignore"):
        ax.plot(
            epochs, 100 * np.nanmean(values, axis=0), color=color, linewidth=2, linestyle=style, label=label
        )


def _reference(ax, lines: dict[str, float] | None) -> None:
    colors = ("black", "tab:gray", "tab:brown")
    for (name, value), color, style in zip((lines or {}).items(), colors, _STYLES[1:], strict=False):
        if value is not None and np.isfinite(value):
            ax.axhline(
                100 * value, color=color, linestyle=style, linewidth=1.2, label=f"{name} ({100 * value:.1f})"
            )


def convergence_figure(
    val: dict[str, np.ndarray],
    memorisation: dict[str, tuple[np.ndarray, np.ndarray]],
    reference_lines: dict[str, float] | None = None,
    title: str | None = None,
) -> Figure:
    """Two panels: validation mIoU per epoch of each row, and the memorisation curves on training images.

    Args:
        val: row label → ``seeds × epochs`` validation mIoU of F_a (fractions).
        memorisation: row label → (F_a vs pseudo masks, F_a vs truth), each ``seeds × epochs``.
        reference_lines: name → mIoU (fractions), drawn as horizontal lines on both panels.
    """
    from matplotlib import colormaps

    colors = colormaps["tab10"].colors
    fig = Figure(figsize=(12.5, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    for (label, values), color in zip(val.items(), colors, strict=False):
        _mean_with_seeds(left, values, label, color)
    _reference(left, reference_lines)
    left.set(xlabel="epoch", ylabel="validation mIoU of F_a (%)", title="Convergence (thin lines: seeds)")
    for (label, (fit, right_)), color in zip(memorisation.items(), colors, strict=False):
        _mean_with_seeds(right, fit, f"{label}: vs pseudo masks", color, "--")
        _mean_with_seeds(right, right_, f"{label}: vs truth", color, "-")
    _reference(right, {k: v for k, v in (reference_lines or {}).items() if "pseudo" in k})
    right.set(
        xlabel="epoch",
        ylabel="F_a on its training images, mIoU (%)",
        title="Memorisation: fitting the labels (dashed) vs being right (solid)",
    )
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def vote_figure(
    disputed_wrong: dict[str, np.ndarray],
    pm_wrong: float | None,
    agreement: dict[str, np.ndarray],
    title: str | None = None,
) -> Figure:
    """Two panels on SWV's votes (Eq. 4) per epoch.

    Args:
        disputed_wrong: run label → ``seeds × epochs`` share of mislabelled pixels among those the voters
            dispute (:func:`arml.train_probe.probe_networks`); ``pm_wrong`` (the base rate) as a line.
        agreement: run label → ``seeds × epochs`` share of labelled pixels where the voters agree, as logged
            during training (the released recipe's voters are the same network under dropout).
    """
    from matplotlib import colormaps

    colors = colormaps["tab10"].colors
    fig = Figure(figsize=(12.5, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for (label, values), color in zip(disputed_wrong.items(), colors, strict=False):
        _mean_with_seeds(left, values, label, color)
    if pm_wrong is not None:
        left.axhline(
            100 * pm_wrong,
            color="black",
            linestyle="--",
            label=f"all pixels (base rate {100 * pm_wrong:.1f})",
        )
    left.set(
        xlabel="epoch",
        ylabel="mislabelled pixels (%)",
        title="Where the voters disagree, how often is the pseudo label wrong?",
    )
    for (label, values), color in zip(agreement.items(), colors[2:], strict=False):
        _mean_with_seeds(right, values, label, color)
    right.set(
        xlabel="epoch", ylabel="voters agree (% of labelled pixels)", title="Voter agreement during training"
    )
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def noise_plot(
    records: Sequence[dict],
    natural: Sequence[dict] = (),
    reference_lines: dict[str, float] | None = None,
    title: str | None = None,
) -> Figure:
    """Test mIoU against the rate of wrong training pixels, one panel per corruption kind (notebook 07).

    Args:
        records: ``{"type", "rate", "method", "seed", "miou"}`` per run (rate and mIoU as fractions).
        natural: the same for the real CAM pseudo masks (drawn as open markers at their measured rate in every
            panel, so each kind can be compared with the errors CAMs really make).
        reference_lines: name → mIoU (fractions), horizontal lines (e.g. the fully supervised bound).
    """
    from matplotlib import colormaps

    kinds = list(dict.fromkeys(r["type"] for r in records))
    methods = list(dict.fromkeys(r["method"] for r in [*records, *natural]))
    colors = dict(zip(methods, colormaps["tab10"].colors, strict=False))
    fig = Figure(figsize=(3.6 * max(len(kinds), 1) + 1.5, 3.8), layout="constrained")
    axes = fig.subplots(1, max(len(kinds), 1), squeeze=False, sharey=True)[0]
    for ax, kind in zip(axes, kinds or [None], strict=True):
        for k, method in enumerate(methods):
            rows = [r for r in records if r["type"] == kind and r["method"] == method]
            rates = sorted({r["rate"] for r in rows})
            shift = (k - (len(methods) - 1) / 2) * 0.12  # percent points, so dots of methods do not overlap
            means = [np.mean([r["miou"] for r in rows if r["rate"] == x]) for x in rates]
            ax.plot(
                [100 * x for x in rates], [100 * m for m in means], "-o", color=colors[method], label=method
            )
            ax.scatter(
                [100 * r["rate"] + shift for r in rows],
                [100 * r["miou"] for r in rows],
                s=10,
                color=colors[method],
                alpha=0.45,
                linewidths=0,
            )
            own = [r for r in natural if r["method"] == method]
            if own:
                ax.scatter(
                    [100 * r["rate"] + shift for r in own],
                    [100 * r["miou"] for r in own],
                    s=28,
                    facecolors="none",
                    edgecolors=colors[method],
                    linewidths=1.2,
                )
        for (name, value), style in zip((reference_lines or {}).items(), _STYLES[1:], strict=False):
            if value is not None and np.isfinite(value):
                ax.axhline(
                    100 * value,
                    color="black",
                    linestyle=style,
                    linewidth=1,
                    label=f"{name} ({100 * value:.1f})",
                )
        ax.set(xlabel="wrong training pixels (%)", title=f"corruption: {kind}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test mIoU of F_a (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    if natural:
        from matplotlib.lines import Line2D

        handles.append(
            Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="gray")
        )
        labels.append("CAM pseudo masks (open)")
    if handles:
        fig.legend(handles, labels, loc="outside right center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
