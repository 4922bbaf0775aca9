"""Plotting: palette masks, overlays, patch grids and the one :func:`savefig` every figure goes through.

Figures are plain :class:`matplotlib.figure.Figure` objects, so nothing here picks a backend or touches
pyplot's global state; they render headless (Agg) and display in Jupyter as the last expression of a cell.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from arml.datasets import (
    BACKGROUND,
    CLASS_NAMES,
    DATASETS,
    IGNORE_INDEX,
    PALETTES,
    list_pngs,
    parse_image_label,
    read_mask,
)
from arml.losses import swv_levels
from arml.runtime import atomic_write

REPO_ROOT = Path(__file__).resolve().parent.parent


def figures_dir() -> Path:
    """Where figures go by default: ``$ARML_FIGURES`` if set, else ``<repo root>/figures``."""
    env = os.environ.get("ARML_FIGURES")
    return Path(env) if env else REPO_ROOT / "figures"


def savefig(fig: Figure, name: str, folder: str | Path | None = None, dpi: int = 120) -> Path:
    """Save ``fig`` as ``<folder>/<name>.png`` (atomically, without a software-version stamp) and return the path.

    Args:
        fig: a matplotlib figure.
        name: file name, with or without ``.png``.
        folder: target folder (created); default :func:`figures_dir`.
        dpi: resolution.
    """
    path = Path(name)
    if path.suffix not in ("", ".png") or path.name != str(name):
        raise ValueError(f"name must be a bare file name ending in .png or without suffix, got {name!r}")
    path = Path(folder if folder is not None else figures_dir()) / path.with_suffix(".png").name
    atomic_write(
        path,
        lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None}),
    )
    return path


def _palette(dataset: str) -> np.ndarray:
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    return np.array(PALETTES[dataset], dtype=np.uint8)


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def mask_to_rgb(mask, dataset: str = "luad") -> np.ndarray:
    """Colour an ``H×W`` index mask (0..4, 255 = ignore) with the dataset palette → ``H×W×3`` uint8.

    Ignored pixels (255) are black. Any other value raises ``ValueError``.
    """
    mask = _numpy(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be H×W, got shape {mask.shape}")
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: BACKGROUND + 1] = _palette(dataset)
    values = np.unique(mask)
    bad = [int(v) for v in values if not (0 <= v <= BACKGROUND or v == IGNORE_INDEX)]
    if bad:
        raise ValueError(f"mask values must be 0..{BACKGROUND} or {IGNORE_INDEX}, found {bad[:5]}")
    return lut[mask.astype(np.uint8)]


def to_uint8_image(image) -> np.ndarray:
    """An ``H×W×3`` uint8 view of a ``3×H×W`` float tensor/array in [0, 1] or an ``H×W×3`` image."""
    image = _numpy(image)
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.transpose(1, 2, 0)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be 3×H×W or H×W×3, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image
    return np.clip(np.round(image.astype(np.float64) * 255), 0, 255).astype(np.uint8)


def overlay(image, mask, dataset: str = "luad", alpha: float = 0.45) -> np.ndarray:
    """Blend the palette-coloured ``mask`` onto ``image`` (ignored pixels keep the image) → uint8 RGB."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    rgb = to_uint8_image(image).astype(np.float64)
    mask = _numpy(mask)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image size {rgb.shape[:2]}")
    blend = np.where(
        (mask != IGNORE_INDEX)[..., None], (1 - alpha) * rgb + alpha * mask_to_rgb(mask, dataset), rgb
    )
    return np.round(blend).astype(np.uint8)


def legend_handles(dataset: str = "luad") -> list[Patch]:
    """Legend patches for the five palette entries (classes 0..3 and ``BG/excluded`` for 4)."""
    names = (*CLASS_NAMES[dataset], "BG/excluded") if dataset in CLASS_NAMES else ()
    return [
        Patch(facecolor=rgb / 255, edgecolor="0.3", linewidth=0.5, label=name)
        for rgb, name in zip(_palette(dataset), names, strict=True)
    ]


