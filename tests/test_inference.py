"""`arml predict`: reading images, the sliding window, the ensemble, the CLI and its bad inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from arml.cli import main
from arml.datasets import PALETTES, list_pngs, read_image, read_mask
from arml.evaluation import load_models, predict
from arml.inference import (
    predict_image,
    read_any_image,
    sliding_window_logits,
    training_window,
    window_starts,
    window_weights,
)
from arml.stage2 import SegConfig, train_segmenter


@pytest.fixture(scope="module")
def seg_run(quick_synth, tmp_path_factory):
    """One network, one epoch on the quick synthetic data's pixel truth (64×64 patches)."""
    out = tmp_path_factory.mktemp("predict") / "seg"
    config = SegConfig(
        str(quick_synth),
        masks="train_gt",
        encoder="resnet10t",
        epochs=1,
        batch_size=8,
        eval_batch_size=16,
        progress=False,
        relation=None,
        omega=None,
        peers=1,
        device="cpu",
    )
    train_segmenter(config, out)
    return out


@pytest.fixture(scope="module")
def net(seg_run):
    return load_models(seg_run, "cpu")[0]


def _image(path, size, seed=0, mode="RGB", **save):
    """A random ``size`` = (W, H) image written with PIL (format from the suffix)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path, **save)
    return path


class Constant(nn.Module):
    """Fixed logits at every pixel."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits, dtype=torch.float32))

    def forward(self, x):
        return self.logits.view(1, -1, 1, 1).expand(x.shape[0], -1, *x.shape[-2:])


class Pointwise(nn.Module):
    """Logits from each pixel alone (a 1×1 conv): windows stitched right reproduce the whole-image output."""

    stride = 8

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 1)
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape[-2:]))
        return 5 * self.conv(x)


# ------------------------------------------------------------------------------------- sliding window
def test_one_window_over_a_training_sized_image_is_evaluation_predict(quick_synth, net):
    image = read_image(list_pngs(quick_synth / "val" / "img")[0])  # 64×64, the training size
    probs = sliding_window_logits(net, image, window=64)
    assert probs.shape == (4, 64, 64)
    assert torch.allclose(probs.sum(0), torch.ones(64, 64), atol=1e-5)
    assert torch.equal(probs.argmax(0), predict(net, image[None])[0])


@pytest.mark.parametrize(
    ("height", "width", "weighting"),
    [(150, 97, "hann"), (40, 23, "hann"), (1, 1, "hann"), (64, 90, "uniform")],
)
def test_windows_stitch_back_to_the_whole_image_output(height, width, weighting):
    model = Pointwise().eval()
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model(image[None])[0].softmax(0)
    model.shapes.clear()
    probs = sliding_window_logits(model, image, window=32, stride=12, weighting=weighting, batch_size=5)
    assert probs.shape == (4, height, width)
    assert torch.allclose(probs, whole, atol=1e-5)
    assert set(model.shapes) == {(32, 32)}  # every window is window-sized, whatever the image


def test_window_starts_cover_every_pixel_and_hann_weights_cross_fade():
    assert window_starts(64, 64, 32) == [0]
    assert window_starts(97, 64, 32) == [0, 32, 33]
    weights = window_weights(64)
    ramp = torch.sin(math.pi * (torch.arange(64, dtype=torch.float64) + 0.5) / 64) ** 2
    assert torch.allclose(weights, torch.outer(ramp, ramp).float())
    assert torch.allclose(ramp[:32] + ramp[32:], torch.ones(32, dtype=torch.float64))  # half-window shift: 1
    assert weights.min() > 0 and torch.equal(window_weights(8, "uniform"), torch.ones(8, 8))


def test_the_ensemble_averages_softmax_probabilities_not_logits():
    # A is sure of class 1; B leans to class 2 and is sure class 1 is wrong. Mean logits: class 2;
    # mean softmax: class 1 (A's 0.5 against B's 0.29): the ensemble of arml.evaluation.predict.
    a, b = Constant([0.0, 10.0, 0.0, 0.0]), Constant([0.0, -20.0, 1.0, 0.0])
    image = torch.rand(3, 50, 70)
    probs = sliding_window_logits([a, b], image, window=32)
    expected = (a.logits.softmax(0) + b.logits.softmax(0)) / 2
    assert torch.allclose(probs, expected.view(4, 1, 1).expand(4, 50, 70), atol=1e-6)
    assert (probs.argmax(0) == 1).all()
    assert ((a.logits + b.logits) / 2).argmax() == 2
    assert torch.equal(predict([a, b], image[None, :, :32, :32])[0], probs.argmax(0)[:32, :32])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": 0}, r"--window \(window=0\) must be a positive multiple of 8"),
        ({"window": 60}, r"--window \(window=60\)"),
        ({"window": 64, "stride": 65}, r"--stride \(stride=65\) must be an int in 1..64"),
        ({"window": 64, "weighting": "gauss"}, "weighting must be one of"),
    ],
)
def test_bad_window_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sliding_window_logits(Pointwise(), torch.rand(3, 70, 70), **kwargs)


# ---------------------------------------------------------------------------------------------- reading
def test_png_jpeg_and_tiff_read_alike_with_alpha_on_white(tmp_path):
    png = _image(tmp_path / "a.png", (30, 20))
    assert torch.equal(read_any_image(png), read_image(png))  # the training reader's values exactly
    for name, save in (
        ("a.jpg", {"quality": 100, "subsampling": 0}),
        ("a.tif", {}),
        ("a.tiff", {"compression": "tiff_lzw"}),
    ):
        image = read_any_image(_image(tmp_path / name, (30, 20), **save))
        assert image.shape == (3, 20, 30) and image.dtype == torch.float32
        assert (image - read_image(png)).abs().mean() < 0.05  # JPEG is lossy
    grey = read_any_image(_image(tmp_path / "g.png", (30, 20), mode="L"))
    assert torch.equal(grey[0], grey[1])
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert torch.equal(read_any_image(tmp_path / "clear.png"), torch.ones(3, 4, 4))  # transparent: white


