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


BROWSER_HINT = (
    "Interactive: run the cells above to use the slider (the static figure above shows image 1 of {n})."
)
"""The one line a reader without a live kernel sees in place of :func:`pseudo_mask_browser`'s widget."""

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class PseudoMaskBrowser:
    """What :func:`pseudo_mask_browser` returns: the live widget plus what a reader without a kernel sees.

    Displayed in a notebook (:meth:`_ipython_display_`) it emits two outputs, :meth:`mimebundles`:

    1. a static PNG of the first image's panels (``image/png``), which every viewer renders (an untrusted
       JupyterLab notebook, nbconvert's HTML, GitHub);
    2. the widget view whose ``text/plain`` is :data:`BROWSER_HINT` instead of the widget's repr
       (``VBox(children=(IntSlider(...``): a live, trusted JupyterLab renders the slider and image from the
       ``application/vnd.jupyter.widget-view+json`` entry; anything else falls back to the one-line hint.

    Attributes:
        widget: the ``ipywidgets.VBox`` (``slider``, ``view``).
        slider: ``ipywidgets.IntSlider`` over the image indices ``0..n-1``.
        view: ``ipywidgets.Image`` holding the PNG of the selected image's panels.
        first_png: PNG bytes of image 0's panels (the static copy).
    """

    def __init__(self, widget, first_png: bytes) -> None:
        self.widget = widget
        self.slider, self.view = widget.children
        self.first_png = first_png

    def mimebundles(self) -> list[dict[str, object]]:
        """The two raw display bundles described in the class docstring, in display order."""
        import base64

        n = self.slider.max + 1
        static = {
            "image/png": base64.b64encode(self.first_png).decode("ascii"),
            "text/plain": f"<static panels of image 1 of {n}>",
        }
        live = {
            WIDGET_VIEW: self.widget._repr_mimebundle_()[WIDGET_VIEW],
            "text/plain": BROWSER_HINT.format(n=n),
        }
        return [static, live]

    def _ipython_display_(self) -> None:
        from IPython.display import display

        for bundle in self.mimebundles():
            display(bundle, raw=True)


def pseudo_mask_browser(
    images: Sequence,
    cams: Sequence,
    pseudo: Sequence,
    truth: Sequence | None,
    labels: Sequence,
    dataset: str = "luad",
) -> PseudoMaskBrowser:
    """An ipywidgets browser over :func:`pseudo_mask_panels` rows: a slider picks the image.

    Returns a :class:`PseudoMaskBrowser`; make it the last expression of a cell. A live kernel shows the
    slider and a PNG ``ipywidgets.Image`` of the selected row; a notebook read without one (untrusted in
    JupyterLab, rendered to HTML, or executed headless) shows a static PNG of the first row and the one-line
    :data:`BROWSER_HINT` rather than the widget's text repr. The panel is rendered to PNG bytes rather than
    captured in an ``Output`` widget, so executing the cell headless (papermill, nbclient) sends no captured
    output and cannot stall on it.
    """
    import io

    import ipywidgets as widgets

    n = _check_lengths(images, cams, pseudo, truth, labels)
    slider = widgets.IntSlider(value=0, min=0, max=n - 1, description="image", continuous_update=False)
    view = widgets.Image(format="png")

    def render(i: int) -> bytes:
        gt = None if truth is None else [truth[i]]
        fig = pseudo_mask_panels([images[i]], [cams[i]], [pseudo[i]], gt, [labels[i]], dataset)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()

    def draw(change=None) -> None:
        view.value = render(slider.value)

    slider.observe(draw, names="value")
    draw()
    return PseudoMaskBrowser(widgets.VBox([slider, view]), first_png=view.value)


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
