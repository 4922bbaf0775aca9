"""Figures of the data itself: patch grids with their masks, predictions next to the truth, the pipeline.

A patch is shown as an image with its index mask below or beside it in the dataset palette (0..3 tissue,
4 background), and a legend of the palette under the figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from arml.analysis import sample_patches
from arml.viz.base import label_text, mask_to_rgb, palette, palette_legend, to_uint8_image


def patch_grid(
    images: Sequence,
    masks: Sequence | None = None,
    labels: Sequence | None = None,
    dataset: str = "luad",
    title: str | None = None,
    ncols: int = 8,
) -> Figure:
    """A grid of patches, each with its mask below it in the dataset palette, and a palette legend.

    Args:
        images: ``3×H×W`` float tensors/arrays in [0, 1] or ``H×W×3`` uint8 arrays.
        masks: ``H×W`` index masks (an entry may be None), or None for images only.
        labels: per image, four 0/1 flags (shown as class abbreviations) or a string; or None.
        dataset: palette and class names.
        title: figure title.
        ncols: patches per row.
    """
    palette(dataset)
    n = len(images)
    if n == 0:
        raise ValueError("patch_grid needs at least one image")
    for name, seq in (("masks", masks), ("labels", labels)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} entries for {n} images")
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    per = 2 if masks is not None else 1
    fig = Figure(figsize=(1.3 * ncols, nrows * (1.25 * per + 0.25) + 0.8), layout="constrained")
    fig.get_layout_engine().set(h_pad=0.01, w_pad=0.01, hspace=0.01, wspace=0.02)
    axes = fig.subplots(nrows * per, ncols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for i in range(n):
        row, col = divmod(i, ncols)
        ax = axes[row * per, col]
        ax.imshow(to_uint8_image(images[i]), interpolation="nearest")
        if labels is not None:
            ax.set_title(label_text(labels[i], dataset), fontsize=7, pad=2)
        if masks is not None and masks[i] is not None:
            axes[row * per + 1, col].imshow(mask_to_rgb(masks[i], dataset), interpolation="nearest")
    palette_legend(fig, dataset)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def dataset_grid(
    root: str | Path,
    split: str = "train",
    n: int = 16,
    dataset: str = "luad",
    seed: int = 0,
    title: str | None = None,
) -> Figure:
    """:func:`patch_grid` of ``n`` random patches (fixed by ``seed``) of a dataset folder's split.

    The patches come from :func:`arml.analysis.sample_patches`: for ``train`` the image, its ``train_gt``
    mask when the folder has one (synthetic data) and the label from the file name; for ``val``/``test`` the
    image, its mask and the classes present in the mask. The default title names the folder and says
    "synthetic" when the folder holds a ``synth.json``.
    """
    root = Path(root)
    sample = sample_patches(root, split, n, dataset, seed)
    if title is None:
        if sample.synth is not None:
            meta = sample.synth
            kind = f"synthetic H&E ({meta.get('generator', 'arml.synth')}, seed {meta.get('seed')})"
        else:
            kind = dataset.upper()
        what = "label from name" if split == "train" else "classes in mask"
        title = (
            f"{kind} — {root.name}/{split}: {len(sample.images)} of {sample.total} patches (titles: {what})"
        )
    masks = sample.masks if any(m is not None for m in sample.masks) else None
    return patch_grid(sample.images, masks, sample.labels, dataset, title)


def prediction_grid(
    images: Sequence, columns: dict[str, Sequence], dataset: str = "luad", title=None
) -> Figure:
    """One row per example: the image, then one palette mask per named column (truth, models, …)."""
    n = len(images)
    if n == 0:
        raise ValueError("prediction_grid needs at least one image")
    for name, masks in columns.items():
        if len(masks) != n:
            raise ValueError(f"column {name!r} has {len(masks)} masks for {n} images")
    ncols = 1 + len(columns)
    fig = Figure(figsize=(1.8 * ncols, 1.8 * n + 0.8), layout="constrained")
    axes = fig.subplots(n, ncols, squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(to_uint8_image(images[i]), interpolation="nearest")
        for j, masks in enumerate(columns.values(), start=1):
            axes[i, j].imshow(mask_to_rgb(masks[i], dataset), interpolation="nearest")
    for j, name in enumerate(["image", *columns]):
        axes[0, j].set_title(name, fontsize=9)
    for ax in axes.ravel():
        ax.set_axis_off()
    palette_legend(fig, dataset)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def pipeline_diagram() -> Figure:
    """The ARML pipeline as boxes and arrows (paper Fig. 1): stage 1 makes pseudo masks, stage 2 trains three
    peers on them with SWV and SRM."""
    from matplotlib.patches import FancyBboxPatch

    fig = Figure(figsize=(12, 4.6), layout="constrained")
    ax = fig.subplots()
    ax.set(xlim=(0, 12), ylim=(0, 4.6))
    ax.set_axis_off()
    for (x, y, w, h), text, colour in (
        ((0.1, 2.45, 11.8, 2.05), "stage 1: pseudo masks (§2.1–2.2; notebooks 01–03)", "#eef3fb"),
        (
            (0.1, 0.1, 11.8, 2.15),
            "stage 2: noise-robust mutual learning (§2.3–2.4; notebooks 04–06)",
            "#fbf1e6",
        ),
    ):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", fc=colour, ec="0.7"))
        ax.text(x + 0.12, y + h - 0.12, text, fontsize=9, va="top", color="0.3", style="italic")
    boxes = {
        "data": (1.25, 3.35, "patches + image-level\nlabels Y (file name\n…-[1 0 0 1].png)"),
        "cls": (
            3.95,
            3.35,
            "classifier F_cls\n+ ARS: CCA (Eq. 1–2)\n→ reactivation (Eq. 3)\nL_cls: soft-margin",
        ),
        "cam": (6.55, 3.35, "CAMs\n(Grad-CAM on the\nlast feature map)"),
        "pm": (9.25, 3.35, "pseudo masks M\nnormalise · label gate ·\nbackground rule · argmax"),
        "peers": (2.2, 1.1, "three peers\nF_a, F_b, F_c\n(same structure)"),
        "swv": (5.2, 1.55, "SWV (Eq. 4): weight ω where\nF_b, F_c agree, 1/ω if not"),
        "srm": (5.2, 0.62, "SRM: L_st (Eq. 6–8)\ndistance + angle relations"),
        "loss": (8.2, 1.1, "(1−λ)·L_swv + λ·L_st\n(Eq. 9, λ = 0.2)"),
        "seg": (10.75, 1.1, "segmentation\n(best-val peer)\n→ test mIoU"),
    }
    artists = {
        key: ax.text(
            x,
            y,
            text,
            ha="center",
            va="center",
            fontsize=8.5,
            bbox={"boxstyle": "round,pad=0.4", "fc": "white", "ec": "0.35", "lw": 1},
        )
        for key, (x, y, text) in boxes.items()
    }
    arrow = {"arrowstyle": "-|>", "mutation_scale": 14, "color": "0.25", "shrinkA": 6, "shrinkB": 6}
    for a, b in (
        ("data", "cls"),
        ("cls", "cam"),
        ("cam", "pm"),
        ("peers", "swv"),
        ("peers", "srm"),
        ("swv", "loss"),
        ("srm", "loss"),
        ("loss", "seg"),
    ):
        ax.annotate("", (0, 0.5), (1, 0.5), xycoords=artists[b], textcoords=artists[a], arrowprops=arrow)
    ax.plot([9.25, 9.25, 2.2], [3.0, 2.35, 2.35], color="tab:red", lw=1.5)
    red = {**arrow, "color": "tab:red", "lw": 1.5, "shrinkA": 0}
    ax.annotate("", (0.5, 1), (2.2, 2.35), xycoords=artists["peers"], textcoords="data", arrowprops=red)
    ax.text(7.6, 2.13, "M supervises every peer (noisy labels)", color="tab:red", fontsize=8.5, ha="center")
    ax.set_title(
        "ARML: Activation Relocalization and Mutual Learning (Feng et al., MICCAI 2024)", fontsize=11
    )
    return fig
