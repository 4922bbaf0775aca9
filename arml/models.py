"""Networks: backbones (timm, ResNet-38d), the stage-1 classifier with ARS, the stage-2 segmenters (smp).

Images entering every model are ``B×3×H×W`` float in [0, 1]; ``input_norm="imagenet"`` applies ImageNet
mean/std inside the model (the released code feeds [0, 1] images, docs/paper_vs_code.md §6 row 19).

>>> import torch
>>> model = create_classifier("resnet10t", num_classes=4, ars="both")
>>> model(torch.rand(2, 3, 32, 32)).shape, model.cam(torch.rand(2, 3, 32, 32)).shape
(torch.Size([2, 4]), torch.Size([2, 4, 4, 4]))
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn.functional as F
from torch import nn

from arml.ars import ARS, resolve_ars_args
from arml.options import INPUT_NORMS, OUTPUT_STRIDES, check_choice

PRETRAINED_TAGS = ("timm", "imagenet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------- ResNet-38d
class _PreActBlock(nn.Module):
    """Pre-activation basic block of ResNet-38d (``ResBlock``; parameter names match the released weights)."""

    def __init__(
        self, in_ch: int, mid_ch: int, out_ch: int, stride: int = 1, dilation: int = 1, first_dilation=None
    ):
        super().__init__()
        first = dilation if first_dilation is None else first_dilation
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, mid_ch, 3, stride, padding=first, dilation=first, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mid_ch)
        self.conv_branch2b1 = nn.Conv2d(mid_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False)
        same_shape = in_ch == out_ch and stride == 1
        self.conv_branch1 = None if same_shape else nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn_branch2a(x))
        shortcut = x if self.conv_branch1 is None else self.conv_branch1(pre)
        return shortcut + self.conv_branch2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(pre))))


class _PreActBottleneck(nn.Module):
    """Pre-activation bottleneck of ResNet-38d (``ResBlock_bot``) with Dropout2d before the inner convs."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int, dropout: float):
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, out_ch // 4, 1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(out_ch // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(
            out_ch // 4, out_ch // 2, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn_branch2b2 = nn.BatchNorm2d(out_ch // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(out_ch // 2, out_ch, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn_branch2a(x))
        branch = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(pre)))))
        branch = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(branch))))
        return self.conv_branch1(pre) + branch


