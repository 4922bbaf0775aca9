"""arml.viz.stage1 and arml.viz.pseudo: CAM grids, ARS and background-rule figures, pseudo-mask panels."""

import base64

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from arml.datasets import PALETTES
from arml.viz import (
    activation_histograms,
    attention_figure,
    background_rule_figure,
    cam_grid,
    cam_to_rgb,
    confusion_heatmaps,
    pseudo_mask_browser,
    pseudo_mask_panels,
)
from arml.viz.pseudo import BROWSER_HINT, WIDGET_VIEW


def _examples(n=2, size=16):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=g) for _ in range(n)]
    cams = [torch.rand(4, size, size, generator=g) for _ in range(n)]
    truth = [np.full((size, size), i % 4, dtype=np.uint8) for i in range(n)]
    pseudo = [np.full((size, size), (i + 1) % 4, dtype=np.uint8) for i in range(n)]
    labels = [(1, 0, 1, 0)] * n
    return images, cams, pseudo, truth, labels


def test_cam_grid_marks_absent_classes():
    images, cams, _, _, labels = _examples()
    fig = cam_grid(images, cams, labels, title="synthetic")
    titles = [ax.get_title() for ax in fig.axes[:5]]
    assert titles == ["image", "TE", "NEC (absent)", "LYM", "TAS (absent)"]
    rows = cam_grid([images[0]] * 2, cams, row_titles=["cam", "gradcam"])
    assert rows.axes[5].get_ylabel() == "gradcam"
    with_truth = cam_grid(images, cams, labels, masks=[np.zeros((16, 16), np.uint8), None])
    assert [ax.get_title() for ax in with_truth.axes[:2]] == ["image", "truth"]
    with pytest.raises(ValueError, match="one CAM stack"):
        cam_grid(images, cams[:1])
    with pytest.raises(ValueError, match="4×H×W"):
        cam_grid(images[:1], [torch.rand(4, 8, 8)])


def test_cam_to_rgb_picks_the_strongest_present_class():
    cams = np.zeros((4, 2, 2))
    cams[0, 0, 0] = 1.0
    cams[2, 1, 1] = 0.5
    cams[3] = 9.0  # absent: may not win
    rgb = cam_to_rgb(cams, (1, 0, 1, 0))
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == PALETTES["luad"][0]
    assert tuple(rgb[1, 1]) == tuple(round(c * 0.5) for c in PALETTES["luad"][2])
    assert not cam_to_rgb(cams, (0, 0, 0, 0)).any()


def test_pseudo_mask_panels_and_browser():
    images, cams, pseudo, truth, labels = _examples()
    fig = pseudo_mask_panels(images, cams, pseudo, truth, labels, title="t")
    assert len(fig.axes) == 10 and fig.axes[4].get_title() == "errors (100% wrong)"
    with pytest.raises(ValueError, match="same"):
        pseudo_mask_panels(images, cams, pseudo[:1], truth, labels)
    browser = pseudo_mask_browser(images, cams, pseudo, truth, labels)
    slider, view = browser.widget.children
    first = view.value
    assert slider.max == 1 and first[:8] == b"\x89PNG\r\n\x1a\n" and browser.first_png == first
    slider.value = 1
    assert view.value != first and browser.first_png == first
    real = pseudo_mask_panels(images, cams, pseudo, None, labels)  # no train_gt: three panels
    assert len(real.axes) == 6


def test_pseudo_mask_browser_shows_a_static_figure_and_a_hint_without_a_kernel(monkeypatch):
    images, cams, pseudo, truth, labels = _examples(n=3)
    browser = pseudo_mask_browser(images, cams, pseudo, truth, labels)
    static, live = browser.mimebundles()
    assert base64.b64decode(static["image/png"]) == browser.first_png  # image 1's panels, always rendered
    assert live["text/plain"] == BROWSER_HINT.format(n=3) and "image 1 of 3" in live["text/plain"]
    assert "VBox(" not in live["text/plain"] and "run the cells above" in live["text/plain"]
    assert live[WIDGET_VIEW]["model_id"] == browser.widget.model_id  # a live kernel still gets the widget
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append((obj, raw)))
    browser._ipython_display_()
    assert shown == [(static, True), (live, True)]


def test_background_rule_figure_counts_removed_specks():
    image = np.full((32, 32, 3), 100, dtype=np.uint8)
    image[:10] = 250
    image[20, 20] = 250
    fig = background_rule_figure(image, threshold=200, min_size=5)
    assert fig.axes[2].get_title().startswith("grey > 200")
    assert fig.axes[3].get_title().endswith(": 31%")  # 320 of 1024 pixels kept, the speck removed


def test_other_stage1_figures():
    eye = np.eye(4)
    assert isinstance(confusion_heatmaps({"a": eye, "b": eye}, ["TE", "NEC", "LYM", "TAS"]), Figure)
    with pytest.raises(ValueError, match="4×4"):
        confusion_heatmaps({"a": np.eye(3)}, ["TE", "NEC", "LYM", "TAS"])
    attn = np.zeros((4, 4))
    attn[1] = attn[:, 2] = 0.1
    assert isinstance(attention_figure(torch.rand(3, 32, 32), attn, (1, 2)), Figure)
    rng = np.random.default_rng(0)
    hist = activation_histograms({"before": rng.random(100), "after": rng.random(100) / 2})
    assert "p99" in hist.axes[0].get_legend().get_texts()[0].get_text()
    five = activation_histograms({f"s{i}": rng.random(50) + i for i in range(5)})
    assert len(five.axes[0].get_legend().get_texts()) == 5  # no sample dropped for want of a colour