def test_unreadable_or_other_images_are_named(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"notes.png: not a readable PNG, JPEG or TIFF"):
        read_any_image(tmp_path / "notes.png")
    _image(tmp_path / "anim.gif", (8, 8))
    with pytest.raises(ValueError, match=r"anim.gif: a GIF image; --image reads PNG, JPEG, TIFF only"):
        read_any_image(tmp_path / "anim.gif")
    with pytest.raises(FileNotFoundError, match=r"image not found: .*missing.png \(--image\)"):
        read_any_image(tmp_path / "missing.png")


def test_the_window_defaults_to_the_training_size_else_224(quick_synth, tmp_path):
    assert training_window(quick_synth)[0] == 64
    window, source = training_window(tmp_path / "elsewhere")
    assert window == 224 and "published patch size" in source


# ------------------------------------------------------------------------------------------- one image
def test_predict_image_writes_a_palette_mask_and_overlay_of_any_size(seg_run, tmp_path):
    image = _image(tmp_path / "odd.tif", (97, 150))
    result = predict_image(seg_run, image, out=tmp_path / "o" / "odd.png", device="cpu")
    assert (result["height"], result["width"], result["window"], result["stride"]) == (150, 97, 64, 32)
    mask = read_mask(tmp_path / "o" / "odd.png")
    assert mask.shape == (150, 97) and mask.max() <= 3
    assert Image.open(tmp_path / "o" / "odd.png").getpalette()[:15] == [
        c for rgb in PALETTES["luad"] for c in rgb
    ]
    with Image.open(result["overlay"]) as over:
        assert over.size == (97, 150) and over.mode == "RGB"
    assert result["overlay"] == str(tmp_path / "o" / "odd_overlay.png")
    assert math.isclose(sum(result["shares"].values()), 1.0)
    assert list(result["shares"]) == ["TE", "NEC", "LYM", "TAS"]
    assert not [p for p in (tmp_path / "o").iterdir() if p.name.startswith(".")]  # no temp files left


def test_an_image_smaller_than_the_window_keeps_its_size(seg_run, tmp_path):
    result = predict_image(seg_run, _image(tmp_path / "s.jpg", (20, 9)), out=tmp_path / "s.png", device="cpu")
    assert read_mask(tmp_path / "s.png").shape == (9, 20) and result["windows"] == 1


def test_predict_image_refuses_what_the_run_cannot_do(seg_run, tmp_path):
    image = _image(tmp_path / "x.png", (64, 64))
    with pytest.raises(ValueError, match=r"--model ensemble: .* holds 1 network.*--peers 3"):
        predict_image(seg_run, image, out=tmp_path / "m.png", model="ensemble")
    with pytest.raises(ValueError, match=r"--model \(model\) must be one of"):
        predict_image(seg_run, image, out=tmp_path / "m.png", model="nope")
    with pytest.raises(ValueError, match=r"would overwrite the input image"):
        predict_image(seg_run, image, out=image)
    with pytest.raises(ValueError, match=r"--out .*m.jpg: the mask is a palette PNG"):
        predict_image(seg_run, image, out=tmp_path / "m.jpg")


# --------------------------------------------------------------------------------------------------- CLI
def test_cli_writes_mask_and_overlay_in_the_current_folder(seg_run, tmp_path, monkeypatch, capsys):
    (tmp_path / "data").mkdir()
    image = _image(tmp_path / "data" / "region.png", (100, 70))
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--checkpoint", str(seg_run), "--image", str(image), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "region_mask.png").is_file() and (tmp_path / "region_mask_overlay.png").is_file()
    assert not (tmp_path / "data" / "region_mask.png").exists()  # nothing written beside the user's data
    assert "region_mask.png" in out and "region_mask_overlay.png" in out
    assert "window 64 (training image" in out
    shares = [line.split() for line in out.splitlines() if line.startswith("  ")]
    assert [s[0] for s in shares] == ["TE", "NEC", "LYM", "TAS"]
    assert math.isclose(sum(float(s[1].rstrip("%")) for s in shares), 100, abs_tol=0.05)


def _stage1_folder(tmp_path):
    folder = tmp_path / "stage1"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"backbone": "resnet18"}))
    (folder / "classifier.pt").write_bytes(b"")
    return folder


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("text_as_png", "notes.png: not a readable PNG, JPEG or TIFF image"),
        ("stage1_folder", "is a stage 1 run folder"),
        ("model_nope", "argument --model: invalid choice: 'nope'"),
        ("window_zero", "--window (window=0) must be a positive multiple of 8"),
        ("no_run", "no such folder"),
    ],
)
def test_cli_bad_inputs_are_named_with_exit_2(case, message, seg_run, tmp_path, capsys):
    image = _image(tmp_path / "x.png", (64, 64))
    args = ["predict", "--checkpoint", str(seg_run), "--image", str(image), "--out", str(tmp_path / "m.png")]
    if case == "text_as_png":
        (tmp_path / "notes.png").write_text("hello")
        args[4] = str(tmp_path / "notes.png")
    elif case == "stage1_folder":
        args[2] = str(_stage1_folder(tmp_path))
    elif case == "model_nope":
        args += ["--model", "nope"]
    elif case == "window_zero":
        args += ["--window", "0"]
    elif case == "no_run":
        args[2] = str(tmp_path / "nowhere")
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.png").exists()
