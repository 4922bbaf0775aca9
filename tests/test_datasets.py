import numpy as np
import pytest
import torch
from PIL import Image

from arml.cli import main
from arml.datasets import (
    CLASS_NAMES,
    PALETTES,
    MaskedDataset,
    TrainDataset,
    check_layout,
    format_train_name,
    parse_image_label,
    read_mask,
    write_mask,
)


@pytest.mark.parametrize(
    ("name", "dataset", "expected"),
    [
        ("1031280-2300-27920-[1 0 0 1].png", "luad", (1, 0, 0, 1)),
        ("1031280-2300-27920-[1 0 0 1]", "luad", (1, 0, 0, 1)),
        ("/data/train/1031280-2300-27920-[0 1 1 0].png", "luad", (0, 1, 1, 0)),
        ("TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500+0[1101].png", "bcss", (1, 1, 0, 1)),
        ("odd[1 1 1 1]-name-[0 0 0 1].png", "luad", (0, 0, 0, 1)),  # the last group counts
        ("mixed-[1 0 01].png", "luad", (1, 0, 0, 1)),  # single spaces are optional
    ],
)
def test_parse_image_label_good(name, dataset, expected):
    assert parse_image_label(name, dataset) == expected


@pytest.mark.parametrize(
    "name",
    [
        "385277-44539-46781.png",  # a val/test name: no label
        "x-[1 0 0].png",  # three digits
        "x-[1 0 0 1 1].png",  # five digits
        "x-[1 0 2 1].png",  # not 0/1
        "x-[1  0 0 1].png",  # double space
        "x-[1,0,0,1].png",  # commas
        "x-[].png",
    ],
)
def test_parse_image_label_bad_names_say_what_was_expected(name):
    with pytest.raises(ValueError, match="four 0/1 digits") as err:
        parse_image_label(name, "luad")
    assert name in str(err.value)


def test_parse_image_label_rejects_unknown_dataset():
    with pytest.raises(ValueError, match="luad"):
        parse_image_label("x-[1 0 0 1].png", "camelyon")


def test_format_train_name_round_trips_both_spellings():
    assert format_train_name("a-", (1, 0, 0, 1), "luad") == "a-[1 0 0 1].png"
    assert format_train_name("b+0", (0, 1, 1, 0), "bcss") == "b+0[0110].png"
    for ds in ("luad", "bcss"):
        assert parse_image_label(format_train_name("s", (0, 0, 1, 1), ds), ds) == (0, 0, 1, 1)
    with pytest.raises(ValueError):
        format_train_name("a", (1, 0, 2, 1), "luad")


def test_classes_and_palettes():
    assert CLASS_NAMES["luad"] == ("TE", "NEC", "LYM", "TAS")
    assert CLASS_NAMES["bcss"] == ("TUM", "STR", "LYM", "NEC")
    assert PALETTES["luad"][0] == (205, 51, 51) and PALETTES["bcss"][3] == (153, 0, 255)
    assert PALETTES["luad"][4] == PALETTES["bcss"][4] == (255, 255, 255)


def test_masks_are_written_and_read_as_palette_indices(tmp_path):
    mask = np.array([[0, 1, 2], [3, 4, 0]], dtype=np.uint8)
    path = write_mask(tmp_path / "m.png", mask, "luad")
    with Image.open(path) as img:
        assert img.mode == "P"
        assert img.getpalette()[:6] == [205, 51, 51, 0, 255, 0]
    np.testing.assert_array_equal(read_mask(path), mask)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_write_mask_rejects_values_outside_0_to_4(tmp_path):
    with pytest.raises(ValueError, match="0..4"):
        write_mask(tmp_path / "m.png", np.array([[5]]), "luad")


def test_read_mask_refuses_rgb(tmp_path):
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="palette"):
        read_mask(tmp_path / "rgb.png")


