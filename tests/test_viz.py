"""arml.viz: the package's public face, the base helpers (palettes, savefig) and the data figures."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import arml.viz
from arml.datasets import PALETTES
from arml.viz import (
    dataset_grid,
    figures_dir,
    legend_handles,
    mask_to_rgb,
    overlay,
    patch_grid,
    pipeline_diagram,
    prediction_grid,
    savefig,
    to_uint8_image,
)


def test_viz_exports_figures_but_no_computation():
    public = {name for name in dir(arml.viz) if not name.startswith("_")}
    modules = {"base", "charts", "data", "pseudo", "stage1", "stage2", "training"}
    assert public - modules == set(arml.viz.__all__)
    assert all(callable(getattr(arml.viz, name)) for name in arml.viz.__all__)
    for moved in ("swv_weight_map", "relation_matrices", "sample_patches", "mean_std", "rank_correlation"):
        assert not hasattr(arml.viz, moved)


@pytest.mark.parametrize("dataset", ["luad", "bcss"])
def test_mask_to_rgb_colours_every_index(dataset):
    mask = np.array([[0, 1, 2], [3, 4, 255]], dtype=np.uint8)
    rgb = mask_to_rgb(torch.from_numpy(mask).long(), dataset)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    for (i, j), v in np.ndenumerate(mask):
        assert tuple(rgb[i, j]) == (PALETTES[dataset][v] if v < 5 else (0, 0, 0))


def test_mask_to_rgb_rejects_unknown_values():
    with pytest.raises(ValueError, match="mask values must be"):
        mask_to_rgb(np.array([[0, 7]]))
    with pytest.raises(ValueError, match="dataset must be one of"):
        mask_to_rgb(np.zeros((2, 2), dtype=np.uint8), "kather")


def test_to_uint8_image_accepts_both_layouts():
    chw = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1).expand(3, 2, 4)
    assert to_uint8_image(chw).shape == (2, 4, 3) and to_uint8_image(chw)[0, 0].tolist() == [0, 128, 255]
    hwc = np.zeros((2, 2, 3), dtype=np.uint8)
    assert to_uint8_image(hwc) is hwc
    with pytest.raises(ValueError, match="3×H×W or H×W×3"):
        to_uint8_image(np.zeros((2, 2)))


def test_overlay_blends_and_keeps_ignored_pixels():
    image = torch.full((3, 2, 2), 0.5)
    mask = np.array([[0, 4], [2, 255]])
    assert np.array_equal(overlay(image, mask, alpha=0.0), np.full((2, 2, 3), 128, dtype=np.uint8))
    full = overlay(np.full((2, 2, 3), 128, dtype=np.uint8), mask, alpha=1.0)
    assert tuple(full[0, 0]) == PALETTES["luad"][0] and tuple(full[1, 0]) == PALETTES["luad"][2]
    assert tuple(full[1, 1]) == (128, 128, 128)
    with pytest.raises(ValueError, match="does not match"):
        overlay(image, np.zeros((3, 3), dtype=np.uint8))


def test_legend_handles():
    handles = legend_handles("bcss")
    assert [h.get_label() for h in handles] == ["TUM", "STR", "LYM", "NEC", "BG/excluded"]


def test_savefig_writes_png(tmp_path, monkeypatch):
    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1])
    path = savefig(fig, "line", folder=tmp_path / "figs")
    assert path == tmp_path / "figs" / "line.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setenv("ARML_FIGURES", str(tmp_path / "env"))
    assert figures_dir() == tmp_path / "env"
    assert savefig(fig, "line.png").parent == tmp_path / "env"
    with pytest.raises(ValueError, match="bare file name"):
        savefig(fig, "sub/line.png", folder=tmp_path)


def test_patch_grid_returns_a_figure():
    images = [np.full((8, 8, 3), 200, dtype=np.uint8), torch.rand(3, 8, 8), torch.rand(3, 8, 8)]
    masks = [np.zeros((8, 8), dtype=np.uint8), None, np.full((8, 8), 4, dtype=np.uint8)]
    fig = patch_grid(images, masks, labels=[(1, 0, 0, 1), (0, 0, 0, 0), "any"], title="t", ncols=2)
    assert isinstance(fig, Figure) and fig._suptitle.get_text() == "t"
    assert [a.get_title() for a in fig.axes[:2]] == ["TE TAS", "(none)"]
    with pytest.raises(ValueError, match="masks has 1 entries for 3 images"):
        patch_grid(images, masks[:1])


def test_dataset_grid_titles(tmp_path, tiny_root):
    fig = dataset_grid(tiny_root, "val", n=5)
    assert fig._suptitle.get_text() == "LUAD — tiny/val: 2 of 2 patches (titles: classes in mask)"
    assert fig.axes[0].get_title() == "TE NEC"  # v0: mask holds classes 0 and 1
    (tiny_root / "synth.json").write_text('{"seed": 3}')
    fig = dataset_grid(tiny_root, "train", n=2)
    assert fig._suptitle.get_text().startswith("synthetic H&E (arml.synth, seed 3) — tiny/train: 2 of 3")
    assert dataset_grid(tiny_root, "test", title="mine")._suptitle.get_text() == "mine"
    with pytest.raises(ValueError, match="split must be"):
        dataset_grid(tiny_root, "holdout")


def test_prediction_grid():
    images = [torch.rand(3, 4, 4), np.zeros((4, 4, 3), dtype=np.uint8)]
    masks = [np.zeros((4, 4), dtype=np.uint8), np.full((4, 4), 4, dtype=np.uint8)]
    fig = prediction_grid(images, {"truth": masks, "model": masks}, "bcss", title="synthetic")
    assert [a.get_title() for a in fig.axes[:3]] == ["image", "truth", "model"]
    with pytest.raises(ValueError, match="column 'model' has 1 masks for 2 images"):
        prediction_grid(images, {"model": masks[:1]})
    with pytest.raises(ValueError, match="at least one image"):
        prediction_grid([], {})


def test_pipeline_diagram(tmp_path):
    fig = pipeline_diagram()
    assert "ARML" in fig.axes[0].get_title()
    assert savefig(fig, "pipeline", folder=tmp_path).stat().st_size > 10_000
