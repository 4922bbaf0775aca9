"""Class activation maps and pseudo masks (paper §2.1–2.2; docs/paper_vs_code.md §3).

Two CAMs are implemented here, batched (all images of a batch in one forward):

* ``"cam"`` — plain CAM (Zhou et al. 2016): the fc8 weights times the feature map, raw, all classes at
  once: ``CAM_k = Σ_c w_kc · f_c``.
* ``"gradcam"`` — raw Grad-CAM on the class *logit*, without ReLU, which is how the released code makes
  its pseudo masks: ``G_k = Σ_c mean_hw(∂y_k/∂f_c) · f_c``. One backward per class per batch (the
  released code runs one forward and backward per image and class).

The rest of the zoo (Grad-CAM++, LayerCAM, XGradCAM, Score-CAM, EigenCAM, HiResCAM) comes from the
``grad-cam`` package. Note that the package applies a ReLU and normalises each map *per image and per
class* to [0, 1] before returning it, so its maps are already normalised when our normalisation runs.

From CAMs to a pseudo mask (:func:`cams_to_masks`): upsample to the image size → normalise (global
min-max over all classes of an image, as the released code does, or per class) → zero the classes absent
from the image-level label → the LUAD background rule (grey > 200, small white specks removed →
class 4) → argmax.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from skimage.morphology import remove_small_objects
from torch import nn

from arml.datasets import BACKGROUND
from arml.options import BACKGROUND_RULES, CAM_NORMALIZATIONS, check_choice

OWN_METHODS = ("cam", "gradcam")
ZOO_METHODS = {
    "gradcam++": "GradCAMPlusPlus",
    "layercam": "LayerCAM",
    "xgradcam": "XGradCAM",
    "scorecam": "ScoreCAM",
    "eigencam": "EigenCAM",
    "hirescam": "HiResCAM",
    "gradcam-pkg": "GradCAM",
}
CAM_METHODS = OWN_METHODS + tuple(ZOO_METHODS)


def plain_cam(model: nn.Module, images: torch.Tensor, use_ars: bool | None = None) -> torch.Tensor:
    """Plain CAM: ``B×K×h×w`` raw maps (no ReLU, no normalisation) at feature resolution."""
    with torch.no_grad():
        return model.cam(images, use_ars=use_ars)


def grad_cam(model: nn.Module, images: torch.Tensor, use_ars: bool | None = None) -> torch.Tensor:
    """Raw Grad-CAM on the class logits (no ReLU), ``B×K×h×w`` at feature resolution.

    Images are independent in eval mode, so ``∂(Σ_b y_bk)/∂f_b = ∂y_bk/∂f_b``: one backward per class
    gives the gradients of all images of the batch at once.
    """
    with torch.enable_grad():
        feats = model.features(images, use_ars=use_ars).detach().requires_grad_(True)
        logits = model.fc8(feats.mean(dim=(2, 3), keepdim=True)).flatten(1)
        maps = []
        for k in range(logits.shape[1]):
            (grad,) = torch.autograd.grad(logits[:, k].sum(), feats, retain_graph=k < logits.shape[1] - 1)
            weights = grad.mean(dim=(2, 3), keepdim=True)
            maps.append((weights * feats).sum(dim=1))
    return torch.stack(maps, dim=1).detach()


class _Tapped(nn.Module):
    """Expose the classifier's final feature map as a module output the grad-cam package can hook."""

    def __init__(self, model: nn.Module, use_ars: bool | None) -> None:
        super().__init__()
        self.model, self.use_ars, self.tap = model, use_ars, nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.tap(self.model.features(x, use_ars=self.use_ars))
        return self.model.fc8(feats.mean(dim=(2, 3), keepdim=True)).flatten(1)