class ResNet38d(nn.Module):
    """ResNet-38d ("Wider or deeper", Wu et al. 2019), the paper's stage-1 backbone (docs/paper_vs_code.md §2.1).

    conv1a (64) → b2 ×3 (128, stride 2) → b3 ×3 (256, stride 2) → b4 ×6 (512, stride 2) → b5 ×3 (1024,
    dilation 2) → b6 (bottleneck 2048, dilation 4, Dropout2d 0.3) → b7 (bottleneck 4096, dilation 4,
    Dropout2d 0.5) → bn7 + ReLU. About 104 M parameters. Module and parameter names follow the released
    ``network/resnet38d.py``, so a state dict converted from the MXNet ImageNet weights loads as it is;
    Grad-CAM layers of the code are ``b4_5``, ``b5_2`` and ``bn7``. PyTorch's default initialisation.

    Args:
        output_stride: must be 8 (the architecture's fixed stride).
        freeze_official: as the released code: conv1a and b2–b2_2 frozen, every BatchNorm frozen and kept
            in eval mode, also after ``.train()``. With random initialisation this leaves the network without
            working normalisation, so use it only with converted ImageNet weights.

    Shapes:
        ``B×3×H×W → B×4096×⌈H/8⌉×⌈W/8⌉``.
    """

    def __init__(self, output_stride: int = 8, freeze_official: bool = False) -> None:
        super().__init__()
        if output_stride != 8:
            raise ValueError(f"resnet38d has a fixed output_stride of 8, got {output_stride}")
        self.conv1a = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        blocks: list[tuple[str, nn.Module]] = [("b2", _PreActBlock(64, 128, 128, stride=2))]
        blocks += [(f"b2_{i}", _PreActBlock(128, 128, 128)) for i in (1, 2)]
        blocks += [("b3", _PreActBlock(128, 256, 256, stride=2))]
        blocks += [(f"b3_{i}", _PreActBlock(256, 256, 256)) for i in (1, 2)]
        blocks += [("b4", _PreActBlock(256, 512, 512, stride=2))]
        blocks += [(f"b4_{i}", _PreActBlock(512, 512, 512)) for i in range(1, 6)]
        blocks += [("b5", _PreActBlock(512, 512, 1024, dilation=2, first_dilation=1))]
        blocks += [(f"b5_{i}", _PreActBlock(1024, 512, 1024, dilation=2)) for i in (1, 2)]
        blocks += [("b6", _PreActBottleneck(1024, 2048, dilation=4, dropout=0.3))]
        blocks += [("b7", _PreActBottleneck(2048, 4096, dilation=4, dropout=0.5))]
        for name, block in blocks:
            self.add_module(name, block)
        self.block_names = tuple(name for name, _ in blocks)
        self.bn7 = nn.BatchNorm2d(4096)
        self.out_channels, self.stride, self.freeze_official = 4096, 8, freeze_official
        if freeze_official:
            for module in (self.conv1a, self.b2, self.b2_1, self.b2_2):
                module.requires_grad_(False)
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.requires_grad_(False)
            self.train(self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1a(x)
        for name in self.block_names:
            x = getattr(self, name)(x)
        return F.relu(self.bn7(x))

    def train(self, mode: bool = True) -> ResNet38d:
        super().train(mode)
        if self.freeze_official:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self


# ------------------------------------------------------------------------------------- backbone factory
class TimmBackbone(nn.Module):
    """Any timm model as a single-map feature extractor: its deepest feature at ``output_stride``.

    Shapes:
        ``B×3×H×W → B×out_channels×H/stride×W/stride``.
    """

    def __init__(self, name: str, output_stride: int = 8, pretrained: bool = False, feature_level: int = -1):
        super().__init__()
        self.name = name
        self.model = timm.create_model(
            name,
            features_only=True,
            output_stride=output_stride,
            out_indices=(feature_level,),
            pretrained=pretrained,
        )
        self.out_channels = self.model.feature_info.channels()[-1]
        self.stride = self.model.feature_info.reduction()[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[-1]


BACKBONES: dict[str, Callable[..., nn.Module]] = {"resnet38d": ResNet38d}


def _check_timm_name(name: str, what: str = "backbone") -> None:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise ValueError(
            f"unknown {what} {name!r}: use one of {sorted(BACKBONES)} or any timm model name "
            f"(timm.list_models()); close timm names: {close}"
        )


def _resolve_pretrained(pretrained: str | Path | bool | None) -> tuple[bool, Path | None]:
    """Map ``pretrained`` to ``(download, local_file)``; ``True`` means the tag ``"timm"``."""
    if pretrained is None or pretrained is False:
        return False, None
    if pretrained is True or pretrained in PRETRAINED_TAGS:
        return True, None
    if isinstance(pretrained, (str, Path)) and Path(pretrained).expanduser().is_file():
        return False, Path(pretrained).expanduser()
    raise ValueError(
        f"pretrained must be None (random init), one of {list(PRETRAINED_TAGS)} (download through timm/smp) "
        f"or the path of an existing weights file; got {pretrained!r}"
    )


def _strip_prefix(state: dict[str, torch.Tensor], own: set[str]) -> tuple[str, dict[str, torch.Tensor]]:
    """Drop the key prefix (``module.``, ``backbone.model.``, …) that makes most file keys match ``own``."""
    prefixes = {""} | {
        ".".join(k.split(".")[:i]) + "." for k in state for i in range(1, min(4, k.count(".") + 1))
    }

    def matches(prefix: str) -> int:
        return sum(k.startswith(prefix) and k[len(prefix) :] in own for k in state)

    best = max(sorted(prefixes, key=len), key=matches)
    return best, {(k[len(best) :] if k.startswith(best) else k): v for k, v in state.items()}


def load_weights(module: nn.Module, path: str | Path, what: str = "model") -> None:
    """Load a local state-dict file into ``module`` (non-strict) and warn about keys that did not match.

    The file may hold the state dict itself or a dict with it under ``"state_dict"`` or ``"model"``; a common
    key prefix such as ``module.`` (DataParallel) or ``backbone.model.`` is detected and removed.

    Raises:
        ValueError: unreadable file, no key in common, or tensors whose shapes do not fit.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: cannot read a PyTorch state dict ({err})") from err
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{path}: expected a state dict of tensors (optionally under 'state_dict' or 'model')"
        )
    own = set(module.state_dict())
    prefix, state = _strip_prefix(dict(state), own)
    if not own & set(state):
        raise ValueError(
            f"{path}: none of its {len(state)} keys match the {what} (file: {sorted(state)[:3]}, "
            f"{what}: {sorted(own)[:3]})"
        )
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ValueError(f"{path}: tensor shapes do not fit the {what}: {err}") from err
    if result.missing_keys or result.unexpected_keys:
        warnings.warn(
            f"{path} → {what} (prefix {prefix!r} removed): {len(own & set(state))} tensors loaded; "
            f"{len(result.missing_keys)} missing {result.missing_keys[:10]}, "
            f"{len(result.unexpected_keys)} unexpected {result.unexpected_keys[:10]}",
            stacklevel=2,
        )


def create_backbone(
    name: str,
    output_stride: int = 8,
    pretrained: str | Path | bool | None = None,
    freeze_official: bool = False,
    feature_level: int = -1,
) -> nn.Module:
    """Build a feature extractor ``B×3×H×W → B×C×H/s×W/s`` with attributes ``out_channels`` and ``stride``.

    Args:
        name: a name in :data:`BACKBONES` (``"resnet38d"``) or any timm model name (``"resnet18"``, …).
        output_stride: 8, 16 or 32 (dilated convolutions keep the resolution; ResNet-38d is fixed at 8).
        pretrained: ``None`` (random init), ``"timm"``/``"imagenet"`` (timm downloads its weights; timm
            names only) or the path of a local state-dict file (loaded non-strictly, mismatches warned).
        freeze_official: ResNet-38d only, see :class:`ResNet38d`.
        feature_level: timm backbones only: which feature level to use (timm ``out_indices``; ``-1`` the
            deepest, ``3`` = ``layer3`` of a ResNet). The CPU profiles stop a ResNet-10t at ``layer3``: at
            output stride 8 its dilated ``layer4`` costs more than the rest of the network together.
    """
    check_choice("output_stride", output_stride, OUTPUT_STRIDES)
    download, path = _resolve_pretrained(pretrained)
    if name in BACKBONES and feature_level != -1:
        raise ValueError(f"feature_level applies only to timm backbones, got backbone {name!r}")
    if name in BACKBONES:
        if download:
            raise ValueError(
                f"backbone {name!r} has no downloadable weights: convert them to a state dict "
                "(docs/paper_vs_code.md §2.1) and pass the file path as pretrained"
            )
        backbone = BACKBONES[name](output_stride=output_stride, freeze_official=freeze_official)
    else:
        _check_timm_name(name)
        if freeze_official:
            raise ValueError(f"freeze_official applies only to {sorted(BACKBONES)}, got backbone {name!r}")
        backbone = TimmBackbone(name, output_stride, pretrained=download, feature_level=feature_level)
    if path is not None:
        load_weights(
            backbone.model if isinstance(backbone, TimmBackbone) else backbone, path, f"backbone {name}"
        )
    return backbone


# ---------------------------------------------------------------------------------------------- classifier
class InputNorm(nn.Module):
    """Input normalisation: ``"none"`` passes [0, 1] images; ``"imagenet"`` gives ``(x − mean) / std``."""

    def __init__(self, mode: str = "none") -> None:
        super().__init__()
        check_choice("input_norm", mode, INPUT_NORMS)
        self.mode = mode
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images B×3×H×W, got shape {tuple(x.shape)}")
        return x if self.mode == "none" else (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return repr(self.mode)


def _check_head_args(num_classes: int, dropout: float, input_norm: str) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    check_choice("input_norm", input_norm, INPUT_NORMS)


class Classifier(nn.Module):
    """Stage-1 classification network (§2.1–2.2): backbone → ARS → Dropout2d → GAP → ``fc8`` (1×1, no bias).

    Logits feed the multi-label soft-margin loss; ``cam`` gives the class activation maps of the same
    features. ``ars_enabled`` switches ARS for ``forward``/``features``/``cam`` calls without ``use_ars``
    (the released code runs ARS from epoch 2 only, and its pseudo masks come from the ARS-free network).

    Args:
        backbone: a module from :func:`create_backbone` (needs ``out_channels`` and ``stride``).
        num_classes: ``K``.
        ars: ARS parts, ``"both"``, ``"cca"``, ``"reactivation"`` or ``None``/``False`` (``True`` = both).
        recipe: ``"paper"`` or ``"official"``, see :mod:`arml.ars`.
        reactivation_variant: ``"code"`` or ``"eq3"``.
        input_norm: ``"none"`` or ``"imagenet"``.
        dropout: Dropout2d probability before GAP (0.5 in the released code).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int = 4,
        ars: str | bool | None = "both",
        recipe: str = "paper",
        reactivation_variant: str = "code",
        input_norm: str = "none",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        parts = resolve_ars_args(ars, recipe, reactivation_variant)
        _check_head_args(num_classes, dropout, input_norm)
        self.num_classes, self.recipe = num_classes, recipe
        self.out_channels, self.stride = backbone.out_channels, backbone.stride
        self.input_norm = InputNorm(input_norm)
        self.backbone = backbone
        self.ars = ARS(self.out_channels, parts, recipe, reactivation_variant)
        self.dropout = nn.Dropout2d(dropout)
        self.fc8 = nn.Conv2d(self.out_channels, num_classes, 1, bias=False)
        nn.init.xavier_uniform_(self.fc8.weight)
        self.ars_enabled = True

    def features(self, x: torch.Tensor, use_ars: bool | None = None) -> torch.Tensor:
        """Backbone features, then ARS if ``use_ars`` (default ``ars_enabled``): ``B×C×H/stride×W/stride``."""
        f = self.backbone(self.input_norm(x))
        if self.ars_enabled if use_ars is None else use_ars:
            f = self.ars(f)
        return f

    def forward(self, x: torch.Tensor, use_ars: bool | None = None) -> torch.Tensor:
        """Class logits ``B×K`` for images ``B×3×H×W`` in [0, 1]."""
        pooled = self.dropout(self.features(x, use_ars)).mean(dim=(2, 3), keepdim=True)
        return self.fc8(pooled).flatten(1)

    def cam(self, x: torch.Tensor, use_ars: bool | None = None) -> torch.Tensor:
        """Raw CAMs ``B×K×h×w`` = ``fc8`` applied at every position (no ReLU, no normalisation, no dropout).

        Their spatial mean equals the logits in eval mode (GAP and the 1×1 conv commute).
        """
        return F.conv2d(self.features(x, use_ars), self.fc8.weight)

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """SGD parameter groups: backbone and ARS at ``lr``, the classifier ``fc8`` at ``10·lr``.

        As in the released code (docs/paper_vs_code.md §2.2: ARS convs sit in the 1× group, fc8 in the 10× one).
        Putting ARS at 10× as well was tried first: the reactivation gates λe^{−λx} then saturate within the
        first epoch, the features collapse to ~0 and the loss stays at ln 2 (measured on the cpu profile).

        Parameters with ``ndim ≤ 1`` (biases, norm affine, ``γ``) get no weight decay. Only parameters with
        ``requires_grad`` are included, each once; empty groups are left out. Each group has a ``"name"``.
        """
        if not lr > 0 or weight_decay < 0:
            raise ValueError(
                f"need lr > 0 and weight_decay >= 0, got lr={lr!r}, weight_decay={weight_decay!r}"
            )
        new = {id(p) for p in self.fc8.parameters()}
        groups = {
            (part, decay): {"params": [], "lr": lr * mult, "weight_decay": weight_decay if decay else 0.0}
            for part, mult in (("backbone", 1.0), ("new", 10.0))
            for decay in (True, False)
        }
        for p in self.parameters():
            if p.requires_grad:
                groups["new" if id(p) in new else "backbone", p.ndim > 1]["params"].append(p)
        return [
            {"name": part if decay else f"{part}_no_decay", **group}
            for (part, decay), group in groups.items()
            if group["params"]
        ]


def create_classifier(
    backbone: str = "resnet18",
    num_classes: int = 4,
    ars: str | bool | None = "both",
    recipe: str = "paper",
    reactivation_variant: str = "code",
    output_stride: int = 8,
    pretrained: str | Path | bool | None = None,
    input_norm: str = "none",
    dropout: float = 0.0,
    freeze_official: bool = False,
    feature_level: int = -1,
) -> Classifier:
    """Build a :class:`Classifier` on :func:`create_backbone` ``(backbone, output_stride, pretrained,
    freeze_official)``; the remaining arguments are the :class:`Classifier`'s. Arguments are checked before
    the backbone is built. The paper profile: ``create_classifier("resnet38d", dropout=0.5, ...)``.
    """
    resolve_ars_args(ars, recipe, reactivation_variant)
    _check_head_args(num_classes, dropout, input_norm)
    net = create_backbone(backbone, output_stride, pretrained, freeze_official, feature_level)
    return Classifier(net, num_classes, ars, recipe, reactivation_variant, input_norm, dropout)


# ---------------------------------------------------------------------------------------------- segmenters
SEGMENTERS: dict[str, Callable[..., nn.Module]] = {"pspnet": smp.PSPNet, "deeplabv3plus": smp.DeepLabV3Plus}


class Segmenter(nn.Module):
    """An smp network behind :class:`InputNorm`: images ``B×3×H×W`` in [0, 1] → logits ``B×K×H×W``.

    ``H`` and ``W`` must be multiples of ``stride`` (8 for PSPNet at depth 3, 16 for DeepLabV3+).
    The smp model is ``.net`` (``.net.encoder``, ``.net.decoder``, ``.net.segmentation_head``).
    """

    def __init__(self, net: nn.Module, arch: str, encoder: str, num_classes: int, input_norm: str = "none"):
        super().__init__()
        self.arch, self.encoder_name, self.num_classes = arch, encoder, num_classes
        self.input_norm = InputNorm(input_norm)
        self.net = net
        self.stride = net.encoder.output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.input_norm(x))


def create_segmenter(
    arch: str = "pspnet",
    encoder: str = "resnet18",
    num_classes: int = 4,
    encoder_depth: int | None = None,
    pretrained: str | Path | bool | None = None,
    input_norm: str = "none",
) -> Segmenter:
    """Build a stage-2 segmentation network with segmentation-models-pytorch (docs/paper_vs_code.md §4.1).

    Args:
        arch: ``"pspnet"`` (the released code) or ``"deeplabv3plus"``.
        encoder: a timm model name, with or without smp's ``"tu-"`` prefix; the paper profile uses
            ``"resnest101e"``.
        num_classes: ``K``.
        encoder_depth: encoder stages used (1–5); ``None`` takes smp's default for ``arch`` (PSPNet 3: stem,
            layer1, layer2 at stride 8, as in the released code; DeepLabV3+ 5 at output stride 16).
        pretrained: ``None``, ``"imagenet"``/``"timm"`` (smp/timm download encoder weights) or a local
            state-dict file of the timm encoder (loaded non-strictly, mismatches warned).
        input_norm: ``"none"`` (the released code) or ``"imagenet"``.
    """
    check_choice("arch", arch, sorted(SEGMENTERS))
    name = encoder.removeprefix("tu-")
    _check_timm_name(name, what="encoder")
    _check_head_args(num_classes, 0.0, input_norm)
    download, path = _resolve_pretrained(pretrained)
    kwargs = {"encoder_weights": "imagenet" if download else None, "in_channels": 3, "classes": num_classes}
    if encoder_depth is not None:
        check_choice(
            "encoder_depth", encoder_depth, (3, 4, 5) if arch == "deeplabv3plus" else (1, 2, 3, 4, 5)
        )
        kwargs["encoder_depth"] = encoder_depth
        if arch == "pspnet":
            kwargs["upsampling"] = 2**encoder_depth  # smp's fixed default of 8 only fits depth 3
    net = SEGMENTERS[arch](encoder_name=f"tu-{name}", **kwargs)
    if path is not None:
        load_weights(net.encoder.model, path, f"{arch} encoder {name}")
    return Segmenter(net, arch, name, num_classes, input_norm)
