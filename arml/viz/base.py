"""What every figure shares: the one :func:`savefig`, the dataset palettes and image helpers.

Figures are plain :class:`matplotlib.figure.Figure` objects, so nothing in :mod:`arml.viz` picks a backend or
touches pyplot's global state; they render headless (Agg) and display in Jupyter as the last expression of a
cell. Every figure a notebook keeps is written by :func:`savefig`, to ``figures/`` unless told otherwise.

Masks are ``H×W`` arrays of class indices: 0..3 tissue, 4 background (or excluded), 255 ignored; each
dataset's palette colours indices 0..4 (:data:`arml.datasets.PALETTES`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from arml.datasets import BACKGROUND, CLASS_NAMES, DATASETS, IGNORE_INDEX, PALETTES
from arml.runtime import atomic_write, default_dir, to_numpy


def figures_dir() -> Path:
    """Where figures go by default: ``$ARML_FIGURES`` if set, else ``<repo root>/figures``."""
    return default_dir("figures")


def savefig(fig: Figure, name: str, folder: str | Path | None = None, dpi: int = 120) -> Path:
    """Save ``fig`` as ``<folder>/<name>.png`` (atomically, no software-version stamp) and return the path.

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


def palette(dataset: str) -> np.ndarray:
    """The dataset's five colours (classes 0..3, background 4) as a ``5×3`` uint8 array."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    return np.array(PALETTES[dataset], dtype=np.uint8)


def mask_to_rgb(mask, dataset: str = "luad") -> np.ndarray:
    """Colour an ``H×W`` index mask (0..4, 255 = ignore) with the dataset palette → ``H×W×3`` uint8.

    Ignored pixels (255) are black. Any other value raises ``ValueError``.
    """
    mask = to_numpy(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be H×W, got shape {mask.shape}")
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: BACKGROUND + 1] = palette(dataset)
    values = np.unique(mask)
    bad = [int(v) for v in values if not (0 <= v <= BACKGROUND or v == IGNORE_INDEX)]
    if bad:
        raise ValueError(f"mask values must be 0..{BACKGROUND} or {IGNORE_INDEX}, found {bad[:5]}")
    return lut[mask.astype(np.uint8)]


def to_uint8_image(image) -> np.ndarray:
    """An ``H×W×3`` uint8 view of a ``3×H×W`` float tensor/array in [0, 1] or an ``H×W×3`` image."""
    image = to_numpy(image)
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
    mask = to_numpy(mask)
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
        for rgb, name in zip(palette(dataset), names, strict=True)
    ]


def palette_legend(fig: Figure, dataset: str) -> None:
    """The palette's legend in one row under the figure (the mask figures all end with it)."""
    fig.legend(handles=legend_handles(dataset), loc="outside lower center", ncol=5, fontsize=8, frameon=False)


def label_text(label, dataset: str) -> str:
    """A panel title for an image-level label: the present classes' abbreviations, ``(none)``, or the string
    itself when ``label`` is text (None gives "")."""
    if label is None or isinstance(label, str):
        return label or ""
    present = [n for n, v in zip(CLASS_NAMES[dataset], label, strict=True) if v]
    return " ".join(present) if present else "(none)"