def zoo_cam(method: str, model: nn.Module, images: torch.Tensor, use_ars: bool | None = None) -> torch.Tensor:
    """A CAM from the ``grad-cam`` package for every class: ``B×K×H×W`` at *input* resolution.

    The package normalises each image's map per class to [0, 1] (after a ReLU) and resizes it to the
    input size itself. Targets are per image (``ClassifierOutputTarget(k)`` for each image in turn).
    """
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if method not in ZOO_METHODS:
        raise ValueError(f"unknown grad-cam package method {method!r}; choose from {sorted(ZOO_METHODS)}")
    cls = getattr(pytorch_grad_cam, ZOO_METHODS[method])
    wrapped = _Tapped(model, use_ars).eval()
    maps = []
    with cls(model=wrapped, target_layers=[wrapped.tap]) as cam:
        if hasattr(cam, "batch_size"):
            cam.batch_size = 64  # Score-CAM: masked forwards per batch
        for k in range(model.num_classes):
            targets = [ClassifierOutputTarget(k) for _ in range(images.shape[0])]
            maps.append(torch.from_numpy(np.ascontiguousarray(cam(input_tensor=images, targets=targets))))
    return torch.stack(maps, dim=1).float()


def create_cam(name: str) -> Callable[..., torch.Tensor]:
    """Factory: ``create_cam("gradcam")(model, images, use_ars=None) -> B×K×h×w`` raw or normalised maps.

    Valid names: ``cam``, ``gradcam`` (ours, raw) and the ``grad-cam`` package methods
    ``gradcam++, layercam, xgradcam, scorecam, eigencam, hirescam, gradcam-pkg`` (normalised per image
    and class by the package).
    """
    if name == "cam":
        return plain_cam
    if name == "gradcam":
        return grad_cam
    if name in ZOO_METHODS:
        return lambda model, images, use_ars=None: zoo_cam(name, model, images, use_ars)
    raise ValueError(f"unknown CAM method {name!r}; choose from {list(CAM_METHODS)}")


def compute_cams(
    model: nn.Module,
    images: torch.Tensor,
    method: str = "gradcam",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    use_ars: bool | None = None,
) -> torch.Tensor:
    """CAMs at input resolution (``B×K×H×W``), optionally summed over scales and horizontal flips.

    Each scale's maps are bilinearly resized back to the input size before summing (multi-scale
    inference, as in PSA/SEAM); ``scales=(1.0,)`` and ``flip=False`` is the released code's single scale.
    """
    fn = create_cam(method)
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive numbers, got {scales!r}")
    size = images.shape[-2:]
    was_training = model.training
    model.eval()
    try:
        total = None
        for scale in scales:
            x = images if scale == 1.0 else F.interpolate(images, scale_factor=scale, mode="bilinear")
            variants = [(x, False), (x.flip(-1), True)] if flip else [(x, False)]
            for inp, flipped in variants:
                maps = fn(model, inp, use_ars=use_ars)
                maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
                maps = maps.flip(-1) if flipped else maps
                total = maps if total is None else total + maps
    finally:
        model.train(was_training)
    return total


def normalize_cams(cams: torch.Tensor, mode: str = "global", eps: float = 1e-5) -> torch.Tensor:
    """Min-max normalise ``B×K×H×W`` maps to [0, 1].

    ``"global"``: one min and max over all classes of an image (the released code, which has no
    epsilon; we add ``eps`` so a constant map gives 0 instead of 0/0). ``"per_class"``: each map alone.
    """
    check_choice("normalization", mode, CAM_NORMALIZATIONS)
    dims = (1, 2, 3) if mode == "global" else (2, 3)
    lo = cams.amin(dim=dims, keepdim=True)
    hi = cams.amax(dim=dims, keepdim=True)
    return (cams - lo) / (hi - lo + eps)


def _drop_small(mask: np.ndarray, min_size: int, connectivity: int) -> np.ndarray:
    """Remove blobs of fewer than ``min_size`` pixels (scikit-image renamed the argument in 0.26)."""
    if "max_size" in inspect.signature(remove_small_objects).parameters:
        return remove_small_objects(mask, max_size=min_size - 1, connectivity=connectivity)
    return remove_small_objects(mask, min_size=min_size, connectivity=connectivity)


