import numpy as np
import pytest
import torch
from torch import nn

from arml.cams import (
    CAM_METHODS,
    background_mask,
    cams_to_masks,
    compute_cams,
    create_cam,
    grad_cam,
    grey_level,
    normalize_cams,
    plain_cam,
    zoo_cam,
)
from arml.models import Classifier


class _FullResBackbone(nn.Module):
    """A stride-1 backbone, so CAMs live at image resolution and need no resizing in comparisons."""

    out_channels, stride = 6, 1

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1))

    def forward(self, x):
        return self.conv(x)


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return Classifier(_FullResBackbone(), num_classes=4, ars=None).eval()


def test_plain_cam_is_the_fc8_weighted_feature_sum(tiny_model):
    x = torch.rand(2, 3, 8, 8)
    feats = tiny_model.features(x)
    expected = torch.einsum("kc,bchw->bkhw", tiny_model.fc8.weight[:, :, 0, 0], feats)
    torch.testing.assert_close(plain_cam(tiny_model, x), expected)


def test_grad_cam_is_raw_and_matches_a_per_image_loop(tiny_model):
    x = torch.rand(3, 3, 8, 8)
    ours = grad_cam(tiny_model, x)
    assert ours.shape == (3, 4, 8, 8)
    for b in range(3):  # the released code's way: one image, one class, one backward at a time
        for k in range(4):
            f = tiny_model.features(x[b : b + 1]).detach().requires_grad_(True)
            y = tiny_model.fc8(f.mean((2, 3), keepdim=True)).flatten(1)[0, k]
            (g,) = torch.autograd.grad(y, f)
            ref = (g.mean((2, 3), keepdim=True) * f).sum(1)[0]
            torch.testing.assert_close(ours[b, k], ref.detach(), rtol=1e-4, atol=1e-5)
    assert (ours < 0).any()  # no ReLU


def test_grad_cam_for_a_linear_head_equals_plain_cam_over_hw(tiny_model):
    # with GAP + linear fc8, dy_k/df_c = w_kc / (h·w) everywhere, so Grad-CAM = CAM / (h·w)
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(grad_cam(tiny_model, x), plain_cam(tiny_model, x) / 64, rtol=1e-4, atol=1e-6)


def test_our_grad_cam_agrees_with_the_grad_cam_package(tiny_model):
    x = torch.rand(2, 3, 8, 8)
    ours = grad_cam(tiny_model, x).clamp(min=0)  # the package applies a ReLU ...
    lo = ours.amin(dim=(2, 3), keepdim=True)
    hi = ours.amax(dim=(2, 3), keepdim=True)
    ours = (ours - lo) / (hi - lo + 1e-7)  # ... and normalises per image and class
    theirs = zoo_cam("gradcam-pkg", tiny_model, x)
    torch.testing.assert_close(theirs, ours, rtol=1e-3, atol=1e-3)  # the package resizes through cv2


@pytest.mark.parametrize("method", ["gradcam++", "layercam", "xgradcam", "eigencam", "hirescam"])
def test_zoo_methods_give_normalised_maps(tiny_model, method):
    maps = create_cam(method)(tiny_model, torch.rand(2, 3, 8, 8))
    assert maps.shape == (2, 4, 8, 8) and torch.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6


def test_create_cam_lists_valid_names():
    assert {"cam", "gradcam", "gradcam++", "layercam", "scorecam"} <= set(CAM_METHODS)
    with pytest.raises(ValueError, match="gradcam"):
        create_cam("smoothgrad")


def test_compute_cams_flip_and_scales(tiny_model):
    x = torch.rand(1, 3, 8, 8)
    single = compute_cams(tiny_model, x, "cam")
    flipped = compute_cams(tiny_model, x.flip(-1), "cam").flip(-1)
    both = compute_cams(tiny_model, x, "cam", flip=True)
    torch.testing.assert_close(both, single + flipped)
    assert compute_cams(tiny_model, x, "cam", scales=(1.0, 0.5)).shape == (1, 4, 8, 8)
    with pytest.raises(ValueError, match="positive"):
        compute_cams(tiny_model, x, "cam", scales=(0.0,))
    tiny_model.train()
    compute_cams(tiny_model, x, "cam")
    assert tiny_model.training  # train/eval state restored


