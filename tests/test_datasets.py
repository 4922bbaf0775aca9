import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from arml.cli import main
from arml.data_check import check_layout, detect_dataset, name_grammar, require_dataset, validate_split
from arml.datasets import (
    CLASS_NAMES,
    PALETTES,
    MaskedDataset,
    TrainDataset,
    format_train_name,
    palette_bytes,
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


# --------------------------------------------------------------------- bad files: found and named
def _noise_png(path, size=32, mode="RGB"):
    """A PNG large enough that cutting it leaves a valid header and a truncated image stream."""
    rng = np.random.default_rng(0)
    if mode == "RGB":
        img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    else:
        img = Image.fromarray(rng.integers(0, 5, (size, size), dtype=np.uint8), mode="P")
        img.putpalette(palette_bytes("luad"))
    img.save(path)
    return path


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    with Image.open(path) as img:  # the header still reads: only a full decode finds the damage
        assert img.size
    return path


def test_check_layout_decodes_every_file_and_finds_truncated_pngs(tiny_root):
    train = _truncate(_noise_png(tiny_root / "train" / "p0-0-0-[1 0 0 1].png", size=16))
    val = _truncate(_noise_png(tiny_root / "val" / "img" / "v0.png", size=16))
    mask = _truncate(_noise_png(tiny_root / "test" / "mask" / "v1.png", size=64, mode="P"))
    report = check_layout(tiny_root, "luad")
    text = "\n".join(report.problems)
    for path in (train, val, mask):
        assert f"{path}: unreadable" in text and "truncated" in text, text
    assert len(report.problems) == 3, text


def test_check_layout_flags_files_the_loaders_would_skip(tiny_root, capsys):
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(tiny_root / "train" / "x-0-0-[1 0 0 0].jpg")
    (tiny_root / "train" / "UPPER-[1 0 0 0].PNG").write_bytes(b"")
    (tiny_root / "val" / "img" / "more").mkdir()
    (tiny_root / "test" / "mask" / "v0.tif").write_bytes(b"")
    (tiny_root / "train" / ".DS_Store").write_bytes(b"")  # hidden: skipped on purpose, only noted
    (tiny_root / "train" / ".arml-tmp-p0.abcdefgh.png").write_bytes(b"")
    report = check_layout(tiny_root, "luad")
    text = "\n".join(report.problems)
    assert len(report.problems) == 4, text
    assert "x-0-0-[1 0 0 0].jpg: not a '.png' file; the loaders skip it" in text
    assert "UPPER-[1 0 0 0].PNG: not a '.png' file" in text
    assert f"{tiny_root / 'val' / 'img' / 'more'}: a folder" in text
    assert "v0.tif: not a '.png' file" in text
    assert report.notes == [
        f"{tiny_root / 'train'}: 2 hidden file(s) skipped by the loaders (first: .DS_Store)"
    ]
    assert len(TrainDataset(tiny_root, "luad")) == 3  # what the check warns about: 3 of 4 images read
    assert main(["data", "check", str(tiny_root), "--quiet"]) == 1
    assert "x-0-0-[1 0 0 0].jpg" in capsys.readouterr().out


def test_cli_data_check_names_a_truncated_training_image(tiny_root, capsys):
    path = _truncate(_noise_png(tiny_root / "train" / "p1-0-0-[0 1 0 0].png", size=16))
    assert main(["data", "check", str(tiny_root), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert f"{path}: unreadable image" in out and "image file is truncated" in out


# ------------------------------------------------------------------------- which dataset is this?
def _bcss_root(tmp_path):
    root = tmp_path / "bcss"
    for i, label in enumerate([(1, 0, 0, 1), (0, 1, 1, 0)]):
        path = root / "train" / format_train_name(f"TCGA-{i}_xmin0_ymin0_MPP-0.2500+0", label, "bcss")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(path)
    return root


def test_name_grammar_and_detect_dataset(tiny_root, tmp_path):
    assert name_grammar("1031280-2300-27920-[1 0 0 1].png") == "luad"
    assert name_grammar("TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500+0[1101].png") == "bcss"
    assert name_grammar("mixed-[1 0 01].png") is None and name_grammar("385277-44539-46781.png") is None
    assert detect_dataset(tiny_root) == "luad"
    assert detect_dataset(_bcss_root(tmp_path)) == "bcss"
    assert detect_dataset(tmp_path / "nothing") is None
    (tiny_root / "synth.json").write_text(json.dumps({"generator": "arml.synth/1", "dataset": "bcss"}))
    assert detect_dataset(tiny_root) == "bcss"  # synth.json decides


def test_require_dataset_names_root_evidence_and_flag(tiny_root, tmp_path):
    require_dataset(tiny_root, "luad")
    with pytest.raises(ValueError) as err:
        require_dataset(tiny_root, "bcss")
    message = str(err.value)
    assert str(tiny_root) in message and "--dataset bcss does not fit" in message
    assert "3 of its 3 training names follow the LUAD-HistoSeg grammar" in message
    assert "use --dataset luad" in message
    with pytest.raises(ValueError, match="BCSS-WSSS grammar.*use --dataset bcss"):
        require_dataset(_bcss_root(tmp_path), "luad")
    require_dataset(tmp_path / "nothing", "bcss")  # nothing tells: nothing raised


def test_check_layout_reports_a_dataset_that_does_not_fit(quick_synth, tiny_root):
    report = check_layout(quick_synth, "bcss")
    assert report.detected == "luad"
    [problem] = report.problems
    assert "--dataset bcss does not fit" in problem and "its synth.json says dataset 'luad'" in problem
    assert "48 of its 48 training names" in problem
    assert main(["data", "check", str(quick_synth), "--dataset", "bcss", "--quiet"]) == 1
    # names that mix both spellings
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(tiny_root / "train" / "x+0[1001].png")
    write_mask(tiny_root / "train_gt" / "x+0[1001].png", np.zeros((16, 16), dtype=np.uint8))
    [problem] = check_layout(tiny_root, "luad").problems
    assert "1 training name(s) follow the BCSS-WSSS grammar" in problem and "x+0[1001].png" in problem


# ------------------------------------------------------------------- readers name the bad file
def _bad_mask(path, value=7, size=16):
    bad = Image.fromarray(np.full((size, size), value, dtype=np.uint8), mode="P")
    bad.putpalette([0] * 768)  # an explicit palette stops PIL from remapping the index on save
    bad.save(path)


def test_readers_name_a_truncated_image(tiny_root):
    path = _truncate(_noise_png(tiny_root / "train" / "p1-0-0-[0 1 0 0].png", size=16))
    with pytest.raises(ValueError, match=re.escape(f"{path}: unreadable image")) as err:
        TrainDataset(tiny_root, "luad")[1]
    assert "truncated" in str(err.value)
    val = _truncate(_noise_png(tiny_root / "val" / "img" / "v1.png", size=16))
    with pytest.raises(ValueError, match=re.escape(f"{val}: unreadable image")):
        MaskedDataset(tiny_root, "val")[1]
    (tiny_root / "test" / "img" / "v0.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=re.escape(f"{tiny_root / 'test' / 'img' / 'v0.png'}: unreadable")):
        MaskedDataset(tiny_root, "test")[0]


def test_readers_name_a_bad_mask(tiny_root):
    gt = tiny_root / "train_gt"
    _bad_mask(gt / "p0-0-0-[1 0 0 1].png", value=7)
    write_mask(gt / "p1-0-0-[0 1 0 0].png", np.zeros((8, 8), dtype=np.uint8))
    _truncate(_noise_png(gt / "p2-0-0-[1 1 1 0].png", size=64, mode="P"))
    data = TrainDataset(tiny_root, "luad", mask_dir=gt)
    cases = [
        (0, "mask values outside 0..4: [7]"),
        (1, "mask is 8×8 pixels but its image is 16×16"),
        (2, "unreadable mask"),
    ]
    for index, what in cases:
        with pytest.raises(ValueError) as err:
            data[index]
        assert str(data.files[index].name) in str(err.value) and str(gt) in str(err.value)
        assert what in str(err.value)
    _bad_mask(tiny_root / "val" / "mask" / "v0.png", value=255)
    with pytest.raises(ValueError, match=re.escape(f"{tiny_root / 'val' / 'mask' / 'v0.png'}: mask values")):
        MaskedDataset(tiny_root, "val")[0]


def test_readers_keep_missing_files_as_file_not_found(tiny_root):
    (tiny_root / "test" / "mask" / "v0.png").unlink()
    with pytest.raises(FileNotFoundError, match="v0.png"):
        MaskedDataset(tiny_root, "test")[0]


def test_validate_split_lists_the_first_problems_with_their_files(tiny_root):
    for split in ("train", "val", "test"):
        validate_split(tiny_root, split, "luad")
    validate_split(tiny_root, "train", "luad", masks_dir=tiny_root / "train_gt")
    pm = tiny_root / "train_PM" / "pm"
    for path in (tiny_root / "train").iterdir():
        write_mask(pm / path.name, np.zeros((16, 16), dtype=np.uint8))
    (pm / "manifest.json").write_text("{}")  # a pseudo-mask folder's manifest is no problem
    validate_split(tiny_root, "train", "luad", masks_dir=pm)
    _bad_mask(pm / "p0-0-0-[1 0 0 1].png", value=7)
    (pm / "p1-0-0-[0 1 0 0].png").unlink()
    with pytest.raises(ValueError) as err:
        validate_split(tiny_root, "train", "luad", masks_dir=pm)
    message = str(err.value)
    assert "the train split fails the data check (2 problem(s))" in message
    assert "p0-0-0-[1 0 0 1].png: mask values outside 0..4: [7]" in message
    assert "p1-0-0-[0 1 0 0].png: no mask" in message
    with pytest.raises(ValueError, match="--dataset bcss does not fit"):
        validate_split(tiny_root, "train", "bcss")
    for i in range(2):
        _bad_mask(tiny_root / "val" / "mask" / f"v{i}.png", value=9)
    (tiny_root / "val" / "img" / "extra.jpg").write_bytes(b"")
    with pytest.raises(ValueError) as err:
        validate_split(tiny_root, "val", "luad", limit=2)
    message = str(err.value)
    assert "(3 problem(s))" in message and "extra.jpg" in message and "… and 1 more" in message
    with pytest.raises(ValueError, match="missing folder"):
        validate_split(tiny_root / "nowhere", "test", "luad")
    with pytest.raises(ValueError, match="split must be"):
        validate_split(tiny_root, "train_gt", "luad")


def test_in_memory_decodes_once_and_keeps_large_datasets_on_disk(quick_synth):
    from arml.datasets import InMemory, TrainDataset, in_memory

    data = TrainDataset(quick_synth, mask_dir=quick_synth / "train_gt")
    cached = in_memory(data)
    assert isinstance(cached, InMemory) and len(cached) == len(data)
    image, mask, name = cached[3]
    assert torch.equal(image, data[3][0]) and torch.equal(mask, data[3][1]) and name == data[3][2]
    assert in_memory(data, max_bytes=10) is data
