import doctest
import json
import math

import numpy as np
import pytest
import torch

import arml.analysis
from arml.analysis import (
    absent_class_rate,
    attention_map,
    background_rule_steps,
    boundary_distance,
    confusable_pairs,
    error_by_distance,
    error_by_region_size,
    error_pixels,
    has_truth,
    label_only_masks,
    mean_std,
    pick_examples,
    pseudo_masks_from_cams,
    rank_correlation,
    read_masks,
    sample_patches,
    score_masks,
)
from arml.ars import CrissCrossAttention
from arml.pseudo_masks import PseudoMaskConfig


def test_doctests():
    assert doctest.testmod(arml.analysis).failed == 0


def test_boundary_distance_by_hand():
    truth = np.array([[0, 0, 0, 1, 1]])
    assert boundary_distance(truth).tolist() == [[2.0, 1.0, 0.0, 0.0, 1.0]]
    assert np.isinf(boundary_distance(np.zeros((3, 3), dtype=np.uint8))).all()
    stacked = boundary_distance(np.stack([truth, truth[:, ::-1]]))
    assert stacked.shape == (2, 1, 5) and stacked[1, 0].tolist() == [1.0, 0.0, 0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="H×W or N×H×W"):
        boundary_distance(np.zeros(4))


def test_score_masks_confusion_rows_and_background_rate():
    truth = np.array([[0, 0, 0, 0], [1, 1, 4, 4]])
    pred = np.array([[0, 0, 1, 4], [1, 1, 0, 0]])
    r = score_masks(pred, truth)
    conf = r["confusion"]
    assert conf.shape == (4, 4)
    assert conf[0].tolist() == pytest.approx([2 / 3, 1 / 3, 0, 0]) and conf[1, 1] == 1
    assert np.isnan(conf[2]).all()  # LYM absent from the truth
    assert r["background_rate"][:2].tolist() == pytest.approx([0.25, 0.0])
    assert r["iou"][0] == pytest.approx(0.5) and r["iou"][1] == pytest.approx(2 / 3)


def test_confusable_pairs_orders_off_diagonal():
    conf = np.array([[0.7, 0.3, 0, 0], [0.1, 0.9, 0, 0], [0, 0, 1, 0], [0.05, 0, 0.15, 0.8]])
    pairs = confusable_pairs(conf, ["a", "b", "c", "d"], top=2)
    assert pairs == [("a", "b", 0.3), ("d", "c", 0.15)]


def test_error_by_distance_and_region_size():
    truth = np.zeros((4, 6), dtype=np.uint8)
    truth[:, 3:] = 1
    pred = truth.copy()
    pred[:, 2] = 1  # errors sit on the boundary column
    r = error_by_distance(pred, truth, edges=(0, 1, np.inf))
    assert r["pixels"] == [8, 16] and r["error"] == pytest.approx([0.5, 0.0])
    truth[0, 0] = 2  # a 1-pixel LYM region
    pred[0, 0] = 0
    s = error_by_region_size(pred, truth, edges=(0, 2, np.inf))
    assert s["pixels"] == [1, 23] and s["error"][0] == 1.0
    uniform = error_by_distance(np.zeros((2, 3), np.uint8), np.ones((2, 3), np.uint8), edges=(0, 5, np.inf))
    assert uniform["pixels"] == [0, 6] and uniform["error"][1] == 1.0  # no boundary: infinitely far
    with pytest.raises(ValueError, match="increasing"):
        error_by_distance(pred, truth, edges=(3, 1))
    with pytest.raises(ValueError, match="same shape"):
        error_by_region_size(pred[:2], truth)


def test_attention_map_paints_the_cross_and_sums_to_one():
    torch.manual_seed(0)
    cca = CrissCrossAttention(16, reduction=4)
    a_col, a_row = cca.attention(torch.rand(1, 16, 5, 7))
    m = attention_map(a_col[0], a_row[0], 2, 3)
    assert m.shape == (5, 7) and m.sum() == pytest.approx(1.0, abs=1e-5)
    off = np.ones((5, 7), bool)
    off[2, :] = off[:, 3] = False
    assert (m[off] == 0).all()
    with pytest.raises(ValueError, match="outside"):
        attention_map(a_col[0], a_row[0], 5, 0)


def test_pseudo_masks_from_cams_and_reading(tiny_root):
    assert has_truth(tiny_root) and not has_truth(tiny_root / "train")
    names = sorted(p.name for p in (tiny_root / "train").iterdir())
    truth = read_masks(tiny_root / "train_gt", names)
    assert truth.shape == (3, 16, 16)
    with pytest.raises(FileNotFoundError, match="1 of 1 masks missing"):
        read_masks(tiny_root / "train_gt", ["nope.png"])
    cams = torch.zeros(2, 4, 16, 16)
    cams[:, 1] = 1.0
    images = torch.full((2, 3, 16, 16), 0.5)
    images[1] = 1.0  # white: the LUAD rule makes it background
    collected = {"cams": cams, "labels": torch.tensor([[0, 1, 0, 0], [1, 1, 0, 0]]), "images": images}
    masks = pseudo_masks_from_cams(collected, PseudoMaskConfig(bg_min_size=1))
    assert (masks[0] == 1).all() and (masks[1] == 4).all()


