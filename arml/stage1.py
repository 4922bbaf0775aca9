"""Stage 1: the classification network with ARS, trained on image-level labels (paper §2.1–2.2).

The loop follows the released code (REFERENCE_NOTES §2.2): multi-label soft-margin loss, SGD with poly
decay per step, backbone at ``lr`` and the new layers (ARS, fc8) at ``10·lr``, flips + Gaussian blur +
colour jitter, inputs in [0, 1]. Differences that the released code has and the paper does not are
switched by ``recipe="official"`` (ARS from epoch index 2, CCA frozen at identity, untrained channel gate,
pseudo masks from the ARS-free forward, the momentum bug that makes SGD momentum 5e-4).

Each epoch ends with a checkpoint (``last.pt``) that also holds every random-number state, so a run
killed mid-epoch resumes from the start of that epoch and finishes with the same weights.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision.transforms import v2
from tqdm.auto import tqdm

from arml.datasets import DATASETS, TrainDataset
from arml.models import Classifier, create_classifier
from arml.runtime import (
    config_changes,
    load_checkpoint,
    resolve_device,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_poly_lr,
    set_rng_state,
    weights_digest,
    write_json,
)

RECIPES = ("paper", "official")
ARS_CHOICES = (None, "cca", "reactivation", "both")


@dataclass
class ClsConfig:
    """Everything that defines a stage-1 run. Defaults are the paper profile's values except the backbone.

    Attributes:
        data_root: dataset root in the published layout.
        dataset: ``"luad"`` or ``"bcss"`` (name grammar, classes, background rule).
        backbone: a timm name (``"resnet18"``, ``"resnet10t"``) or ``"resnet38d"`` (the paper's).
        feature_level: timm feature level of the CAM features (-1 = deepest; 3 = a ResNet's layer3).
        ars: ARS parts: ``"both"`` (paper), ``"cca"``, ``"reactivation"`` or ``None`` (plain CAM baseline).
        recipe: ``"paper"`` (default, evident bugs fixed) or ``"official"`` (the released code).
        reactivation_variant: ``"code"`` (the released AMM) or ``"eq3"`` (Eq. (3) as printed).
        ars_start_epoch: first epoch with ARS on; ``None`` = 0 for the paper recipe, 2 for the official one.
        momentum: SGD momentum; ``None`` = 0.9 (paper) or 5e-4 (official: the momentum bug).
        dropout: Dropout2d before GAP (0.5 in the released ResNet-38 head).
    """

    data_root: str
    dataset: str = "luad"
    backbone: str = "resnet18"
    feature_level: int = -1
    output_stride: int = 8
    pretrained: str | None = None
    ars: str | None = "both"
    recipe: str = "paper"
    reactivation_variant: str = "code"
    ars_start_epoch: int | None = None
    input_norm: str = "none"
    dropout: float = 0.0
    epochs: int = 20
    batch_size: int = 20
    lr: float = 0.01
    momentum: float | None = None
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    hflip: bool = True
    vflip: bool = True
    blur: bool = True
    color_jitter: float = 0.5
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_root = str(self.data_root)
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        if self.ars not in ARS_CHOICES:
            raise ValueError(f"ars must be one of {ARS_CHOICES}, got {self.ars!r}")
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if not 0 <= self.color_jitter <= 1:
            raise ValueError(f"color_jitter must be in [0, 1], got {self.color_jitter!r}")

    @property
    def first_ars_epoch(self) -> int:
        if self.ars_start_epoch is not None:
            return self.ars_start_epoch
        return 2 if self.recipe == "official" else 0

    @property
    def sgd_momentum(self) -> float:
        if self.momentum is not None:
            return self.momentum
        return 5e-4 if self.recipe == "official" else 0.9

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ClsConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def build_model(self) -> Classifier:
        return create_classifier(
            self.backbone,
            ars=self.ars,
            recipe=self.recipe,
            reactivation_variant=self.reactivation_variant,
            output_stride=self.output_stride,
            pretrained=self.pretrained,
            input_norm=self.input_norm,
            dropout=self.dropout,
            freeze_official=self.backbone == "resnet38d",
            feature_level=self.feature_level,
        )


def train_transform(config: ClsConfig) -> v2.Compose:
    """The released code's stage-1 augmentation: h-flip, blur (σ ~ U(0.1, 2)), v-flip, colour jitter."""
    steps: list = []
    if config.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if config.blur:
        steps.append(v2.GaussianBlur(kernel_size=3, sigma=(0.1, 2.0)))
    if config.vflip:
        steps.append(v2.RandomVerticalFlip())
    if config.color_jitter:
        steps.append(v2.ColorJitter(brightness=config.color_jitter, contrast=config.color_jitter))
    compose = v2.Compose(steps)
    return lambda image: (compose(image),)


def train_classifier(config: ClsConfig, out: str | Path, resume: bool = True) -> Classifier:
    """Train the stage-1 classifier; write ``config.json``, ``last.pt``, ``history.json``, ``classifier.pt``.

    With ``resume`` an interrupted run in ``out`` continues from its last finished epoch (the config must
    match), and a finished run is loaded instead of retrained.

    Returns:
        The trained :class:`Classifier` in eval mode (on the CPU).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "config.json"
    if saved.exists() and resume:
        previous = json.loads(saved.read_text())
        changes = config_changes(previous, config.to_dict())
        if changes:
            raise ValueError(
                f"{out} holds a stage-1 run with a different config ({'; '.join(changes)}); pick another "
                "folder or pass resume=False"
            )
        if (out / "classifier.pt").exists():
            return load_classifier(out)
    write_json(saved, config.to_dict())

    seed_everything(config.seed)
    device = resolve_device(config.device)
    model = config.build_model().to(device)
    dataset = TrainDataset(config.data_root, config.dataset, transform=train_transform(config))
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=len(dataset) > config.batch_size,
        num_workers=config.num_workers,
        generator=generator,
    )
    optimizer = torch.optim.SGD(
        model.param_groups(config.lr, config.weight_decay), lr=config.lr, momentum=config.sgd_momentum
    )
    max_steps = config.epochs * len(loader)
    start_epoch, step, history = 0, 0, []
    last = out / "last.pt"
    if resume and last.exists():
        state = load_checkpoint(last)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step, history = state["epoch"] + 1, state["step"], state["history"]
        set_rng_state(state["rng"], generator)

    for epoch in range(start_epoch, config.epochs):
        model.train()
        model.ars_enabled = model.ars.parts is not None and epoch >= config.first_ars_epoch
        started, total, seen = time.perf_counter(), 0.0, 0
        bar = tqdm(loader, desc=f"stage 1 epoch {epoch + 1}/{config.epochs}", disable=not config.progress)
        for images, labels, _ in bar:
            images, labels = images.to(device), labels.to(device)
            lr = set_poly_lr(optimizer, step, max_steps, config.poly_power)
            loss = F.multilabel_soft_margin_loss(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            total += loss.item() * images.shape[0]
            seen += images.shape[0]
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
        history.append(
            {
                "epoch": epoch,
                "loss": total / max(seen, 1),
                "seconds": time.perf_counter() - started,
                "ars": model.ars_enabled,
            }
        )
        save_checkpoint(
            last,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
                "step": step,
                "history": history,
                "rng": rng_state(generator),
            },
        )
        write_json(out / "history.json", {"history": history})

    model.ars_enabled = model.ars.parts is not None
    save_checkpoint(out / "classifier.pt", {"model": model.state_dict(), "config": config.to_dict()})
    # The weights' digest, computed while they are in memory: pseudo-mask caches are keyed by it
    write_json(out / "weights.json", {"digest": weights_digest(model.state_dict())})
    return model.cpu().eval()


def load_classifier(run_dir: str | Path, device: str = "cpu") -> Classifier:
    """Rebuild a finished stage-1 classifier from ``run_dir`` (``config.json`` + ``classifier.pt``)."""
    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir / "classifier.pt")
    model = ClsConfig.from_dict(state["config"]).build_model()
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval()


def load_config(run_dir: str | Path) -> ClsConfig:
    """The :class:`ClsConfig` a stage-1 run was trained with."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no stage-1 run in {run_dir} (missing config.json)")
    return ClsConfig.from_dict(json.loads(path.read_text()))


@dataclass
class PseudoMaskConfig:
    """How CAMs become pseudo masks (REFERENCE_NOTES §3).

    Defaults follow the released code: Grad-CAM, single scale, no flip, global min-max, label gating, the
    LUAD background rule (grey > 200, white blobs under 50 px dropped). ``use_ars=None`` applies ARS
    when the classifier has it, except under the official recipe, whose pseudo masks come from the
    ARS-free network (REFERENCE_NOTES §6 row 9).
    """

    method: str = "gradcam"
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    normalization: str = "global"
    background: str | None = None
    bg_threshold: float = 200.0
    bg_min_size: int = 50
    use_ars: bool | None = None
    batch_size: int = 32

    def resolve_use_ars(self, model: Classifier) -> bool:
        if self.use_ars is not None:
            return self.use_ars
        return model.ars.parts is not None and model.recipe != "official"


def generate_pseudo_masks(
    run_dir: str | Path,
    name: str,
    data_root: str | Path | None = None,
    config: PseudoMaskConfig | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, object]:
    """Write one palette PNG pseudo mask per training image to ``<data_root>/train_PM/<name>/``.

    Files keep the training image's name and hold indices 0..4. Each is written atomically; files that
    already exist are skipped (re-running finishes an interrupted job). CAMs run batched. When the
    dataset has ``train_gt/`` (the synthetic data), the masks are scored against it.

    Returns:
        ``{"folder", "written", "skipped", "seconds", "images_per_s", "metrics"}``; ``metrics`` is the
        :class:`~arml.metrics.SegmentationMetrics` result dict, or ``None`` without ``train_gt/``.
    """
    from arml.cams import cams_to_masks, compute_cams, default_background
    from arml.datasets import read_mask, write_mask
    from arml.metrics import SegmentationMetrics

    config = config or PseudoMaskConfig()
    stage1 = load_config(run_dir)
    root = Path(data_root or stage1.data_root)
    dev = resolve_device(device)
    model = load_classifier(run_dir, device=str(dev))
    use_ars = config.resolve_use_ars(model)
    background = config.background or default_background(stage1.dataset)
    folder = root / "train_PM" / name
    folder.mkdir(parents=True, exist_ok=True)
    dataset = TrainDataset(root, stage1.dataset)
    todo = [i for i, p in enumerate(dataset.files) if not (folder / p.name).exists()]
    started = time.perf_counter()
    loader = DataLoader(torch.utils.data.Subset(dataset, todo), batch_size=config.batch_size, shuffle=False)
    for images, labels, names in tqdm(loader, desc=f"pseudo masks {name}", disable=not progress):
        images = images.to(dev)
        cams = compute_cams(
            model, images, config.method, scales=config.scales, flip=config.flip, use_ars=use_ars
        )
        masks = cams_to_masks(
            cams,
            labels.to(dev),
            images,
            config.normalization,
            background,
            config.bg_threshold,
            config.bg_min_size,
        )
        for mask, file_name in zip(masks.cpu().numpy(), names, strict=True):
            write_mask(folder / file_name, mask, stage1.dataset)
    seconds = time.perf_counter() - started
    metrics = None
    if (root / "train_gt").is_dir():
        scorer = SegmentationMetrics(4)
        for path in dataset.files:
            scorer.update(read_mask(folder / path.name), read_mask(root / "train_gt" / path.name))
        metrics = scorer.compute()
    return {
        "folder": str(folder),
        "written": len(todo),
        "skipped": len(dataset) - len(todo),
        "seconds": seconds,
        "images_per_s": len(todo) / seconds if todo and seconds > 0 else float("nan"),
        "metrics": metrics,
    }
