import hashlib
import json
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from arml.datasets import (
    PALETTES,
    MaskedDataset,
    TrainDataset,
    list_pngs,
    palette_bytes,
    parse_image_label,
    read_mask,
)
from arml.synth import (
    GENERATOR_VERSION,
    LUAD_TO_BCSS,
    SYNTH_PROFILES,
    SynthConfig,
    config_from_json,
    generate_dataset,
    patch_rng,
)
from arml.synth_folder import plan_overwrite
from arml.tissue import generate_patch

QUICK = SYNTH_PROFILES["quick"]
TINY = replace(QUICK, n_train=6, n_val=3, n_test=3)


def _hashes(root):
    """sha256 of every file the generator writes (other tests may add train_PM/ to a shared dataset)."""
    files = [root / "synth.json"] + [
        p for d in ("train", "train_gt", "val", "test") for p in (root / d).rglob("*")
    ]
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(files)
        if p.is_file()
    }


@pytest.fixture
def quick_root(quick_synth):
    """The session's quick-profile dataset (seed 0, default workers = os.cpu_count()), read-only."""
    return quick_synth


# -------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", 8),
        ("n_train", 0),
        ("microns_per_pixel", 0.0),
        ("label_noise", 0.9),
        ("stain_shift", -0.1),
        ("imbalance", -1.0),
        ("region_scale", 0.0),
        ("background_fraction", 1.5),
        ("confounders", 2.0),
        ("label_threshold", 0.5),
        ("class_prior", (0.5, 0.5, 0.0, 0.0)),
        ("classes_per_patch", (0.5, 0.5, 0.5)),
    ],
)
def test_bad_config_values_raise(field, value):
    with pytest.raises(ValueError, match=f"SynthConfig.{field} must be"):
        SynthConfig(**{field: value})


def test_profiles():
    assert (QUICK.size, QUICK.n_train, QUICK.n_val, QUICK.n_test) == (64, 48, 16, 16)
    assert (SYNTH_PROFILES["cpu"].size, SYNTH_PROFILES["cpu"].n_train) == (64, 400)
    assert (SYNTH_PROFILES["paper"].size, SYNTH_PROFILES["paper"].microns_per_pixel) == (224, 1.0)


# -------------------------------------------------------------------------------------------- on disk
def test_layout(quick_root):
    root = quick_root
    train = list_pngs(root / "train")
    assert len(train) == 48 and [p.name for p in list_pngs(root / "train_gt")] == [p.name for p in train]
    assert re.fullmatch(r"syn\d{5}-\d+-\d+-\[[01]( [01]){3}\]\.png", train[0].name)
    for path in train:
        label = parse_image_label(path.name, "luad")
        mask = read_mask(root / "train_gt" / path.name)
        assert label == tuple(int((mask == c).mean() > QUICK.label_threshold) for c in range(4))
    for split in ("val", "test"):
        imgs, masks = list_pngs(root / split / "img"), list_pngs(root / split / "mask")
        assert len(imgs) == 16 and [p.name for p in imgs] == [p.name for p in masks]
        assert re.fullmatch(r"syn\d{5}-\d+-\d+\.png", imgs[0].name)
        with Image.open(masks[0]) as img:
            assert img.mode == "P" and img.getpalette()[:15] == palette_bytes("luad")[:15]
    names = [p.name for d in ("train", "val/img", "test/img") for p in list_pngs(root / d)]
    stems = {name.split("[")[0].rstrip("-").removesuffix(".png") for name in names}
    assert len(stems) == 48 + 16 + 16, "ids are unique over the three splits"
    meta = json.loads((root / "synth.json").read_text())
    assert meta["generator"] == GENERATOR_VERSION and meta["seed"] == 0 and meta["dataset"] == "luad"
    assert meta["counts"] == {"train": 48, "val": 16, "test": 16}
    assert config_from_json(root / "synth.json") == QUICK


def test_same_seed_gives_identical_bytes_for_any_worker_count(quick_root, tmp_path):
    again = generate_dataset(
        tmp_path / "again", "quick", seed=0, workers=1, progress=False
    )  # fixture: all cores
    assert _hashes(again) == _hashes(quick_root)


def test_round_trip_through_the_loaders(quick_root):
    image, label, name = TrainDataset(quick_root)[0]
    assert (
        image.shape == (3, 64, 64) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    )
    assert (
        label.dtype == torch.float32
        and label.shape == (4,)
        and label.tolist() == list(parse_image_label(name, "luad"))
    )
    _, mask, _ = TrainDataset(quick_root, mask_dir=quick_root / "train_gt")[0]
    assert mask.shape == (64, 64) and mask.dtype == torch.int64
    for split in ("val", "test"):
        data = MaskedDataset(quick_root, split)
        image, mask, _ = data[len(data) - 1]
        assert len(data) == 16 and image.shape == (3, 64, 64) and mask.dtype == torch.int64
        assert int(mask.max()) <= 4


