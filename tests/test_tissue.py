"""The synthetic tissue renderer (arml.tissue): determinism, types, labels, label noise, stain shift, colour."""

from dataclasses import replace

import numpy as np
import pytest

from arml.synth import SYNTH_PROFILES, patch_rng
from arml.tissue import generate_patch

QUICK = SYNTH_PROFILES["quick"]


def test_generate_patch_is_deterministic():
    a, b, c = (generate_patch(s, QUICK, "train") for s in (7, 7, 8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    assert not np.array_equal(a[0], c[0])
    d = generate_patch(np.random.default_rng(7), QUICK, "train")
    np.testing.assert_array_equal(a[0], d[0])


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_patch_types_and_ranges(split):
    for seed in range(4):
        rgb, mask, label = generate_patch(patch_rng(0, split, seed), QUICK, split)
        assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
        assert mask.shape == (64, 64) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 1, 2, 3, 4}
        assert isinstance(label, tuple) and len(label) == 4 and set(label) <= {0, 1}


def test_label_is_exactly_the_classes_above_threshold():
    counts = set()
    for seed in range(24):
        _, mask, label = generate_patch(seed, QUICK, "train")
        frac = np.bincount(mask.ravel(), minlength=5)[:4] / mask.size
        assert label == tuple(int(f > QUICK.label_threshold) for f in frac)
        assert not np.any((frac > 0) & (frac <= QUICK.label_threshold)), "slivers must be marked 4"
        counts.add(sum(label))
    assert counts == {1, 2, 3}


def test_label_noise_only_touches_training_labels():
    noisy = replace(QUICK, label_noise=0.5)
    flipped = 0
    for seed in range(10):
        rgb0, mask0, label0 = generate_patch(seed, QUICK, "train")
        rgb1, mask1, label1 = generate_patch(seed, noisy, "train")
        np.testing.assert_array_equal(rgb0, rgb1)
        np.testing.assert_array_equal(mask0, mask1)
        assert any(label1)
        flipped += label0 != label1
        assert generate_patch(seed, noisy, "val")[2] == generate_patch(seed, QUICK, "val")[2]
    assert flipped >= 5


def test_stain_shift_changes_only_the_held_out_colours():
    same = replace(QUICK, stain_shift=0.0)
    a, b = generate_patch(5, same, "train"), generate_patch(5, same, "test")
    np.testing.assert_array_equal(a[0], b[0])
    c = generate_patch(5, replace(QUICK, stain_shift=0.5), "test")
    np.testing.assert_array_equal(a[1], c[1])
    assert np.abs(a[0].astype(int) - c[0]).mean() > 3


def test_patches_look_like_stained_tissue():
    rgb, mask, _ = generate_patch(1, replace(QUICK, background_fraction=0.0), "train")
    tissue = rgb[mask < 4].astype(float)
    assert 60 < tissue.mean() < 230
    assert tissue[:, 1].mean() < tissue[:, 0].mean(), "H&E absorbs green most: tissue is pink/purple"


def test_unknown_split_raises():
    with pytest.raises(ValueError, match="split must be one of"):
        generate_patch(0, QUICK, "holdout")
