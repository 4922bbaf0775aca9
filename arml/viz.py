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
