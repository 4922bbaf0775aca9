"""Figures of stage 1 (notebooks 01–02): class activation maps, the ARS module and the background rule.

Stage 1 trains a classifier on image-level labels, reads one CAM per class off it (Grad-CAM) and, with ARS,
relocates activation through criss-cross attention (Eq. 1–2) and reactivation (Eq. 3). :func:`cam_grid` draws
the maps with the pseudo masks' normalisation (:func:`arml.cams.normalize_cams`, ``"global"`` by default) and
says which one in its colour bar.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from arml.analysis import background_rule_steps
from arml.cams import normalize_cams
from arml.datasets import CLASS_NAMES
from arml.options import CAM_NORMALIZATIONS, check_choice
from arml.runtime import to_numpy
from arml.viz.base import label_text, mask_to_rgb, palette, palette_legend, to_uint8_image


def _unit(x: np.ndarray) -> np.ndarray:
    """Min-max scale one map to [0, 1] for display (a constant map gives 0)."""
    lo, hi = float(np.min(x)), float(np.max(x))
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x, dtype=np.float64)


def cam_grid(
    images: Sequence,
    cams: Sequence,
    labels: Sequence | None = None,
    dataset: str = "luad",
    row_titles: Sequence[str] | None = None,
    title: str | None = None,
    masks: Sequence | None = None,
    alpha: float = 0.5,
    overlay: bool = True,
    cell: float = 1.3,
    dpi: int = 80,
    normalization: str = "global",
) -> Figure:
    """Per-class CAM heatmaps over their images: one row per entry, columns image (+ mask) + one per class.

    The maps are scaled to [0, 1] by :func:`arml.cams.normalize_cams` with ``normalization``: ``"global"`` (the
    default, as the pseudo masks: one min-max over all classes of an entry, so a weak class stays dark beside
    a strong one) or ``"per_class"`` (each map on its own, every map reaches 1). Classes absent from the
    image-level label are drawn faded and titled "absent", since label gating zeroes them before the argmax.
    Pass the same image several times with different methods' maps and ``row_titles`` to compare methods.

    Args:
        images: ``3×H×W`` floats in [0, 1] or ``H×W×3`` uint8.
        cams: per entry a ``K×H×W`` map stack at image resolution.
        labels: per entry ``K`` 0/1 flags, or None (all classes shown as present).
        dataset: class names.
        row_titles: text left of each row (e.g. the method); default the label's classes.
        title: figure title.
        masks: per entry an ``H×W`` truth mask shown after the image (an entry may be None), or None.
        alpha: heatmap opacity.
        overlay: draw the heatmaps over the image; ``False`` draws them alone (lighter files, and the
            image is still in the first column).
        cell: panel size in inches.
        dpi: display resolution (the grid is image-heavy; 80 keeps notebooks small).
        normalization: ``"global"`` or ``"per_class"``, named in the colour bar.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    check_choice("normalization", normalization, CAM_NORMALIZATIONS)
    palette(dataset)
    names = CLASS_NAMES[dataset]
    n = len(images)
    if n == 0 or len(cams) != n or any(s is not None and len(s) != n for s in (labels, masks, row_titles)):
        raise ValueError(
            f"need one CAM stack (and label, mask, title) per image and at least one image; got {n}"
        )
    first = 1 if masks is None else 2
    fig = Figure(figsize=(cell * (len(names) + first) + 0.6, cell * n + 0.7), dpi=dpi, layout="constrained")
    axes = fig.subplots(n, len(names) + first, squeeze=False)
    for i in range(n):
        image = to_uint8_image(images[i])
        maps = to_numpy(cams[i]).astype(np.float64)
        if maps.shape != (len(names), *image.shape[:2]):
            raise ValueError(f"cams[{i}] must be {len(names)}×H×W at image size, got {maps.shape}")
        maps = normalize_cams(torch.from_numpy(maps)[None], normalization)[0].numpy()
        label = [1] * len(names) if labels is None else [int(v) for v in to_numpy(labels[i])]
        axes[i, 0].imshow(image, interpolation="nearest")
        text = row_titles[i] if row_titles is not None else label_text(label, dataset)
        axes[i, 0].set_ylabel(text, fontsize=8)
        if masks is not None and masks[i] is not None:
            axes[i, 1].imshow(mask_to_rgb(masks[i], dataset), interpolation="nearest")
        for k, name in enumerate(names):
            ax = axes[i, k + first]
            if overlay:
                ax.imshow(image, interpolation="nearest")
            ax.imshow(
                maps[k],
                cmap="jet",
                vmin=0,
                vmax=1,
                alpha=(alpha if overlay else 1.0) if label[k] else 0.15,
                interpolation="nearest",
            )
            if i == 0 or labels is not None:
                ax.set_title(
                    name if label[k] else f"{name} (absent)", fontsize=8, color="k" if label[k] else "0.55"
                )
    axes[0, 0].set_title("image", fontsize=8)
    if masks is not None:
        axes[0, 1].set_title("truth", fontsize=8)
        palette_legend(fig, dataset)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    scale = ScalarMappable(Normalize(0, 1), cmap="jet")
    scaled = "over all classes of an image, as the pseudo masks" if normalization == "global" else "per map"
    fig.colorbar(scale, ax=axes, shrink=0.6, label=f"CAM, min-max {scaled}")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def cam_to_rgb(cams, label=None, dataset: str = "luad") -> np.ndarray:
    """A class-coloured CAM: each pixel takes the palette colour of its strongest present class, with
    brightness = that class's map (global min-max over the present classes) → ``H×W×3`` uint8.

    Args:
        cams: ``K×H×W`` raw maps of one image.
        label: ``K`` 0/1 flags; absent classes cannot win. None keeps every class.
        dataset: palette.
    """
    maps = to_numpy(cams).astype(np.float64)
    if maps.ndim != 3:
        raise ValueError(f"cams must be K×H×W, got shape {maps.shape}")
    present = np.ones(len(maps), bool) if label is None else to_numpy(label).astype(bool)
    if not present.any():
        return np.zeros((*maps.shape[1:], 3), dtype=np.uint8)
    scaled = np.full(maps.shape, -np.inf)
    scaled[present] = _unit(maps[present])
    winner = scaled.argmax(axis=0)
    strength = np.take_along_axis(scaled, winner[None], axis=0)[0]
    colours = palette(dataset)[winner].astype(np.float64)
    return np.round(colours * strength[..., None]).astype(np.uint8)


