"""Shared fixtures: a tiny hand-made dataset in the published layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from arml.datasets import format_train_name, write_mask


def _rgb(path, size=(16, 16), value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def tiny_root(tmp_path):
    """Three training images, two val and two test pairs, all 16×16, in the LUAD layout."""
    root = tmp_path / "tiny"
    for i, label in enumerate([(1, 0, 0, 1), (0, 1, 0, 0), (1, 1, 1, 0)]):
        name = format_train_name(f"p{i}-0-0-", label, "luad")
        _rgb(root / "train" / name, value=60 * i)
        write_mask(root / "train_gt" / name, np.full((16, 16), i % 4, dtype=np.uint8))
    for split in ("val", "test"):
        for i in range(2):
            _rgb(root / split / "img" / f"v{i}.png")
            mask = np.zeros((16, 16), dtype=np.uint8)
            mask[:8] = 4
            mask[8:, :8] = i + 1
            write_mask(root / split / "mask" / f"v{i}.png", mask)
    return root


@pytest.fixture(scope="session")
def quick_synth(tmp_path_factory):
    """The quick-profile synthetic dataset, generated once per test session (read-only for tests)."""
    from arml.synth import generate_dataset

    return generate_dataset(
        tmp_path_factory.mktemp("synth") / "quick", profile="quick", seed=0, progress=False
    )


@pytest.fixture
def quick_copy(quick_synth, tmp_path):
    """A private copy of the quick dataset for tests that write pseudo masks into it."""
    import shutil

    return shutil.copytree(quick_synth, tmp_path / "quick")