def grey_level(images: torch.Tensor) -> torch.Tensor:
    """``B×H×W`` grey level on the 0..255 scale: ITU-R 601 luma, as ``cv2.cvtColor(RGB2GRAY)`` computes it."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be B×3×H×W in [0,1], got shape {tuple(images.shape)}")
    weights = torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)
    return (images * 255.0 * weights).sum(dim=1)


def background_mask(
    images: torch.Tensor, threshold: float = 200.0, min_size: int = 50, connectivity: int = 1
) -> torch.Tensor:
    """The LUAD white-background rule (docs/paper_vs_code.md §3): grey > ``threshold`` (0..255 scale), then
    white blobs smaller than ``min_size`` pixels are dropped. Returns ``B×H×W`` bool.

    Grey is :func:`grey_level` (ITU-R 601 luma, as ``cv2.cvtColor(RGB2GRAY)``).
    """
    white = (grey_level(images) > threshold).cpu().numpy()
    out = np.stack([_drop_small(w, min_size, connectivity) for w in white])
    return torch.from_numpy(out).to(images.device)


def cams_to_masks(
    cams: torch.Tensor,
    labels: torch.Tensor | None = None,
    images: torch.Tensor | None = None,
    normalization: str = "global",
    background: str = "luad",
    bg_threshold: float = 200.0,
    bg_min_size: int = 50,
) -> torch.Tensor:
    """Turn ``B×K×H×W`` CAMs into ``B×H×W`` int64 pseudo masks with values 0..K-1 and 4 (background).

    Args:
        cams: maps at image resolution (see :func:`compute_cams`).
        labels: ``B×K`` 0/1 image-level labels; absent classes are excluded *after* normalisation
            (released code order; it zeroes them, we set them to −inf so ties at 0 cannot pick an absent
            class). ``None`` keeps every class.
        images: ``B×3×H×W`` in [0, 1]; needed for ``background="luad"``.
        normalization: ``"global"`` (released code) or ``"per_class"``.
        background: ``"luad"`` applies the white-background rule (class 4); ``"none"`` never predicts 4
            (BCSS: "white background of breast tissue is meaningful (fat)").
        bg_threshold, bg_min_size: the rule's grey threshold (0..255) and smallest white blob kept.
    """
    check_choice("background", background, BACKGROUND_RULES)
    maps = normalize_cams(cams, normalization)
    if labels is not None:
        if labels.shape != maps.shape[:2]:
            raise ValueError(f"labels must be B×K = {tuple(maps.shape[:2])}, got {tuple(labels.shape)}")
        # The released code multiplies absent classes by 0; where a present class's map is also 0 (common
        # after the grad-cam package's ReLU) argmax then picks the first class even if it is absent. −inf
        # keeps the gate strict: an absent class never wins while any class is present.
        absent = (labels == 0).view(*labels.shape, 1, 1).to(maps.device)
        has_class = (labels != 0).any(dim=1).view(-1, 1, 1, 1).to(maps.device)
        maps = maps.masked_fill(absent & has_class, float("-inf"))
    masks = maps.argmax(dim=1)
    if background == "luad":
        if images is None:
            raise ValueError("background='luad' needs the images (the rule thresholds their grey level)")
        masks[background_mask(images, bg_threshold, bg_min_size)] = BACKGROUND
    return masks


def default_background(dataset: str) -> str:
    """LUAD marks white glass as class 4 in pseudo masks; BCSS does not (white fat is tissue there)."""
    return "luad" if dataset == "luad" else "none"


def collect_cams(
    model: nn.Module,
    dataset,
    method: str = "gradcam",
    batch_size: int = 32,
    limit: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    **cam_kwargs,
) -> dict[str, object]:
    """CAMs for the first ``limit`` items of a :class:`~arml.datasets.TrainDataset`, kept in memory.

    Returns a dict with ``cams`` (``N×K×H×W``), ``labels`` (``N×K``), ``images`` (``N×3×H×W``) and
    ``names``, so notebooks can try normalisations and background thresholds without recomputing.
    """
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    device = torch.device(device)
    model = model.to(device)
    subset = dataset if limit is None else Subset(dataset, range(min(limit, len(dataset))))
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False)
    out: dict[str, list] = {"cams": [], "labels": [], "images": [], "names": []}
    for images, labels, names in tqdm(loader, desc=f"CAMs ({method})", disable=not progress):
        cams = compute_cams(model, images.to(device), method=method, **cam_kwargs)
        out["cams"].append(cams.cpu())
        out["labels"].append(labels)
        out["images"].append(images)
        out["names"].extend(names)
    return {k: (v if k == "names" else torch.cat(v)) for k, v in out.items()}
