"""The paper profile's code path on the CPU: the ``paper-smoke`` profile through the CLI chain.

``paper-smoke`` is ``paper`` (ResNet-38d + ARS at 224 px, three PSPNet peers on ResNeSt-101e, the paper's
recipe) on 8 synthetic training images, one epoch of two optimiser steps per stage. ResNet-38d starts from
a local converted weights file, faked here with random values in the released converter's layout.
Nothing is downloaded. On the shared 2-core machine (load 6-15, so upper bounds): the CLI chain 8.7 min,
notebook 06 (eight stage-2 runs) 12 min.
"""

import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from arml.cams import grey_level
from arml.cli import main
from arml.datasets import BACKGROUND, read_mask
from arml.models import ResNet38d, create_backbone, load_weights
from arml.profiles import get_profile
from arml.reproduce import run_notebooks
from arml.synth import SYNTH_PROFILES

PAPER, SMOKE = get_profile("paper"), get_profile("paper-smoke")

# Names and shapes that the released convert_mxnet_to_torch (network/resnet38d.py:400-448) writes, e.g.
# MXNet res4b5_branch2b1_weight → b4_5.conv_branch2b1.weight, bn7_moving_var → bn7.running_var.
RELEASED_KEYS = {
    "conv1a.weight": (64, 3, 3, 3),
    "b2.conv_branch1.weight": (128, 64, 1, 1),
    "b2.bn_branch2a.running_var": (64,),
    "b2_2.conv_branch2b1.weight": (128, 128, 3, 3),
    "b4_5.conv_branch2b1.weight": (512, 512, 3, 3),
    "b5.conv_branch2a.weight": (512, 512, 3, 3),
    "b6.bn_branch2b2.weight": (1024,),
    "b7.conv_branch2b2.weight": (4096, 2048, 1, 1),
    "bn7.running_mean": (4096,),
}