def test_pick_examples_prefers_balanced_mixed_patches():
    labels = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]])
    assert pick_examples(labels, n=5) == [1, 2, 3]
    truth = np.zeros((4, 2, 4), dtype=np.uint8)
    truth[1, :, 3] = 1  # TE 75 %, NEC 25 %
    truth[2, :, :2] = 1
    truth[2, :, 2:] = 2  # NEC 50 %, LYM 50 %
    truth[3, 0] = 3  # TE 50 %, TAS 50 %
    assert pick_examples(labels, truth, n=2) == [2, 3]


def test_label_only_masks_take_the_first_present_class():
    images = torch.full((3, 3, 4, 4), 0.4)
    images[2, :, :2] = 1.0  # top half white
    labels = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 1]])
    masks = label_only_masks({"labels": labels, "images": images}, PseudoMaskConfig(bg_min_size=1))
    assert (masks[0] == 1).all() and (masks[1] == 0).all()
    assert (masks[2, :2] == 4).all() and (masks[2, 2:] == 3).all()


def test_absent_class_rate():
    masks = np.array([[[0, 1], [4, 1]], [[2, 2], [2, 3]]])
    labels = np.array([[0, 1, 0, 0], [0, 0, 1, 1]])
    assert absent_class_rate(masks, labels) == pytest.approx(1 / 7)  # one TE pixel in a NEC-only patch
    with pytest.raises(ValueError, match="N×H×W"):
        absent_class_rate(masks[0], labels)


def test_error_pixels_scores_tissue_only():
    truth = np.array([[0, 1, 4, 255]])
    scored, wrong = error_pixels(torch.tensor([[0, 2, 0, 0]]), truth)
    assert scored.tolist() == [[True, True, False, False]] and wrong.tolist() == [[False, True, False, False]]
    with pytest.raises(ValueError, match="same shape"):
        error_pixels(truth[:, :2], truth)


def test_sample_patches_reads_images_masks_and_labels(tiny_root):
    train = sample_patches(tiny_root, "train", n=2, seed=0)
    assert len(train.images) == 2 and train.total == 3 and train.synth is None
    assert train.images[0].shape == (16, 16, 3) and train.images[0].dtype == np.uint8
    for image, mask, label in zip(train.images, train.masks, train.labels, strict=True):
        i = int(image[0, 0, 0]) // 60  # the fixture paints patch i grey 60·i; its label and mask follow i
        assert label == [(1, 0, 0, 1), (0, 1, 0, 0), (1, 1, 1, 0)][i] and (mask == i % 4).all()
    assert sample_patches(tiny_root, "train", n=2, seed=0).labels == train.labels  # the seed fixes the draw
    val = sample_patches(tiny_root, "val", n=10)  # more than there are: all of them, in file order
    assert val.total == 2 and val.labels == [(1, 1, 0, 0), (1, 0, 1, 0)]  # classes present in the masks
    assert val.masks[1][15, 0] == 2
    (tiny_root / "synth.json").write_text(json.dumps({"seed": 7}))
    assert sample_patches(tiny_root, "test", n=1).synth == {"seed": 7}
    (tiny_root / "train_gt").rename(tiny_root / "elsewhere")  # real data: no train truth
    assert sample_patches(tiny_root, "train").masks == [None, None, None]
    with pytest.raises(ValueError, match="split must be"):
        sample_patches(tiny_root, "holdout")
    for png in (tiny_root / "test" / "img").iterdir():
        png.unlink()
    with pytest.raises(FileNotFoundError, match="no images in"):
        sample_patches(tiny_root, "test")


def test_background_rule_steps_removes_small_specks():
    image = np.full((32, 32, 3), 100, dtype=np.uint8)
    image[:10] = 250
    image[20, 20] = 250
    grey, white, kept = background_rule_steps(image, threshold=200, min_size=5)
    assert grey[0, 0] == pytest.approx(250, abs=1e-3) and grey[31, 31] == pytest.approx(100, abs=1e-3)
    assert white.sum() == 321 and kept.sum() == 320  # the 1-pixel speck is white but not kept
    assert white[20, 20] and not kept[20, 20]
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        background_rule_steps(image.astype(np.float32))


def test_mean_std_reads_pairs_and_numbers():
    assert mean_std((50, 1)) == (50.0, 1.0) and mean_std([50, None]) == (50.0, 0.0)
    assert mean_std(52) == (52.0, 0.0) and mean_std((1, float("nan"))) == (1.0, 0.0)
    mean, std = mean_std((None, None))
    assert math.isnan(mean) and std == 0.0


def test_rank_correlation_by_hand():
    x = np.arange(10.0)
    assert rank_correlation(x, -x) == pytest.approx(-1.0)
    assert rank_correlation(torch.tensor(x), x**3) == pytest.approx(1.0)  # monotone, not linear
    assert rank_correlation([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 − 6·2/(4·15)
    assert math.isnan(rank_correlation([1, 2], [2, 1]))
    with pytest.raises(ValueError, match="differ in size"):
        rank_correlation(x, x[:3])