def attention_figure(image, attention, query: tuple[int, int], title: str | None = None) -> Figure:
    """Criss-cross attention (ARS, Eq. 1–2) of one query position, painted over the image.

    Args:
        image: ``3×H×W`` in [0, 1] or ``H×W×3`` uint8.
        attention: ``h×w`` map at feature resolution from :func:`arml.analysis.attention_map`.
        query: ``(i, j)`` of the query in feature coordinates (marked with a cross).
    """
    rgb = to_uint8_image(image)
    attn = to_numpy(attention).astype(np.float64)
    (h, w), (height, width) = attn.shape, rgb.shape[:2]
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    fig = Figure(figsize=(8.4, 3.0), layout="constrained")
    axes = fig.subplots(1, 3)
    axes[0].imshow(rgb, interpolation="nearest", extent=extent)
    axes[0].set_title(f"image ({height}×{width} px)", fontsize=9)
    shown = axes[1].imshow(attn, cmap="magma", interpolation="nearest")
    axes[1].set_title(f"weights A on the {h}×{w} feature grid", fontsize=9)
    fig.colorbar(shown, ax=axes[1], shrink=0.8)
    axes[2].imshow(rgb, interpolation="nearest", extent=extent)
    axes[2].imshow(attn, cmap="magma", alpha=0.6, interpolation="nearest", extent=extent)
    axes[2].set_title("overlaid on the image", fontsize=9)
    for ax in axes:
        ax.plot(query[1], query[0], marker="x", color="cyan", markersize=9, mew=2)
        ax.set(xlabel="feature column", ylabel="feature row")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def activation_histograms(
    samples: dict[str, object], xlabel: str = "activation", title: str | None = None, bins: int = 60
) -> Figure:
    """Overlaid histograms (log count) of several named samples on shared bins, with their 99th percentile
    (e.g. activations before and after reactivation, Eq. 3)."""
    if not samples:
        raise ValueError("activation_histograms needs at least one sample")
    data = {k: to_numpy(v).astype(np.float64).ravel() for k, v in samples.items()}
    edges = np.histogram_bin_edges(np.concatenate(list(data.values())), bins=bins)
    fig = Figure(figsize=(5.6, 3.4), layout="constrained")
    ax = fig.subplots()
    for i, (name, values) in enumerate(data.items()):
        colour = f"C{i}"  # every sample gets a colour (C0-C3 are tab:blue, orange, green, red)
        p99 = np.percentile(values, 99)
        ax.hist(values, bins=edges, alpha=0.5, color=colour, label=f"{name} (p99 {p99:.2f})")
        ax.axvline(p99, color=colour, linestyle="--", linewidth=1)
    ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel="count (log)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def background_rule_figure(
    image, threshold: float = 200.0, min_size: int = 50, title: str | None = None
) -> Figure:
    """The LUAD background rule on one image: grey level, ``grey > threshold``, and the mask after white
    blobs smaller than ``min_size`` pixels are dropped (removed specks in red); the steps come from
    :func:`arml.analysis.background_rule_steps`."""
    rgb = to_uint8_image(image)
    grey, raw, kept = background_rule_steps(rgb, threshold, min_size)
    after = np.zeros((*kept.shape, 3), dtype=np.uint8)
    after[kept] = 255
    after[raw & ~kept] = (220, 30, 30)
    fig = Figure(figsize=(10, 2.9), layout="constrained")
    axes = fig.subplots(1, 4)
    axes[0].imshow(rgb, interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    shown = axes[1].imshow(grey, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    axes[1].set_title("grey (ITU-R 601 luma)", fontsize=9)
    fig.colorbar(shown, ax=axes[1], shrink=0.8)
    axes[2].imshow(raw, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[2].set_title(f"grey > {threshold:g}: {raw.mean():.0%} of pixels", fontsize=9)
    axes[3].imshow(after, interpolation="nearest")
    axes[3].set_title(f"blobs < {min_size} px removed (red): {kept.mean():.0%}", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
