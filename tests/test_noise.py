"""The noise laboratory (arml.noise): each corruption on hand-made masks, and whole-dataset folders."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from arml.datasets import BACKGROUND, TrainDataset, format_train_name, list_pngs, read_mask, write_mask
from arml.noise import (
    CORRUPTIONS,
    RATE_TOLERANCE,
    blur,
    boundary,
    corrupt_dataset,
    drop,
    swap,
    wrong_fraction,
)
from arml.options import NOISE_KINDS


def rng(seed=0):
    return np.random.default_rng(seed)


def halves(size=16, background_row=True):
    """Left half class 0, right half class 1; row 0 background (4) when asked."""
    mask = np.zeros((size, size), np.uint8)
    mask[:, size // 2 :] = 1
    if background_row:
        mask[0] = BACKGROUND
    return mask


def make_root(tmp_path, masks_and_labels, name="hand"):
    """A training split (grey images) with the given truth masks and image-level labels, LUAD names."""
    root = tmp_path / name
    for i, (mask, label) in enumerate(masks_and_labels):
        file_name = format_train_name(f"h{i:03d}-0-0-", label, "luad")
        (root / "train").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((*mask.shape, 3), 128, np.uint8)).save(root / "train" / file_name)
        write_mask(root / "train_gt" / file_name, mask)
    return root


def test_noise_kinds_match_the_corruptions():
    assert tuple(CORRUPTIONS) == NOISE_KINDS == ("boundary", "swap", "drop", "blur")


# ------------------------------------------------------------------------------------------ boundary
def test_boundary_shift_of_two_pixels_moves_two_columns_on_one_side():
    mask = halves()
    out = boundary(mask, (0, 1), 2, rng(0))
    changed = out != mask
    assert changed.sum() == 2 * 15  # two columns of the 15 tissue rows
    cols = np.unique(np.nonzero(changed)[1]).tolist()
    assert cols in ([6, 7], [8, 9])
    grown = 1 if cols == [6, 7] else 0
    assert (out[changed] == grown).all()
    assert (out[0] == BACKGROUND).all()


def test_boundary_winner_is_random_per_seed_and_only_label_classes_grow():
    mask = halves()
    sides = {tuple(np.unique(np.nonzero(boundary(mask, (0, 1), 1, rng(s)) != mask)[1])) for s in range(20)}
    assert sides == {(7,), (8,)}  # both classes win for some seeds, one column each at k=1
    for s in range(10):  # class 1 is not in the label: it never grows, so class 0 always does
        out = boundary(mask, (0,), 3, rng(s))
        assert np.unique(np.nonzero(out != mask)[1]).tolist() == [8, 9, 10]
    assert (boundary(mask, (0, 1), 0, rng(0)) == mask).all()


# ---------------------------------------------------------------------------------------------- swap
def test_swap_relabels_whole_regions_to_another_label_class():
    mask = halves()
    out = swap(mask, (0, 1), 1.0, rng(0))  # strength 1: every region
    assert (out[mask == 0] == 1).all() and (out[mask == 1] == 0).all()
    assert (out[0] == BACKGROUND).all()
    assert (swap(mask, (0, 1), 0.0, rng(0)) == mask).all()
    for s in range(10):  # three label classes: the left region takes 1 or 2, all of it
        left = swap(mask, (0, 1, 2), 1.0, rng(s))[mask == 0]
        assert len(np.unique(left)) == 1 and left[0] in (1, 2)


def test_swap_cannot_touch_a_one_class_image():
    mask = np.zeros((8, 8), np.uint8)
    assert (swap(mask, (0,), 1.0, rng(0)) == mask).all()


def test_swap_picks_regions_independently():
    mask = np.zeros((16, 16), np.uint8)
    mask[:, 4:8] = mask[:, 12:] = 1  # two class-1 stripes: two regions, plus two class-0 regions
    counts = [int((swap(mask, (0, 1), 0.5, rng(s)) != mask).sum()) for s in range(30)]
    assert len(set(counts)) > 2  # some but not all regions, varying with the seed


def test_regions_are_four_connected():
    mask = np.array([[1, 0], [0, 1]], np.uint8)  # diagonal pixels: four regions, not two
    outs = [swap(mask, (0, 1), 0.5, rng(s)) for s in range(30)]
    assert any(out[0, 0] != out[1, 1] for out in outs)


# ---------------------------------------------------------------------------------------------- drop
def test_drop_absorbs_a_three_pixel_island():
    mask = np.zeros((16, 16), np.uint8)
    mask[5, 5:8] = 2  # a 3-pixel island of class 2 inside class 0
    mask[12:, 12:] = BACKGROUND
    assert (drop(mask, (0, 2), 3, rng(0)) == np.where(mask == 2, 0, mask)).all()
    assert (drop(mask, (0, 2), 2, rng(0)) == mask).all()  # regions of more than 2 px stay
    assert (drop(mask, (0, 2), 10_000, rng(0)) == np.where(mask == 2, 0, mask)).all()  # the largest stays


def test_drop_goes_to_the_largest_larger_neighbour_and_skips_islands_in_background():
    mask = np.full((12, 12), BACKGROUND, np.uint8)
    mask[:, :6] = 0  # 72 px
    mask[:4, 6:] = 1  # 24 px
    mask[4:6, 5:7] = 3  # a 4-px region touching class 0 (larger) and class 1 (larger): goes to 0
    mask[10, 10] = 2  # a lone pixel surrounded by background: nothing can absorb it
    out = drop(mask, (0, 1, 2, 3), 5, rng(0))
    assert (out[4:6, 5:7] == 0).all()
    assert out[10, 10] == 2
    assert ((out != mask) == (mask == 3)).all()


# ---------------------------------------------------------------------------------------------- blur
def test_blur_changes_only_pixels_near_the_boundary_and_keeps_the_label():
    mask = halves(32)
    moved = 0
    for s in range(8):  # the grid's offset varies: a cell edge on the boundary keeps it exact
        out = blur(mask, (0, 1, 3), 8, rng(s))
        changed = np.nonzero(out != mask)
        moved += changed[0].size
        assert (np.abs(changed[1] - 15.5) < 8).all()  # within one cell of the boundary
        assert set(np.unique(out[mask != BACKGROUND]).tolist()) <= {0, 1}  # 3 is in no cell: never wins
        assert (out[0] == BACKGROUND).all()
    assert moved > 0
    assert (blur(mask, (0, 1), 1, rng(0)) == mask).all()  # 1-px cells: exact


def test_blur_erases_thin_structures():
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 16] = 1  # a one-pixel line
    assert (blur(mask, (0, 1), 8, rng(0)) == 0).all()


# ------------------------------------------------------------------------------------- all four kinds
@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_every_kind_keeps_background_is_pure_and_deterministic(kind, quick_synth):
    truth_dir = quick_synth / "train_gt"
    dataset = TrainDataset(quick_synth, "luad")
    total_changed = 0
    for path, label in list(zip(dataset.files, dataset.labels, strict=True))[:12]:
        truth = read_mask(truth_dir / path.name)
        classes = tuple(c for c in range(4) if label[c])
        before = truth.copy()
        strength = {"boundary": 3, "swap": 0.5, "drop": 200, "blur": 8}[kind]
        out = CORRUPTIONS[kind](truth, classes, strength, rng(1))
        assert (truth == before).all()  # the input is not modified
        assert out.dtype == np.uint8 and out.shape == truth.shape
        assert ((out == BACKGROUND) == (truth == BACKGROUND)).all()
        assert set(np.unique(out[truth != BACKGROUND]).tolist()) <= set(classes) | set(
            np.unique(truth).tolist()
        )
        assert (CORRUPTIONS[kind](truth, classes, strength, rng(1)) == out).all()
        total_changed += int((out != truth).sum())
    assert total_changed > 0


def test_wrong_fraction_counts_tissue_only():
    truth = np.array([[0, 1], [BACKGROUND, 1]], np.uint8)
    mask = np.array([[1, 1], [0, 0]], np.uint8)
    assert wrong_fraction(mask, truth) == pytest.approx(2 / 3)
    assert wrong_fraction([mask, truth], [truth, truth]) == pytest.approx(2 / 6)  # pooled
    assert np.isnan(wrong_fraction(truth, np.full((2, 2), BACKGROUND, np.uint8)))


# ------------------------------------------------------------------------------------ corrupt_dataset
@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_corrupt_dataset_reaches_the_rate_and_writes_a_pseudo_mask_folder(kind, quick_copy):
    result = corrupt_dataset(quick_copy, kind, 0.1, seed=0, progress=False)
    folder = quick_copy / "train_PM" / f"noise-{kind}-0.10-s0"
    assert result["name"] == folder.name and result["folder"] == str(folder)
    assert abs(result["rate"] - 0.1) <= RATE_TOLERANCE and result["requested_rate"] == 0.1
    names = [p.name for p in list_pngs(quick_copy / "train")]
    assert [p.name for p in list_pngs(folder)] == names
    written = [read_mask(folder / n) for n in names]
    truths = [read_mask(quick_copy / "train_gt" / n) for n in names]
    assert wrong_fraction(written, truths) == pytest.approx(result["rate"])
    assert 0 < result["miou"] < 1
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["method"] == "noise" and manifest["kind"] == kind
    assert manifest["requested_rate"] == 0.1 and manifest["achieved_rate"] == pytest.approx(result["rate"])
    assert manifest["seed"] == 0 and manifest["count"] == len(names)
    assert manifest["miou"] == pytest.approx(result["miou"])
    assert manifest["data"]["folders"]["train"]["files"] == len(names)


def test_stage2_accepts_the_folder_and_refuses_it_for_other_training_images(quick_copy):
    from arml.runfolder import validate_inputs
    from arml.stage2 import SegConfig, data_of, resolve_mask_dir

    result = corrupt_dataset(quick_copy, "swap", 0.2, progress=False)
    config = SegConfig(str(quick_copy), masks=result["name"], progress=False)
    assert resolve_mask_dir(config) == quick_copy / "train_PM" / result["name"]
    assert "masks manifest" in data_of(config)["upstream"]
    validate_inputs(quick_copy, "luad", ("train",), resolve_mask_dir(config))
    _, mask, _ = TrainDataset(quick_copy, "luad", mask_dir=resolve_mask_dir(config))[0]
    assert mask.shape == (64, 64)
    list_pngs(quick_copy / "train")[0].unlink()  # the training images change after the masks were made
    with pytest.raises(ValueError, match="other training images"):
        resolve_mask_dir(config)


def test_same_request_reuses_other_request_is_refused_unless_overwrite(quick_copy):
    first = corrupt_dataset(quick_copy, "boundary", 0.15, seed=3, name="lab", progress=False)
    folder = quick_copy / "train_PM" / "lab"
    stamp = os.stat(folder / "manifest.json").st_mtime_ns
    again = corrupt_dataset(quick_copy, "boundary", 0.15, seed=3, name="lab", progress=False)
    assert again["reused"] and not first["reused"]
    assert again["rate"] == first["rate"] and again["miou"] == first["miou"]
    assert os.stat(folder / "manifest.json").st_mtime_ns == stamp
    with pytest.raises(ValueError, match="overwrite"):
        corrupt_dataset(quick_copy, "boundary", 0.15, seed=4, name="lab", progress=False)
    with pytest.raises(ValueError, match="config.kind"):
        corrupt_dataset(quick_copy, "drop", 0.15, seed=3, name="lab", progress=False)
    other = corrupt_dataset(quick_copy, "drop", 0.15, seed=3, name="lab", overwrite=True, progress=False)
    assert not other["reused"] and json.loads((folder / "manifest.json").read_text())["kind"] == "drop"


def test_same_seed_same_masks_other_seed_other_masks(quick_copy):
    a = corrupt_dataset(quick_copy, "swap", 0.1, seed=0, name="a", progress=False)
    b = corrupt_dataset(quick_copy, "swap", 0.1, seed=0, name="b", progress=False)
    c = corrupt_dataset(quick_copy, "swap", 0.1, seed=1, name="c", progress=False)
    names = [p.name for p in list_pngs(quick_copy / "train")]
    same = [
        (read_mask(quick_copy / "train_PM/a" / n) == read_mask(quick_copy / "train_PM/b" / n)).all()
        for n in names
    ]
    other = [
        (read_mask(quick_copy / "train_PM/a" / n) == read_mask(quick_copy / "train_PM/c" / n)).all()
        for n in names
    ]
    assert all(same) and not all(other)
    assert a["rate"] == b["rate"] and abs(c["rate"] - 0.1) <= RATE_TOLERANCE


def test_rate_zero_copies_the_truth(quick_copy):
    result = corrupt_dataset(quick_copy, "blur", 0.0, progress=False)
    assert result["rate"] == 0 and result["miou"] == pytest.approx(1.0)


def test_hand_made_dataset_hits_the_rate_exactly(tmp_path):
    # 10 images, each 8 px of class 0 and 8 px of class 1 on an 4×4 grid: 160 tissue pixels
    mask = np.zeros((4, 4), np.uint8)
    mask[:, 2:] = 1
    root = make_root(tmp_path, [(mask, (1, 1, 0, 0))] * 10)
    result = corrupt_dataset(root, "swap", 0.2, progress=False)  # 32 px = four regions of 8
    assert result["rate"] == pytest.approx(0.2)
    assert result["miou"] < 1


def test_unreachable_rates_name_the_maximum_and_leave_no_folder(tmp_path, quick_copy):
    single = make_root(
        tmp_path, [(np.full((8, 8), c, np.uint8), tuple(int(i == c) for i in range(4))) for c in range(4)]
    )
    with pytest.raises(ValueError, match=r"maximum reachable is 0\.000"):
        corrupt_dataset(single, "swap", 0.1, progress=False)
    assert not (single / "train_PM" / "noise-swap-0.10-s0").exists()
    with pytest.raises(ValueError, match=r"maximum reachable is 0\.\d+"):
        corrupt_dataset(quick_copy, "drop", 0.9, progress=False)
    assert not (quick_copy / "train_PM").exists()


@pytest.mark.parametrize(
    ("kind", "rate", "message"),
    [
        ("noisy", 0.1, "boundary"),  # the choices are listed
        ("boundary", -0.1, r"\[0, 0\.9\]"),
        ("boundary", 0.95, r"\[0, 0\.9\]"),
        ("boundary", float("nan"), r"\[0, 0\.9\]"),
        ("boundary", "0.1", r"\[0, 0\.9\]"),
        ("boundary", True, r"\[0, 0\.9\]"),
    ],
)
def test_bad_kind_or_rate_is_refused(kind, rate, message, tiny_root):
    with pytest.raises(ValueError, match=message):
        corrupt_dataset(tiny_root, kind, rate, progress=False)


def test_bad_name_and_missing_truth_are_refused(tiny_root):
    with pytest.raises(ValueError, match="plain folder name"):
        corrupt_dataset(tiny_root, "swap", 0.1, name="../escape", progress=False)
    shutil.rmtree(tiny_root / "train_gt")
    with pytest.raises(FileNotFoundError, match="train_gt"):
        corrupt_dataset(tiny_root, "swap", 0.1, progress=False)
    assert not (tiny_root / "train_PM").exists()