def fake_converted_resnet38d(path) -> dict[str, torch.Tensor]:
    """Random ResNet-38d weights saved as the released converter saves the ImageNet ones: a plain dict of
    float32 tensors by parameter name, without BatchNorm's ``num_batches_tracked`` (MXNet has no such counter)
    and without the ImageNet classifier (the converter skips ``linear1000``). Returns the dict."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, value in ResNet38d().state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(value.shape, generator=gen)
        elif value.ndim == 4:  # LeCun-scaled: the 4096-channel features stay below ~20 on these images
            state[key] = torch.randn(value.shape, generator=gen) * (1 / value[0].numel()) ** 0.5
        else:  # BN weight around 1, bias and running mean around 0
            state[key] = 0.1 * torch.randn(value.shape, generator=gen) + float(key.endswith(".weight"))
    torch.save(state, path)
    return state


def test_paper_smoke_is_the_paper_profile_at_a_handful_of_images(tmp_path):
    sizes = {"epochs", "batch_size"}
    for build in ("cls_config", "seg_config"):
        extra = {"masks": "pm"} if build == "seg_config" else {}
        paper = getattr(PAPER, build)(tmp_path, **extra).to_dict()
        smoke = getattr(SMOKE, build)(tmp_path, **extra).to_dict()
        assert {k for k in paper if paper[k] != smoke[k]} == sizes, build
        assert smoke["epochs"] == 1
    assert (SMOKE.cls["backbone"], SMOKE.seg["arch"], SMOKE.seg["encoder"]) == (
        "resnet38d",
        "pspnet",
        "resnest101e",
    )
    # 8 training images in batches of 4: two optimiser steps per stage
    synth = SYNTH_PROFILES[SMOKE.synth]
    assert synth.n_train // SMOKE.cls["batch_size"] == synth.n_train // SMOKE.seg["batch_size"] == 2
    # the paper's synthetic data (224 px at 1 µm/px), only fewer patches
    assert replace(synth, n_train=2000, n_val=300, n_test=300) == SYNTH_PROFILES["paper"]
    assert (synth.size, synth.n_train, synth.n_val, synth.n_test) == (224, 8, 4, 4)
    assert SMOKE.pseudo_config().to_dict() == {**PAPER.pseudo_config().to_dict(), "batch_size": 4}
    assert SMOKE.seeds == SMOKE.sweep_seeds == SMOKE.noise_seeds == (0,)
    assert len(SMOKE.noise_kinds) == len(SMOKE.noise_rates) == 1 and SMOKE.cam_limit == 2


@pytest.mark.slow
def test_converted_resnet38d_file_loads_by_name_and_wrong_files_are_refused(tmp_path):
    path = tmp_path / "res38d.pth"
    state = fake_converted_resnet38d(path)
    for key, shape in RELEASED_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every weight matched (BatchNorm fills in its num_batches_tracked)
        net = create_backbone("resnet38d", pretrained=path, freeze_official=True)
    loaded = net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    # a DataParallel copy ("module." prefix) loads too
    torch.save({f"module.{k}": v for k, v in state.items() if k.startswith("b7.")}, tmp_path / "dp.pth")
    with pytest.warns(UserWarning, match="prefix 'module.' removed"):
        load_weights(net, tmp_path / "dp.pth")

    def refused(payload, match):
        bad = tmp_path / "bad.pth"
        torch.save(payload, bad) if not isinstance(payload, str) else bad.write_text(payload)
        with pytest.raises(ValueError, match=match):
            load_weights(net, bad, "backbone resnet38d")

    refused(
        {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512)}, "none of its 2 keys"
    )
    refused({"conv1a.weight": torch.zeros(64, 3, 5, 5)}, "tensor shapes do not fit")
    refused("MXNet params, not converted", "cannot read a PyTorch state dict")
    refused({"state_dict": {"conv1a.weight": [1.0]}}, "expected a state dict of tensors")


@pytest.mark.slow
def test_paper_smoke_cli_chain(tmp_path, capsys):
    """synth → train-cls (converted ResNet-38d weights) → pseudo-masks → train-seg → evaluate → predict."""
    data, s1, s2 = tmp_path / "data", tmp_path / "s1", tmp_path / "s2"
    weights = tmp_path / "res38d.pth"
    state = fake_converted_resnet38d(weights)
    profile = ["--profile", "paper-smoke"]

    assert main(["synth", "--out", str(data), *profile, "--quiet"]) == 0
    assert len(list((data / "train").glob("*.png"))) == 8
    assert Image.open(next((data / "test" / "img").glob("*.png"))).size == (224, 224)

    bad = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, bad)
    args = ["train-cls", "--data", str(data), *profile, "--quiet"]
    assert main([*args, "--out", str(tmp_path / "bad"), "--pretrained", str(bad)]) == 2
    assert "none of its 1 keys match the backbone resnet38d" in capsys.readouterr().err

    assert main([*args, "--out", str(s1), "--pretrained", str(weights)]) == 0
    config = json.loads((s1 / "config.json").read_text())
    assert (config["backbone"], config["pretrained"], config["epochs"]) == ("resnet38d", str(weights), 1)
    history = json.loads((s1 / "history.json").read_text())["history"]
    assert len(history) == 1 and history[0]["ars"]
    assert history[0]["loss"] is not None and np.isfinite(history[0]["loss"])  # NaN is written as null
    trained = torch.load(s1 / "classifier.pt", weights_only=True)["model"]
    # frozen as in the released code (conv1a, b2*, every BN): still the file's values after the SGD steps
    for key in ("conv1a.weight", "b2_2.conv_branch2b1.weight", "b5_1.bn_branch2a.running_var"):
        assert torch.equal(trained[f"backbone.{key}"], state[key]), key
    # trainable: loaded from the file, then moved by the two steps
    assert not torch.equal(
        trained["backbone.b4_5.conv_branch2b1.weight"], state["b4_5.conv_branch2b1.weight"]
    )
    del trained

    assert main(["pseudo-masks", "--checkpoint", str(s1), "--name", "pm", *profile, "--quiet"]) == 0
    assert "8 pseudo masks written" in capsys.readouterr().out
    glass = covered = 0
    for image_path in sorted((data / "train").glob("*.png")):
        pm = read_mask(data / "train_PM" / "pm" / image_path.name)
        truth = read_mask(data / "train_gt" / image_path.name)
        image = torch.from_numpy(np.array(Image.open(image_path).convert("RGB"))).permute(2, 0, 1) / 255.0
        white = grey_level(image[None])[0].numpy() > 200
        assert pm.shape == (224, 224) and not (pm == BACKGROUND)[~white].any()  # the rule marks white only
        glass += int(((truth == BACKGROUND) & white).sum())
        covered += int(((truth == BACKGROUND) & white & (pm == BACKGROUND)).sum())
    assert glass > 1000 and covered >= 0.9 * glass  # the LUAD background rule found the synthetic glass

    args = ["train-seg", "--data", str(data), "--masks", "pm", "--out", str(s2), *profile, "--quiet"]
    assert main(args) == 0
    trained_out = capsys.readouterr().out
    config = json.loads((s2 / "config.json").read_text())
    assert (config["arch"], config["encoder"], config["peers"], config["epochs"]) == (
        "pspnet",
        "resnest101e",
        3,
        1,
    )
    metrics = json.loads((s2 / "metrics.json").read_text())
    assert {"F_a", "F_b", "F_c", "ensemble"} <= set(metrics) and 0 <= metrics["F_a"]["miou"] <= 1

    assert main(["evaluate", "--checkpoint", str(s2), "--split", "test"]) == 0
    scored = capsys.readouterr().out
    assert scored.split("\n", 1)[1].strip() == trained_out.split("\n", 1)[1].strip()

    image = tmp_path / "slide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (250, 300, 3), dtype=np.uint8)).save(image)
    mask = tmp_path / "slide_mask.png"
    assert main(["predict", "--checkpoint", str(s2), "--image", str(image), "--out", str(mask)]) == 0
    assert "(300×250 pixels)" in capsys.readouterr().out
    predicted = read_mask(mask)
    assert predicted.shape == (250, 300) and predicted.max() < BACKGROUND
    assert Image.open(tmp_path / "slide_mask_overlay.png").size == (300, 250)


@pytest.mark.slow
def test_paper_smoke_notebook_06(tmp_path, monkeypatch):
    """Notebook 06 (Table 2's ablation, the released recipe, the reference rows) on the paper's networks."""
    monkeypatch.setenv("ARML_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ARML_RUNS", str(tmp_path / "runs"))
    (run,) = run_notebooks("paper-smoke", out=tmp_path, only="06", progress=False)
    assert run.ok, run.error
    results = json.loads((tmp_path / "results" / "06_final_benchmark.json").read_text())
    assert (results["profile"], results["seeds"], results["synthetic"]) == ("paper-smoke", [0], True)
    assert {"baseline", "full"} <= set(results["ablation"])
    runs = tmp_path / "runs" / "synthetic-paper-smoke-luad" / "paper-smoke"
    stage1 = [json.loads(p.read_text()) for p in runs.glob("stage1-*/config.json")]
    stage2 = [json.loads(p.read_text()) for p in runs.glob("stage2-*/config.json")]
    assert stage1 and all((c["backbone"], c["epochs"]) == ("resnet38d", 1) for c in stage1)
    assert stage2 and all((c["arch"], c["encoder"]) == ("pspnet", "resnest101e") for c in stage2)
    assert list((tmp_path / "figures").glob("06_final_benchmark_*"))
