from dataclasses import replace

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from arml.datasets import PALETTES
from arml.synth import SYNTH_PROFILES, generate_dataset
from arml.viz import dataset_grid, figures_dir, legend_handles, mask_to_rgb, overlay, patch_grid, savefig


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


def test_dataset_grid_on_synthetic_and_plain_folders(tmp_path, tiny_root):
    config = replace(SYNTH_PROFILES["quick"], n_train=4, n_val=2, n_test=2)
    root = generate_dataset(tmp_path / "syn", config, workers=1, progress=False)
    for split in ("train", "test"):
        fig = dataset_grid(root, split, n=3)
        assert isinstance(fig, Figure) and "synthetic" in fig._suptitle.get_text()
    fig = dataset_grid(tiny_root, "val", n=5)
    assert "synthetic" not in fig._suptitle.get_text()
    assert isinstance(dataset_grid(tiny_root, "train"), Figure)
