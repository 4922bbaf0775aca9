import math

import numpy as np
import pytest
import torch

from arml.metrics import SegmentationMetrics, summarize


def test_perfect_prediction():
    m = SegmentationMetrics(4)
    t = np.array([[0, 1], [2, 3]])
    m.update(t, t)
    r = m.compute()
    assert r["miou"] == 1.0 and r["mdice"] == 1.0 and r["acc"] == 1.0 and r["fwiou"] == 1.0


def test_hand_checked_confusion():
    # truth 0 0 1 1 ; pred 0 1 1 1  -> class0: TP1 FN1 FP0 -> IoU 1/2 ; class1: TP2 FP1 -> IoU 2/3
    m = SegmentationMetrics(2)
    m.update(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 1]))
    r = m.compute()
    np.testing.assert_allclose(r["iou"], [1 / 2, 2 / 3])
    np.testing.assert_allclose(r["dice"], [2 / 3, 4 / 5])  # 2TP/(2TP+FP+FN)
    assert r["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert r["acc"] == pytest.approx(3 / 4)
    assert r["fwiou"] == pytest.approx(0.5 * 1 / 2 + 0.5 * 2 / 3)
    np.testing.assert_array_equal(m.confusion_matrix, [[1, 1], [0, 2]])


def test_dice_equals_2iou_over_1_plus_iou():
    rng = np.random.default_rng(0)
    m = SegmentationMetrics(4)
    m.update(rng.integers(0, 4, (3, 10, 10)), rng.integers(0, 4, (3, 10, 10)))
    r = m.compute()
    np.testing.assert_allclose(r["dice"], 2 * r["iou"] / (1 + r["iou"]))


def test_background_and_ignore_are_dropped():
    m = SegmentationMetrics(4)
    pred = np.array([0, 3, 2, 1])
    target = np.array([0, 4, 255, 1])
    m.update(pred, target)
    r = m.compute()
    assert r["pixels"] == 2 and r["acc"] == 1.0
    assert math.isnan(r["iou"][2]) and math.isnan(r["iou"][3])  # absent from kept truth and prediction
    assert r["miou"] == 1.0  # NaN classes are skipped by the mean


def test_out_of_range_prediction_is_a_miss_without_false_positive():
    m = SegmentationMetrics(2)
    m.update(np.array([0, 4, 1]), np.array([0, 0, 1]))  # the middle pixel is predicted "background"
    r = m.compute()
    np.testing.assert_allclose(r["iou"], [1 / 2, 1.0])  # class 0 loses a pixel; class 1 gets no FP
    assert r["acc"] == pytest.approx(2 / 3)
    assert m.confusion_matrix.sum() == 2


def test_predicted_but_absent_class_scores_zero():
    m = SegmentationMetrics(2)
    m.update(np.array([1, 1]), np.array([0, 0]))
    r = m.compute()
    assert r["iou"][0] == 0 and r["iou"][1] == 0 and r["miou"] == 0


def test_accumulates_over_calls_like_one_call():
    rng = np.random.default_rng(1)
    p, t = rng.integers(0, 5, (4, 8, 8)), rng.integers(0, 5, (4, 8, 8))
    once, twice = SegmentationMetrics(4), SegmentationMetrics(4)
    once.update(p, t)
    twice.update(p[:2], t[:2])
    twice.update(p[2:], t[2:])
    np.testing.assert_array_equal(once.confusion_matrix, twice.confusion_matrix)
    twice.reset()
    assert twice.compute()["pixels"] == 0 and math.isnan(twice.compute()["miou"])


def test_bad_inputs_raise_clear_errors():
    m = SegmentationMetrics(4)
    with pytest.raises(ValueError, match="same shape"):
        m.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="argmax"):
        m.update(np.zeros((2, 2)), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="found \\[7\\]"):
        m.update(np.zeros(2, int), np.array([0, 7]))
    with pytest.raises(ValueError, match="positive int"):
        SegmentationMetrics(0)


def test_summarize_mentions_every_class():
    m = SegmentationMetrics(4)
    m.update(np.array([0, 1, 2, 3]), np.array([0, 1, 2, 3]))
    text = summarize(m.compute(), ("TE", "NEC", "LYM", "TAS"))
    assert "mIoU 100.00" in text and "TAS 100.0" in text