def test_train_dataset_items(tiny_root):
    ds = TrainDataset(tiny_root, "luad")
    assert len(ds) == 3
    image, label, name = ds[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert label.tolist() == [1.0, 0.0, 0.0, 1.0] and name == "p0-0-0-[1 0 0 1].png"
    assert [p.name for p in ds.files] == sorted(p.name for p in ds.files)


def test_train_dataset_with_masks(tiny_root):
    ds = TrainDataset(tiny_root, "luad", mask_dir=tiny_root / "train_gt")
    image, mask, _ = ds[2]
    assert mask.dtype == torch.int64 and mask.shape == (16, 16) and int(mask[0, 0]) == 2
    with pytest.raises(FileNotFoundError, match="no mask"):
        TrainDataset(tiny_root, "luad", mask_dir=tiny_root / "nowhere")


def test_masked_dataset_items_and_bad_split(tiny_root):
    ds = MaskedDataset(tiny_root, "test")
    image, mask, name = ds[1]
    assert image.shape == (3, 16, 16) and mask.shape == (16, 16) and name == "v1.png"
    assert set(mask.unique().tolist()) == {0, 2, 4}
    with pytest.raises(ValueError, match="'val' or 'test'"):
        MaskedDataset(tiny_root, "train")


def test_transform_is_applied(tiny_root):
    ds = MaskedDataset(tiny_root, "val", transform=lambda im, m: (im.flip(-1), m.flip(-1)))
    image, mask, _ = ds[0]
    assert int(mask[15, 0]) == 0 and int(mask[15, 15]) == 1


def test_check_layout_on_a_good_dataset(tiny_root):
    report = check_layout(tiny_root, "luad")
    assert report.ok, report.problems
    assert report.counts["train"] == 3 and report.counts["val"] == 2 and report.counts["test"] == 2
    assert report.label_frequency == {"TE": 2, "NEC": 2, "LYM": 1, "TAS": 1}
    assert report.pixel_frequency["val"]["BG"] == pytest.approx(0.5)
    assert "OK" in report.format()


def _snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_check_layout_reports_every_problem_and_modifies_nothing(tiny_root):
    for folder in ("train", "train_gt"):
        (tiny_root / folder / "p0-0-0-[1 0 0 1].png").rename(tiny_root / folder / "unlabelled.png")
    (tiny_root / "test" / "mask" / "v0.png").unlink()  # image without mask
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(tiny_root / "val" / "mask" / "v0.png")  # RGB
    write_mask(tiny_root / "val" / "mask" / "v1.png", np.zeros((8, 8), dtype=np.uint8))  # wrong size
    bad = Image.fromarray(np.full((16, 16), 7, dtype=np.uint8), mode="P")
    bad.putpalette([0] * 768)  # an explicit palette stops PIL from remapping index 7 on save
    bad.save(tiny_root / "test" / "mask" / "v1.png")  # value outside 0..4
    before = _snapshot(tiny_root)
    report = check_layout(tiny_root, "luad")
    assert _snapshot(tiny_root) == before
    text = "\n".join(report.problems)
    assert len(report.problems) == 5, text
    assert "unlabelled.png" in text and "four 0/1 digits" in text
    assert "v0.png: no mask" in text
    assert "not a palette" in text
    assert "differs from its image size" in text
    assert "outside 0..4: [7]" in text


def test_check_layout_missing_folders(tmp_path):
    (tmp_path / "train").mkdir()
    report = check_layout(tmp_path, "luad")
    assert not report.ok
    assert any("val/img: missing folder" in p for p in report.problems)
    assert check_layout(tmp_path / "absent").problems[0].endswith("does not exist")


def test_cli_data_check_exit_codes(tiny_root, capsys):
    assert main(["data", "check", str(tiny_root), "--quiet"]) == 0
    assert "OK" in capsys.readouterr().out
    (tiny_root / "val" / "mask" / "v0.png").unlink()
    assert main(["data", "check", str(tiny_root), "--quiet"]) == 1
    assert "no mask" in capsys.readouterr().out