def _label_text(label, dataset: str) -> str:
    if label is None or isinstance(label, str):
        return label or ""
    present = [n for n, v in zip(CLASS_NAMES[dataset], label, strict=True) if v]
    return " ".join(present) if present else "(none)"


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
    _palette(dataset)
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
            ax.set_title(_label_text(labels[i], dataset), fontsize=7, pad=2)
        if masks is not None and masks[i] is not None:
            axes[row * per + 1, col].imshow(mask_to_rgb(masks[i], dataset), interpolation="nearest")
    fig.legend(handles=legend_handles(dataset), loc="outside lower center", ncol=5, fontsize=8, frameon=False)
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
    """:func:`patch_grid` of ``n`` random patches (fixed by ``seed``) from a dataset folder.

    ``train``: image, its ``train_gt`` mask when the folder exists (synthetic data), the label from the name.
    ``val``/``test``: image, mask and the classes present in the mask. The default title names the folder and
    says "synthetic" when the folder holds a ``synth.json``.
    """
    root = Path(root)
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    files = list_pngs(root / "train" if split == "train" else root / split / "img")
    if not files:
        raise FileNotFoundError(f"no images in {files and files[0].parent or root / split}")
    pick = sorted(np.random.default_rng(seed).choice(len(files), size=min(n, len(files)), replace=False))
    images, masks, labels = [], [], []
    for i in pick:
        path = files[i]
        with Image.open(path) as img:
            images.append(np.array(img.convert("RGB")))
        if split == "train":
            gt = root / "train_gt" / path.name
            masks.append(read_mask(gt) if gt.exists() else None)
            labels.append(parse_image_label(path.name, dataset))
        else:
            mask = read_mask(root / split / "mask" / path.name)
            masks.append(mask)
            labels.append(tuple(int((mask == c).any()) for c in range(len(CLASS_NAMES[dataset]))))
    if title is None:
        synth = root / "synth.json"
        kind = "unknown"
        if synth.exists():
            meta = json.loads(synth.read_text())
            kind = f"synthetic H&E ({meta.get('generator', 'arml.synth')}, seed {meta.get('seed')})"
        else:
            kind = dataset.upper()
        what = "label from name" if split == "train" else "classes in mask"
        title = f"{kind} — {root.name}/{split}: {len(pick)} of {len(files)} patches (titles: {what})"
    return patch_grid(images, masks if any(m is not None for m in masks) else None, labels, dataset, title)


# --------------------------------------------------------------------------------------- stage 2 (04–06)
def _score_pair(value) -> tuple[float, float]:
    """``(mean, std)`` from a pair or a bare number (std 0); None/NaN mean → NaN."""
    mean, std = value if isinstance(value, tuple | list) else (value, 0.0)
    mean = np.nan if mean is None else float(mean)
    return mean, 0.0 if std is None or not np.isfinite(std) else float(std)


def swv_weight_map(
    peer1, peer2, target=None, omega: float = 2.0, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """The per-pixel weights of SWV, Eq. (4): ω where the voters' argmax agree, 1/ω where they differ.

    ``omega=inf`` gives 1 and 0 (disagreeing pixels dropped). Ignored pixels (``target == ignore_index``)
    are NaN. :func:`arml.losses.swv_loss` is the weighted CE with exactly these weights.

    Args:
        peer1, peer2: ``B×C×H×W`` or ``C×H×W`` logits P_b, P_c (tensors or arrays).
        target: optional mask of the same batch shape (``B×H×W`` or ``H×W``).
        omega: ω ≥ 1.

    Returns:
        Float array of shape ``B×H×W`` (or ``H×W``).
    """
    high, low = swv_levels(omega)
    p1, p2 = _numpy(peer1), _numpy(peer2)
    if p1.shape != p2.shape or p1.ndim not in (3, 4):
        raise ValueError(
            f"peer1 and peer2 must share a C×H×W or B×C×H×W shape, got {p1.shape} and {p2.shape}"
        )
    weights = np.where(p1.argmax(-3) == p2.argmax(-3), high, low)
    if target is not None:
        target = _numpy(target)
        if target.shape != weights.shape:
            raise ValueError(f"target shape {target.shape} does not match the logits' {weights.shape}")
        weights = np.where(target == ignore_index, np.nan, weights)
    return weights


def swv_panel(
    image, mask, pred_b, pred_c, weights, omega: float, dataset: str = "luad", title=None
) -> Figure:
    """One training patch through SWV: image, pseudo mask M, argmax of F_b and F_c, and the weight map.

    Args:
        image: ``3×H×W`` in [0, 1] or ``H×W×3`` uint8.
        mask: ``H×W`` pseudo mask (0..4, 255).
        pred_b, pred_c: ``H×W`` label maps of the two voters.
        weights: ``H×W`` from :func:`swv_weight_map` (NaN = ignored, drawn grey).
        omega: ω, for the colour bar.
    """
    from matplotlib import colormaps

    weights = _numpy(weights).astype(float)
    counted = np.isfinite(weights)
    agree = float((_numpy(pred_b) == _numpy(pred_c))[counted].mean()) if counted.any() else float("nan")
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
    fig.legend(handles=legend_handles(dataset), loc="outside lower center", ncol=5, fontsize=8, frameon=False)
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
        mean, std = np.array([_score_pair(v) for v in values]).T
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=4, color="tab:blue", label=name)
        if base is not None:
            b, s = _score_pair(base)
            ax.axhline(b, color="tab:red", linestyle="--", label=baseline_label)
            ax.axhspan(b - s, b + s, color="tab:red", alpha=0.12, linewidth=0)
        ax.set_xticks(x, labels)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


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


