"""Figures of stage 2 (notebooks 04–05): what SWV weighs and what SRM's L_st compares, on one batch.

Stage 2 trains three peers F_a, F_b, F_c on the pseudo masks M. SWV (Eq. 4) weighs F_a's per-pixel
cross-entropy by the vote of F_b and F_c; L_st (Eq. 6–8) matches the distance and angle relations between
the images of a batch across peers. The arrays drawn here come from :mod:`arml.loss_probes`.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from arml.loss_probes import voter_agreement
from arml.losses import swv_levels
from arml.runtime import to_numpy
from arml.viz.base import mask_to_rgb, palette_legend, to_uint8_image


def swv_panel(
    image, mask, pred_b, pred_c, weights, omega: float, dataset: str = "luad", title=None
) -> Figure:
    """One training patch through SWV (Eq. 4): image, pseudo mask M, argmax of F_b and F_c, and the weights.

    Args:
        image: ``3×H×W`` in [0, 1] or ``H×W×3`` uint8.
        mask: ``H×W`` pseudo mask (0..4, 255).
        pred_b, pred_c: ``H×W`` label maps of the two voters.
        weights: ``H×W`` from :func:`arml.loss_probes.swv_weight_map` (NaN = ignored, drawn grey).
        omega: ω, for the colour bar.
    """
    from matplotlib import colormaps

    weights = to_numpy(weights).astype(float)
    agree = voter_agreement(pred_b, pred_c, np.isfinite(weights))
    fig = Figure(figsize=(12.5, 3.0), layout="constrained")
    axes = fig.subplots(1, 5)
    panels = [
        (to_uint8_image(image), "image"),
        (mask_to_rgb(mask, dataset), "pseudo mask M"),
        (mask_to_rgb(pred_b, dataset), "F_b argmax (voter)"),
        (mask_to_rgb(pred_c, dataset), "F_c argmax (voter)"),
    ]
    for ax, (img, name) in zip(axes[:4], panels, strict=True):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(name, fontsize=9)
    high, low = swv_levels(omega)
    cmap = colormaps["coolwarm"].with_extremes(bad="0.6")
    shown = axes[4].imshow(
        np.ma.masked_invalid(weights), cmap=cmap, vmin=low, vmax=high, interpolation="nearest"
    )
    axes[4].set_title(f"SWV weight (agree {100 * agree:.0f}%)", fontsize=9)
    bar = fig.colorbar(shown, ax=axes[4], ticks=[low, high], shrink=0.8)
    sym = "∞" if np.isinf(omega) else f"{omega:g}"
    bar.ax.set_yticklabels(
        [f"disagree: {'0' if np.isinf(omega) else '1/' + sym}", f"agree: {sym}"], fontsize=8
    )
    for ax in axes:
        ax.set_axis_off()
    palette_legend(fig, dataset)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def relation_heatmaps(
    student: tuple[np.ndarray, np.ndarray],
    teacher: tuple[np.ndarray, np.ndarray],
    anchor: int = 0,
    names: tuple[str, str] = ("student F_a", "teacher F_b"),
    title: str | None = None,
) -> Figure:
    """Distance (top, Eq. 6) and angle-at-``anchor`` (bottom, Eq. 7) relations of two networks and their
    difference, which L_st (Eq. 8) penalises.

    Args:
        student, teacher: ``(distances B×B, angles B×B×B)``, from
            :func:`arml.loss_probes.relation_matrices`.
        anchor: image index k whose angle matrix ``cos∠(x_i − x_k, x_j − x_k)`` is shown.
        names: panel titles of the two networks.
    """
    (ds, as_), (dt, at) = student, teacher
    if ds.shape != dt.shape or as_.shape != at.shape:
        raise ValueError(f"student and teacher relations differ in shape: {ds.shape} vs {dt.shape}")
    if not 0 <= anchor < len(ds):
        raise ValueError(f"anchor must be in [0, {len(ds)}), got {anchor}")
    rows = [
        ("normalised distance", ds, dt, "viridis", (0, max(ds.max(), dt.max()))),
        (f"cos angle at anchor {anchor}", as_[anchor], at[anchor], "RdBu_r", (-1, 1)),
    ]
    fig = Figure(figsize=(11, 6.6), layout="constrained")
    axes = fig.subplots(2, 3)
    for (what, s, t, cmap, (lo, hi)), row in zip(rows, axes, strict=True):
        for ax, m, name in ((row[0], s, names[0]), (row[1], t, names[1])):
            shown = ax.imshow(m, cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title(f"{name}: {what}", fontsize=9)
        fig.colorbar(shown, ax=row[:2], shrink=0.8)
        gap = row[2].imshow(np.abs(s - t), cmap="magma", vmin=0)
        row[2].set_title(f"|difference| (mean {np.abs(s - t).mean():.3f})", fontsize=9)
        fig.colorbar(gap, ax=row[2], shrink=0.8)
        for ax in row:
            ax.set(xlabel="image j", ylabel="image i")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
