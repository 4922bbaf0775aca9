"""Figures of the pseudo masks (notebook 03): the masks next to their CAM, the truth and the errors.

A pseudo mask M is the per-pixel argmax of the label-gated, normalised CAMs, with the background rule
applied (:mod:`arml.pseudo_masks`). Pixel truth for the training split exists only for the synthetic data
(``train_gt``), so the error panels appear only there; the scores behind them are in :mod:`arml.analysis`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from arml.analysis import error_pixels
from arml.viz.base import label_text, mask_to_rgb, palette_legend, to_uint8_image
from arml.viz.stage1 import cam_to_rgb


def _panels(image, cams, pseudo, truth, label, dataset: str) -> list[tuple[np.ndarray, str]]:
    """One row of :func:`pseudo_mask_panels` as ``(picture, title)`` pairs."""
    panels = [
        (to_uint8_image(image), f"image: {label_text(label, dataset)}"),
        (cam_to_rgb(cams, label, dataset), "CAM (class colour)"),
        (mask_to_rgb(pseudo, dataset), "pseudo mask"),
    ]
    if truth is None:
        return panels
    scored, wrong = error_pixels(pseudo, truth)
    error = np.where(
        scored[..., None], np.array([235, 235, 235], np.uint8), np.array([120, 120, 120], np.uint8)
    )
    error[wrong] = (220, 30, 30)
    rate = f"{100 * wrong.sum() / max(scored.sum(), 1):.0f}% wrong"
    return [*panels, (mask_to_rgb(truth, dataset), "truth (train_gt)"), (error, f"errors ({rate})")]


def _check_lengths(images, cams, pseudo, truth, labels) -> int:
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
    """One row per image: image, class-coloured CAM (:func:`~arml.viz.stage1.cam_to_rgb`), pseudo mask,
    truth and the error map (red: tissue pixel whose pseudo mask differs from the truth, per
    :func:`arml.analysis.error_pixels`; dark grey: truth 4, not scored).

    With ``truth=None`` (real data: no pixel truth for the training split) only the first three panels.
    ``dpi`` is the display resolution (80 keeps notebooks small).
    """
    n = _check_lengths(images, cams, pseudo, truth, labels)
    ncols = 3 if truth is None else 5
    fig = Figure(figsize=(1.8 * ncols, 1.85 * n + 0.8), dpi=dpi, layout="constrained")
    axes = fig.subplots(n, ncols, squeeze=False)
    for i in range(n):
        gt = None if truth is None else truth[i]
        for ax, (panel, name) in zip(
            axes[i], _panels(images[i], cams[i], pseudo[i], gt, labels[i], dataset), strict=True
        ):
            ax.imshow(panel, interpolation="nearest")
            ax.set_title(name, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    palette_legend(fig, dataset)
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

    n = _check_lengths(images, cams, pseudo, truth, labels)
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


def confusion_heatmaps(
    matrices: dict[str, object], class_names: Sequence[str], title: str | None = None
) -> Figure:
    """Row-normalised confusion matrices side by side (seaborn heatmaps, rows = truth, columns = prediction),
    e.g. the ``confusion`` of :func:`arml.analysis.score_masks`."""
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