def relation_matrices(logits, target=None, ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """The relations L_st compares (Eq. 6–7), for one network's ``B×C×H×W`` logits.

    Samples are whole images' flattened logits, ignored pixels zeroed, exactly as in
    :func:`arml.losses.structure_loss`. Returns the ``B×B`` mean-normalised distance matrix and the ``B×B×B``
    cosines ``[k, i, j]`` at anchor k.
    """
    import torch

    from arml.losses import angle_cosines, normalized_distances

    x = torch.as_tensor(_numpy(logits)).float()
    if x.dim() != 4 or x.shape[0] < 2:
        raise ValueError(f"logits must be B×C×H×W with B >= 2, got shape {tuple(x.shape)}")
    if target is not None:
        t = torch.as_tensor(_numpy(target))
        x = x.masked_fill((t == ignore_index).unsqueeze(1), 0)
    e = x.flatten(1)
    with torch.no_grad():
        return normalized_distances(e).numpy(), angle_cosines(e).numpy()


def relation_heatmaps(
    student: tuple[np.ndarray, np.ndarray],
    teacher: tuple[np.ndarray, np.ndarray],
    anchor: int = 0,
    names: tuple[str, str] = ("student F_a", "teacher F_b"),
    title: str | None = None,
) -> Figure:
    """Distance (top) and angle-at-``anchor`` (bottom) relations of two networks and their difference.

    Args:
        student, teacher: ``(distances B×B, angles B×B×B)`` from :func:`relation_matrices`.
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


def score_plot(
    ours: dict[str, object],
    paper: dict[str, object] | None = None,
    ylabel: str = "test mIoU (%)",
    title: str | None = None,
    ours_title: str = "ours",
    paper_title: str = "paper",
) -> Figure:
    """Points with ±std error bars, one per row (``name → (mean, std)`` in percent); the paper in its own panel.

    Points rather than bars: the axis zooms on the values (differences of a point or two are what matter),
    and a bar cut off above zero would exaggerate them. A std of 0 (one seed) draws no error bar.
    """
    sets = [(ours_title, ours)] + ([(paper_title, paper)] if paper is not None else [])
    n = max(len(v) for _, v in sets)
    fig = Figure(figsize=(min(3 + 0.7 * n, 7) * len(sets), 3.8), layout="constrained")
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
    for ax, (name, rows) in zip(axes, sets, strict=True):
        mean, std = np.array([_score_pair(v) for v in rows.values()], dtype=float).reshape(-1, 2).T
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
    fig.legend(handles=legend_handles(dataset), loc="outside lower center", ncol=5, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# ------------------------------------------------------------------ stage 1: CAMs, pseudo masks, ARS (01–03)
def _unit(x: np.ndarray) -> np.ndarray:
    """Min-max scale one map to [0, 1] (a constant map gives 0)."""
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
) -> Figure:
    """Per-class CAM heatmaps over their images: one row per entry, columns image (+ mask) + one per class.

    Each map is min-max scaled to [0, 1] on its own (display only; pseudo masks use the normalisation of
    :func:`arml.cams.normalize_cams`). Classes absent from the image-level label are drawn faded and titled
    "absent", since label gating zeroes them before the argmax. Pass the same image several times with
    different methods' maps and ``row_titles`` to compare methods.

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
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    _palette(dataset)
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
        maps = _numpy(cams[i]).astype(np.float64)
        if maps.shape != (len(names), *image.shape[:2]):
            raise ValueError(f"cams[{i}] must be {len(names)}×H×W at image size, got {maps.shape}")
        label = [1] * len(names) if labels is None else [int(v) for v in _numpy(labels[i])]
        axes[i, 0].imshow(image, interpolation="nearest")
        text = row_titles[i] if row_titles is not None else _label_text(label, dataset)
        axes[i, 0].set_ylabel(text, fontsize=8)
        if masks is not None and masks[i] is not None:
            axes[i, 1].imshow(mask_to_rgb(masks[i], dataset), interpolation="nearest")
        for k, name in enumerate(names):
            ax = axes[i, k + first]
            if overlay:
                ax.imshow(image, interpolation="nearest")
            ax.imshow(
                _unit(maps[k]),
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
        fig.legend(
            handles=legend_handles(dataset), loc="outside lower center", ncol=5, fontsize=8, frameon=False
        )
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    scale = ScalarMappable(Normalize(0, 1), cmap="jet")
    fig.colorbar(scale, ax=axes, shrink=0.6, label="CAM (min-max per map)")
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
    maps = _numpy(cams).astype(np.float64)
    if maps.ndim != 3:
        raise ValueError(f"cams must be K×H×W, got shape {maps.shape}")
    present = np.ones(len(maps), bool) if label is None else _numpy(label).astype(bool)
    if not present.any():
        return np.zeros((*maps.shape[1:], 3), dtype=np.uint8)
    scaled = np.full(maps.shape, -np.inf)
    scaled[present] = _unit(maps[present])
    winner = scaled.argmax(axis=0)
    strength = np.take_along_axis(scaled, winner[None], axis=0)[0]
    colours = _palette(dataset)[winner].astype(np.float64)
    return np.round(colours * strength[..., None]).astype(np.uint8)


def _pm_panels(image, cams, pseudo, truth, label, dataset: str) -> list[tuple[np.ndarray, str]]:
    panels = [
        (to_uint8_image(image), f"image: {_label_text(label, dataset)}"),
        (cam_to_rgb(cams, label, dataset), "CAM (class colour)"),
        (mask_to_rgb(pseudo, dataset), "pseudo mask"),
    ]
    if truth is None:
        return panels
    pseudo, truth = _numpy(pseudo), _numpy(truth)
    scored = truth < BACKGROUND
    wrong = scored & (pseudo != truth)
    error = np.where(
        scored[..., None], np.array([235, 235, 235], np.uint8), np.array([120, 120, 120], np.uint8)
    )
    error[wrong] = (220, 30, 30)
    rate = f"{100 * wrong.sum() / max(scored.sum(), 1):.0f}% wrong"
    return [*panels, (mask_to_rgb(truth, dataset), "truth (train_gt)"), (error, f"errors ({rate})")]


def _check_pm_args(images, cams, pseudo, truth, labels) -> int:
    n = len(images)
    lengths = [len(cams), len(pseudo), len(labels)] + ([] if truth is None else [len(truth)])
    if n == 0 or any(k != n for k in lengths):
        raise ValueError("images, cams, pseudo, truth and labels must have the same (non-zero) length")
    return n


def pseudo_mask_panels(
    images: Sequence,
    cams: Sequence,
    pseudo: Sequence,
    truth: Sequence | None,
    labels: Sequence,
    dataset: str = "luad",
    title: str | None = None,
    dpi: int = 80,
) -> Figure:
    """One row per image: image, class-coloured CAM (:func:`cam_to_rgb`), pseudo mask, truth and the error
    map (red: tissue pixel whose pseudo mask differs from the truth; dark grey: truth 4, not scored).

    With ``truth=None`` (real data: no pixel truth for the training split) only the first three panels.
    ``dpi`` is the display resolution (80 keeps notebooks small).
    """
    n = _check_pm_args(images, cams, pseudo, truth, labels)
    ncols = 3 if truth is None else 5
    fig = Figure(figsize=(1.8 * ncols, 1.85 * n + 0.8), dpi=dpi, layout="constrained")
    axes = fig.subplots(n, ncols, squeeze=False)
    for i in range(n):
        gt = None if truth is None else truth[i]
        for ax, (panel, name) in zip(
            axes[i], _pm_panels(images[i], cams[i], pseudo[i], gt, labels[i], dataset), strict=True
        ):
            ax.imshow(panel, interpolation="nearest")
            ax.set_title(name, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.legend(handles=legend_handles(dataset), loc="outside lower center", ncol=5, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def pseudo_mask_browser(
    images: Sequence,
    cams: Sequence,
    pseudo: Sequence,
    truth: Sequence | None,
    labels: Sequence,
    dataset: str = "luad",
):
    """An ipywidgets browser over :func:`pseudo_mask_panels` rows: a slider picks the image.

    Returns an ``ipywidgets.VBox`` (slider + PNG image); display it in a notebook. The panel is rendered to
    PNG bytes in an ``ipywidgets.Image`` rather than captured in an ``Output`` widget, so executing the
    cell headless (papermill, nbclient) sends no captured output and cannot stall on it. Headless runs keep
    only the first image, so notebooks also draw a static :func:`pseudo_mask_panels` figure.
    """
    import io

    import ipywidgets as widgets

    n = _check_pm_args(images, cams, pseudo, truth, labels)
    slider = widgets.IntSlider(value=0, min=0, max=n - 1, description="image", continuous_update=False)
    view = widgets.Image(format="png")

    def draw(change=None) -> None:
        i = slider.value
        gt = None if truth is None else [truth[i]]
        fig = pseudo_mask_panels([images[i]], [cams[i]], [pseudo[i]], gt, [labels[i]], dataset)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")
        view.value = buffer.getvalue()

    slider.observe(draw, names="value")
    draw()
    return widgets.VBox([slider, view])


def background_rule_figure(
    image, threshold: float = 200.0, min_size: int = 50, title: str | None = None
) -> Figure:
    """The LUAD background rule on one image: grey level, ``grey > threshold``, and the mask after white
    blobs smaller than ``min_size`` pixels are dropped (removed specks in red), via
    :func:`arml.cams.background_mask`."""
    import torch

    from arml.cams import background_mask, grey_level

    rgb = to_uint8_image(image)
    x = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)[None]
    grey = grey_level(x)[0].numpy()
    raw = grey > threshold
    kept = background_mask(x, threshold, min_size)[0].numpy()
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


def confusion_heatmaps(
    matrices: dict[str, object], class_names: Sequence[str], title: str | None = None
) -> Figure:
    """Row-normalised confusion matrices side by side (seaborn heatmaps, rows = truth, columns = prediction)."""
    import seaborn as sns

    if not matrices:
        raise ValueError("confusion_heatmaps needs at least one matrix")
    fig = Figure(figsize=(3.9 * len(matrices), 3.6), layout="constrained")
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    for ax, (name, matrix) in zip(axes, matrices.items(), strict=True):
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.shape != (len(class_names), len(class_names)):
            raise ValueError(
                f"{name}: matrix must be {len(class_names)}×{len(class_names)}, got {matrix.shape}"
            )
        sns.heatmap(
            matrix,
            ax=ax,
            vmin=0,
            vmax=1,
            cmap="Blues",
            annot=True,
            fmt=".2f",
            square=True,
            cbar=False,
            xticklabels=class_names,
            yticklabels=class_names,
            annot_kws={"fontsize": 8},
        )
        ax.set(xlabel="pseudo mask", ylabel="truth", title=name)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def attention_figure(image, attention, query: tuple[int, int], title: str | None = None) -> Figure:
    """Criss-cross attention of one query position, painted over the image.

    Args:
        image: ``3×H×W`` in [0, 1] or ``H×W×3`` uint8.
        attention: ``h×w`` map at feature resolution from :func:`arml.analysis.attention_map`.
        query: ``(i, j)`` of the query in feature coordinates (marked with a cross).
    """
    rgb = to_uint8_image(image)
    attn = _numpy(attention).astype(np.float64)
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
    """Overlaid histograms (log count) of several named samples on shared bins, with their 99th percentile."""
    if not samples:
        raise ValueError("activation_histograms needs at least one sample")
    data = {k: _numpy(v).astype(np.float64).ravel() for k, v in samples.items()}
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


def scatter_plot(
    series: dict[str, tuple[object, object]], xlabel: str, ylabel: str, title: str | None = None
) -> Figure:
    """Scatter plots of named ``(x, y)`` samples side by side, each titled with its Spearman rank correlation."""
    from scipy.stats import spearmanr

    if not series:
        raise ValueError("scatter_plot needs at least one series")
    fig = Figure(figsize=(3.9 * len(series), 3.4), layout="constrained")
    axes = fig.subplots(1, len(series), squeeze=False)[0]
    for ax, (name, (x, y)) in zip(axes, series.items(), strict=True):
        x, y = _numpy(x).astype(np.float64).ravel(), _numpy(y).astype(np.float64).ravel()
        if x.shape != y.shape:
            raise ValueError(f"series {name!r}: x and y differ in size ({x.size} vs {y.size})")
        rho = spearmanr(x, y).statistic if x.size > 2 else float("nan")
        ax.scatter(x, y, s=4, alpha=0.4, linewidths=0)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{name} (Spearman ρ = {rho:.2f})")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