def test_normalize_cams_global_and_per_class():
    cams = torch.zeros(1, 2, 1, 2)
    cams[0, 0] = torch.tensor([0.0, 2.0])
    cams[0, 1] = torch.tensor([1.0, 1.5])
    g = normalize_cams(cams, "global", eps=0)
    torch.testing.assert_close(g[0, 1, 0], torch.tensor([0.5, 0.75]))
    p = normalize_cams(cams, "per_class", eps=0)
    torch.testing.assert_close(p[0, 1, 0], torch.tensor([0.0, 1.0]))
    assert torch.isfinite(normalize_cams(torch.ones(1, 2, 2, 2))).all()  # a constant map is not 0/0
    with pytest.raises(ValueError, match="global"):
        normalize_cams(cams, "softmax")


def test_background_rule_on_a_crafted_image():
    img = torch.zeros(1, 3, 12, 12)
    img[:, :, :6, :6] = 1.0  # a 36-px white block: kept
    img[:, :, 10, 10] = 1.0  # a 1-px white speck: removed as a small object
    img[:, :, 8:12, 0:2] = 200 / 255  # grey exactly 200 is not > 200
    bg = background_mask(img, threshold=200, min_size=5)
    assert bg[0, :6, :6].all() and not bg[0, 10, 10] and not bg[0, 8:, :2].any()
    assert bg.sum() == 36
    with pytest.raises(ValueError, match="B×3×H×W"):
        background_mask(torch.zeros(3, 4, 4))


def test_cams_to_masks_gating_and_background():
    cams = torch.zeros(1, 4, 2, 2)
    cams[0, 0] = 1.0  # class 0 strongest everywhere ...
    cams[0, 2] = torch.tensor([[0.5, 0.9], [0.1, 0.2]])
    labels = torch.tensor([[0, 0, 1, 1]])  # ... but not in the label
    masks = cams_to_masks(cams, labels, background="none")
    assert set(masks.unique().tolist()) <= {2, 3}
    assert masks[0, 0, 1] == 2
    images = torch.zeros(1, 3, 2, 2)
    images[..., 0, 0] = 1.0
    masks = cams_to_masks(cams, labels, images, background="luad", bg_min_size=1)
    assert masks[0, 0, 0] == 4 and (masks[0].flatten()[1:] != 4).all()
    with pytest.raises(ValueError, match="needs the images"):
        cams_to_masks(cams, labels, background="luad")
    with pytest.raises(ValueError, match="labels must be"):
        cams_to_masks(cams, torch.ones(1, 3), background="none")


def test_masks_from_the_package_zoo_are_valid(tiny_model):
    x = torch.rand(2, 3, 8, 8)
    cams = compute_cams(tiny_model, x, "gradcam++")
    masks = cams_to_masks(cams, torch.ones(2, 4), x, background="luad")
    assert masks.dtype == torch.int64 and set(np.unique(masks.numpy())) <= {0, 1, 2, 3, 4}


def test_label_gate_is_strict_when_present_classes_are_zero():
    cams = torch.zeros(1, 4, 1, 2)  # every map 0 at both pixels (e.g. after a ReLU)
    cams[0, 3, 0, 1] = 1.0
    masks = cams_to_masks(cams, torch.tensor([[0, 0, 1, 1]]), background="none")
    assert masks.tolist() == [[[2, 3]]]  # the tie goes to a labelled class, never to absent class 0


def test_grey_level_by_hand():
    img = torch.zeros(1, 3, 1, 3)
    img[0, :, 0, 0] = 1.0  # white
    img[0, 0, 0, 1] = 1.0  # pure red
    grey = grey_level(img)
    torch.testing.assert_close(grey[0, 0], torch.tensor([255.0, 0.299 * 255, 0.0]))
    with pytest.raises(ValueError, match="B×3×H×W"):
        grey_level(torch.zeros(3, 4, 4))