def test_bcss_naming_and_class_order(tmp_path):
    root = generate_dataset(tmp_path / "bcss", TINY, seed=1, dataset="bcss", workers=1, progress=False)
    files = list_pngs(root / "train")
    assert len(files) == 6
    for i, path in enumerate(files):
        assert re.fullmatch(r"SYN-\d{5}_xmin\d+_ymin\d+_MPP-2\.0000\+0\[[01]{4}\]\.png", path.name)
        _, luad_mask, luad_label = generate_patch(patch_rng(1, "train", i), TINY, "train")
        bcss_label = parse_image_label(path.name, "bcss")
        te, nec, lym, tas = luad_label
        assert bcss_label == (te, tas, lym, nec)
        np.testing.assert_array_equal(read_mask(root / "train_gt" / path.name), LUAD_TO_BCSS[luad_mask])
    with Image.open(list_pngs(root / "val" / "mask")[0]) as img:
        assert img.getpalette()[:15] == [c for rgb in PALETTES["bcss"] for c in rgb]
    assert list_pngs(root / "test" / "img")[0].name.endswith("+0.png")


def test_existing_dataset_is_skipped_or_refused(tmp_path):
    root = generate_dataset(tmp_path / "d", TINY, workers=1, progress=False)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    assert generate_dataset(root, TINY, workers=1, progress=False) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.png")} == before
    with pytest.raises(FileExistsError, match=r"differs in: seed.*overwrite=True"):
        generate_dataset(root, TINY, seed=1, workers=1, progress=False)
    next(iter(before)).unlink()
    with pytest.raises(FileExistsError, match="incomplete"):
        generate_dataset(root, TINY, workers=1, progress=False)
    generate_dataset(root, TINY, seed=1, workers=1, progress=False, overwrite=True)
    assert json.loads((root / "synth.json").read_text())["seed"] == 1
    foreign = tmp_path / "foreign"
    (foreign / "train").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="no synth.json"):
        generate_dataset(foreign, TINY, workers=1, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"profile": "huge"}, "profile must be one of"),
        ({"dataset": "camelyon"}, "dataset must be one of"),
        ({"seed": -1}, "seed must be"),
        ({"workers": -2}, "workers must be"),
        ({"drop_pseudo_masks": True}, "only applies with overwrite=True"),
    ],
)
def test_generate_dataset_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_dataset(tmp_path / "x", **{"progress": False, **kwargs})


# ---------------------------------------------------------------- overwrite: nothing lost, all said
def _snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _pseudo_masks(root, name="pm-gradcam-abc", manifest=True):
    folder = root / "train_PM" / name
    folder.mkdir(parents=True)
    (folder / list_pngs(root / "train")[0].name).write_bytes(b"mask")
    if manifest:
        (folder / "manifest.json").write_text("{}")
    return folder


def test_overwrite_never_deletes_a_folder_arml_did_not_make(tmp_path):
    real = tmp_path / "LUAD-HistoSeg"
    for rel in (
        "train/1031280-2300-27920-[1 0 0 1].png",
        "train/1031280-2300-27921-[0 1 0 0].png",
        "val/img/385277-44539-46781.png",
        "train_PM/PM_b4_5/1031280-2300-27920-[1 0 0 1].png",
    ):
        (real / rel).parent.mkdir(parents=True, exist_ok=True)
        (real / rel).write_bytes(b"precious")
    before = _snapshot(real)
    for overwrite in (False, True):
        with pytest.raises(FileExistsError) as err:
            generate_dataset(
                real, TINY, workers=1, progress=False, overwrite=overwrite, drop_pseudo_masks=overwrite
            )
        message = str(err.value)
        assert "not made by arml synth (no synth.json" in message
        assert "train/ (2 files), val/ (1 file), train_PM/ (1 file)" in message
        assert "will not delete files it did not write" in message
        assert "--overwrite" not in message and "overwrite=True" not in message  # it would be refused too
    assert _snapshot(real) == before
    plan = plan_overwrite(real)
    assert plan.remove == () and plan.refusal is not None and plan.describe() == plan.refusal


