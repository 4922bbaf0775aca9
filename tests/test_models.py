"""Backbones, the stage-1 classifier and the stage-2 segmenters: shapes, identities, weights, bad arguments."""

from __future__ import annotations

import time

import pytest
import torch

from arml.models import (
    BACKBONES,
    SEGMENTERS,
    Classifier,
    ResNet38d,
    create_backbone,
    create_classifier,
    create_segmenter,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is fastest and immune to a busy machine's oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return create_classifier("resnet10t", num_classes=4).eval()


@pytest.mark.parametrize("backbone", ["resnet10t", "resnet18"])
@pytest.mark.parametrize("size", [(32, 32), (48, 64)])
def test_classifier_shapes(backbone, size):
    model = create_classifier(backbone, num_classes=4)
    x = torch.rand(2, 3, *size)
    h, w = size[0] // 8, size[1] // 8
    assert model.out_channels == 512 and model.stride == 8 and model.num_classes == 4
    assert model.recipe == "paper" and model.ars_enabled
    assert model.features(x).shape == (2, 512, h, w)
    assert model(x).shape == (2, 4)
    assert model.cam(x).shape == (2, 4, h, w)
    assert torch.isfinite(model(x)).all()


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_cam_is_fc8_on_features_and_its_mean_is_the_logits(tiny, dropout):
    tiny.dropout.p = dropout
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feats, cams = tiny.features(x), tiny.cam(x)
        assert torch.allclose(
            cams, torch.einsum("kc,bchw->bkhw", tiny.fc8.weight[:, :, 0, 0], feats), atol=1e-5
        )
        assert torch.allclose(tiny(x), cams.mean(dim=(2, 3)), atol=1e-5)


def test_use_ars_switch(tiny):
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        plain = tiny.backbone(x)
        assert torch.equal(tiny.features(x, use_ars=False), plain)
        assert not torch.allclose(tiny.features(x), plain)  # the reactivation gates change the features
        assert torch.equal(tiny.features(x, use_ars=True), tiny.ars(plain))
        tiny.ars_enabled = False
        assert torch.equal(tiny.features(x), plain)
        assert torch.equal(tiny.cam(x), tiny.cam(x, use_ars=False))
        assert torch.equal(
            tiny.cam(x, use_ars=True), torch.nn.functional.conv2d(tiny.ars(plain), tiny.fc8.weight)
        )


def test_imagenet_input_norm_happens_inside_the_model():
    torch.manual_seed(0)
    model = create_classifier("resnet10t", input_norm="imagenet").eval()
    x = torch.rand(1, 3, 32, 32)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    with torch.no_grad():
        assert torch.allclose(
            model.features(x), model.ars(model.backbone((x - mean[:, None, None]) / std[:, None, None]))
        )
    assert "mean" not in model.state_dict() and not any("input_norm" in k for k in model.state_dict())


@pytest.mark.parametrize("recipe", ["paper", "official"])
def test_param_groups_cover_trainable_parameters_once(recipe):
    model = create_classifier("resnet10t", recipe=recipe)
    groups = model.param_groups(lr=0.01, weight_decay=5e-4)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(ids) == len(set(ids)) == len(trainable) and set(ids) == {id(p) for p in trainable}
    by_name = {g["name"]: g for g in groups}
    new = {id(p) for p in model.fc8.parameters() if p.requires_grad}  # ARS trains at the backbone's lr
    for name, group in by_name.items():
        assert group["lr"] == pytest.approx(0.1 if name.startswith("new") else 0.01)
        assert all((id(p) in new) == name.startswith("new") for p in group["params"])
        assert all((p.ndim > 1) == (group["weight_decay"] == 5e-4) for p in group["params"])
    assert any(p is model.fc8.weight for p in by_name["new"]["params"])
    gamma_in_groups = any(p is model.ars.cca.gamma for g in groups for p in g["params"])
    assert gamma_in_groups == (recipe == "paper")
    torch.optim.SGD(groups, lr=0.01, momentum=0.9).step()


def test_param_groups_bad_arguments(tiny):
    with pytest.raises(ValueError, match="lr > 0"):
        tiny.param_groups(0.0, 5e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"backbone": "resnet9000"},
            r"unknown backbone 'resnet9000': use one of \['resnet38d'\] or any timm",
        ),
        ({"ars": "attention"}, r"ars parts must be one of \[None, 'cca', 'reactivation', 'both'\]"),
        ({"recipe": "code"}, r"recipe must be one of \['paper', 'official'\]"),
        ({"reactivation_variant": "paper"}, r"reactivation_variant must be one of \['code', 'eq3'\]"),
        ({"recipe": "official", "reactivation_variant": "eq3"}, "needs reactivation_variant='code'"),
        ({"input_norm": "zscore"}, r"input_norm must be one of \['none', 'imagenet'\]"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"num_classes": 0}, "num_classes must be a positive int"),
        ({"output_stride": 4}, r"output_stride must be one of \[8, 16, 32\]"),
        ({"pretrained": "/no/such/file.pth"}, "path of an existing weights file"),
        ({"freeze_official": True}, r"freeze_official applies only to \['resnet38d'\]"),
        ({"backbone": "resnet38d", "pretrained": "imagenet"}, "has no downloadable weights"),
        ({"backbone": "resnet38d", "output_stride": 16}, "fixed output_stride of 8"),
    ],
)
def test_create_classifier_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_classifier(**kwargs)


def test_images_must_be_rgb(tiny):
    with pytest.raises(ValueError, match=r"expected images B×3×H×W, got shape \(2, 1, 32, 32\)"):
        tiny(torch.rand(2, 1, 32, 32))