def test_overwrite_keeps_pseudo_masks_unless_asked_and_says_what_it_removes(tmp_path):
    root = generate_dataset(tmp_path / "d", TINY, workers=1, progress=False)
    pm = _pseudo_masks(root)
    plan = plan_overwrite(root)
    assert plan.refusal is None and plan.keep == (pm,)
    assert [p.name for p in plan.remove] == ["train", "train_gt", "val", "test", "synth.json"]
    assert plan.describe().splitlines()[:2] == [
        f"overwrite {root}: removes train/ (6 files)",
        f"overwrite {root}: removes train_gt/ (6 files)",
    ]
    assert "keeps 1 pseudo-mask folder(s) in train_PM/ (pm-gradcam-abc)" in plan.describe()
    lines = []
    generate_dataset(root, TINY, seed=1, workers=1, progress=False, overwrite=True, log=lines.append)
    assert json.loads((root / "synth.json").read_text())["seed"] == 1
    assert pm.is_dir() and len(list(pm.iterdir())) == 2, "pseudo masks kept"
    assert (
        f"overwrite {root}: removes val/ (6 files)" in lines
        and f"overwrite {root}: removes synth.json" in lines
    )
    assert any("keeps 1 pseudo-mask folder(s)" in line for line in lines)
    assert not (root / "synth.partial.json").exists()
    assert [p.name for p in plan_overwrite(root, drop_pseudo_masks=True).remove][-2:] == [
        "train_PM",
        "synth.json",
    ]
    lines.clear()
    generate_dataset(
        root, TINY, workers=1, progress=False, overwrite=True, drop_pseudo_masks=True, log=lines.append
    )
    assert not (root / "train_PM").exists()
    assert f"overwrite {root}: removes train_PM/ (2 files)" in lines


def test_overwrite_refuses_when_files_were_added_to_an_arml_dataset(tmp_path):
    root = generate_dataset(tmp_path / "d", TINY, workers=1, progress=False)
    (root / "train" / "mine-[1 0 0 0].png").write_bytes(b"mine")
    before = _snapshot(root)
    with pytest.raises(FileExistsError) as err:
        generate_dataset(root, TINY, seed=1, workers=1, progress=False, overwrite=True)
    assert "1 file(s) or folder(s) that arml synth did not write (first: train/mine-[1 0 0 0].png)" in str(
        err.value
    )
    with pytest.raises(FileExistsError) as err:  # without overwrite: no suggestion that would be refused
        generate_dataset(root, TINY, seed=1, workers=1, progress=False)
    assert "differs in: seed" in str(err.value) and "overwrite=True" not in str(err.value)
    assert _snapshot(root) == before
    (root / "train" / "mine-[1 0 0 0].png").unlink()
    _pseudo_masks(root, "hand-made", manifest=False)  # not made by arml: kept, or refused if asked to drop
    assert plan_overwrite(root).refusal is None
    assert "train_PM/hand-made" in plan_overwrite(root, drop_pseudo_masks=True).refusal
    with pytest.raises(FileExistsError, match="train_PM/hand-made"):
        generate_dataset(
            root, TINY, seed=1, workers=1, progress=False, overwrite=True, drop_pseudo_masks=True
        )


def test_a_killed_run_finishes_when_run_again_and_leaves_no_temp_files(tmp_path):
    root = generate_dataset(tmp_path / "d", TINY, workers=1, progress=False)
    complete = _hashes(root)
    (root / "synth.json").rename(root / "synth.partial.json")  # as a kill part-way leaves it
    for path in list_pngs(root / "train")[:2] + list_pngs(root / "test" / "mask")[:1]:
        path.unlink()
    temp = root / "train" / ".arml-tmp-syn00003-1-2-[1 0 0 0].k3j_x9zq.png"
    temp.write_bytes(b"half")
    with pytest.raises(FileExistsError, match="unfinished synthetic dataset made with other settings"):
        generate_dataset(root, TINY, seed=1, workers=1, progress=False)
    lines = []
    assert generate_dataset(root, TINY, workers=1, progress=False, log=lines.append) == root
    assert _hashes(root) == complete and not (root / "synth.partial.json").exists()
    assert not temp.exists() and lines == [f"removed {temp} (left by a killed write)"]
    # a kill during an overwrite's removals: the old synth.json, some of its files, the new partial marker
    (root / "synth.partial.json").write_text(
        (root / "synth.json").read_text().replace('"seed": 0', '"seed": 1')
    )
    shutil.rmtree(root / "train")
    assert plan_overwrite(root).refusal is None
    generate_dataset(root, TINY, seed=1, workers=1, progress=False, overwrite=True)
    assert json.loads((root / "synth.json").read_text())["seed"] == 1