def test_timm_backbone_output_stride():
    backbone = create_backbone("resnet10t", output_stride=16)
    assert backbone.stride == 16 and backbone(torch.rand(1, 3, 64, 64)).shape == (1, 512, 4, 4)


def test_local_weights_file(tmp_path):
    torch.manual_seed(0)
    source = create_backbone("resnet10t")
    plain, wrapped = tmp_path / "plain.pth", tmp_path / "wrapped.pt"
    torch.save(source.model.state_dict(), plain)  # a timm checkpoint
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.model.state_dict().items()}}, wrapped)
    for path in (plain, wrapped):
        loaded = create_backbone("resnet10t", pretrained=str(path))
        for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values(), strict=True):
            assert torch.equal(a, b), name


def test_local_weights_file_from_a_classifier_warns_about_extra_keys(tmp_path):
    source = create_classifier("resnet10t")
    path = tmp_path / "classifier.pth"
    torch.save({"model": source.state_dict(), "epoch": 3}, path)
    with pytest.warns(UserWarning, match=r"prefix 'backbone.model.' removed.*unexpected \['ars\."):
        model = create_classifier("resnet10t", pretrained=path)
    assert torch.equal(model.backbone.model.conv1[0].weight, source.backbone.model.conv1[0].weight)


def test_local_weights_file_with_foreign_keys_fails(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="none of its 1 keys match"):
        create_backbone("resnet10t", pretrained=path)


@pytest.mark.slow
def test_resnet38d(tmp_path):
    start = time.perf_counter()
    torch.manual_seed(0)
    model = create_classifier("resnet38d", freeze_official=True, dropout=0.5)
    backbone = model.backbone
    assert isinstance(backbone, ResNet38d) and "resnet38d" in BACKBONES
    assert backbone.out_channels == model.out_channels == 4096 and backbone.stride == 8
    assert 100e6 < sum(p.numel() for p in backbone.parameters()) < 110e6
    model.train()
    assert not backbone.conv1a.weight.requires_grad and not backbone.b2_2.conv_branch2b1.weight.requires_grad
    assert backbone.b3.conv_branch2a.weight.requires_grad
    assert all(
        not m.training and not m.weight.requires_grad
        for m in backbone.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    )
    with torch.no_grad():
        assert backbone(torch.rand(1, 3, 32, 32)).shape == (1, 4096, 4, 4)
    # a converted checkpoint of the released layout (names b2.bn_branch2a..., bn7) loads by name
    state = {
        k: torch.full_like(v, 0.5)
        for k, v in backbone.state_dict().items()
        if k.startswith(("b4_5.", "bn7."))
    }
    path = tmp_path / "res38d.pth"
    torch.save(state, path)
    with pytest.warns(UserWarning, match="missing"):
        loaded = create_backbone("resnet38d", pretrained=path)
    assert torch.all(loaded.b4_5.conv_branch2a.weight == 0.5) and torch.all(loaded.bn7.running_var == 0.5)
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize(
    ("arch", "encoder", "size"),
    [("pspnet", "resnet10t", 64), ("pspnet", "tu-resnet10t", 96), ("pspnet", "resnet18", 72),
     ("deeplabv3plus", "resnet10t", 64), ("deeplabv3plus", "tu-resnet18", 96)],
)  # fmt: skip
def test_segmenter_shapes(arch, encoder, size):
    model = create_segmenter(arch, encoder, num_classes=4)
    assert model.stride == (8 if arch == "pspnet" else 16)
    assert model.encoder_name == encoder.removeprefix("tu-")
    out = model(torch.rand(2, 3, size, size))
    assert out.shape == (2, 4, size, size) and torch.isfinite(out).all()


def test_pspnet_defaults_to_depth_3_and_other_depths_keep_the_size():
    assert create_segmenter("pspnet", "resnet10t").net.encoder._depth == 3
    model = create_segmenter("pspnet", "resnet10t", encoder_depth=5)
    assert model.stride == 32 and model(torch.rand(2, 3, 64, 64)).shape == (2, 4, 64, 64)


def test_segmenter_local_encoder_weights(tmp_path):
    source = create_backbone("resnet10t", output_stride=32)
    path = tmp_path / "encoder.pth"
    torch.save(source.model.state_dict(), path)
    with pytest.warns(UserWarning, match=r"unexpected \['layer3"):  # depth 3: layer3 and layer4 unused
        model = create_segmenter("pspnet", "resnet10t", pretrained=path)
    assert torch.equal(model.net.encoder.model.conv1[0].weight, source.model.conv1[0].weight)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arch": "unet"}, r"arch must be one of \['deeplabv3plus', 'pspnet'\]"),
        ({"encoder": "tu-resnet9000"}, "unknown encoder 'resnet9000'"),
        ({"arch": "deeplabv3plus", "encoder_depth": 2}, r"encoder_depth must be one of \[3, 4, 5\]"),
        ({"pretrained": "weights.pth"}, "path of an existing weights file"),
    ],
)
def test_create_segmenter_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_segmenter(**kwargs)


def test_registries():
    assert set(SEGMENTERS) == {"pspnet", "deeplabv3plus"} and callable(BACKBONES["resnet38d"])
    assert isinstance(create_classifier("resnet10t", ars=None), Classifier)


def test_feature_level_stops_a_timm_backbone_early():
    net = create_backbone("resnet10t", output_stride=8, feature_level=3)
    assert net.out_channels == 256 and net.stride == 8
    assert net(torch.rand(1, 3, 32, 32)).shape == (1, 256, 4, 4)
    with pytest.raises(ValueError, match="feature_level applies only"):
        create_backbone("resnet38d", feature_level=3)
