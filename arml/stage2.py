"""Stage 2: segmentation networks trained on pseudo masks by mutual learning (paper §2.1, §2.3–2.4, §3.2).

Three peers F_a, F_b, F_c of the same architecture but different initialisations see the same augmented
batch. Each is trained with Eq. (9), ``(1 − λ)·L_swv + λ·L_st``, where the other two vote in SWV (Eq. 4) and
act as detached teachers in SRM (Eq. 5–8); every peer has its own SGD optimiser (lr 5e-3, momentum 0.9,
weight decay 5e-4, poly decay 0.9 per iteration). The pseudo-mask value 4 (background / excluded) is mapped
to the ignore label 255 for the losses. F_a's validation mIoU picks the best epoch (strictly better wins, as
in the released code) and the test split is scored with that checkpoint for F_a (the paper's model), each
peer, and the ensemble (mean of the peers' softmax probabilities).

``recipe="official"`` reproduces the released code instead (REFERENCE_NOTES §4.2): one network runs three
times per batch in train mode; only the first pass is trained, the two extra passes (under ``no_grad``,
differing only by dropout) are the voters and teachers.

Cost: L_st reads every distance and angle off the B×B Gram matrix of the batch (:func:`arml.losses.structure_loss`),
so it costs one B×D matmul per network rather than the B×B×D tensor of difference vectors of the released
code (321 MB per copy at the paper's B = 20, D = 4·224·224). Measured with ``benchmarks/stage2_speed.py``
on 2 CPU cores: one forward + backward at that size takes 0.26 s and peaks at 262 MiB, inputs included
(the difference-vector version: 6–12 s and 2.0 GiB). The trainer backpropagates the peers' losses one
after the other; the three networks' activations are all held until the last peer's backward (3× one
network's, where the official recipe holds one network's plus two inference passes).

Outputs in ``out``: ``config.json``, ``last.pt`` (every epoch: weights, optimisers, step, history, best score,
RNG states), ``best.pt`` (all peers' weights at the best F_a validation mIoU), ``history.json`` and
``metrics.json`` (test metrics per model, ``best_epoch``, ``val_miou``, ``seconds_per_epoch``).

>>> config = SegConfig("data/synthetic/quick", masks="train_gt", encoder="resnet10t", epochs=2)  # doctest: +SKIP
>>> metrics = train_segmenter(config, "runs/stage2-demo")  # doctest: +SKIP
>>> print(format_metrics(metrics, "luad"))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from arml.datasets import (
    BACKGROUND,
    CLASS_NAMES,
    DATASETS,
    IGNORE_INDEX,
    NUM_CLASSES,
    MaskedDataset,
    TrainDataset,
)
from arml.losses import NORMALIZATIONS, RELATION_LOSSES, mutual_loss
from arml.metrics import SegmentationMetrics
from arml.models import SEGMENTERS, create_segmenter
from arml.runtime import (
    config_changes,
    load_checkpoint,
    resolve_device,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_poly_lr,
    set_rng_state,
    to_jsonable,
    write_json,
)

RECIPES = ("paper", "official")
RELATIONS = (*sorted(RELATION_LOSSES), None)
PEER_NAMES = ("F_a", "F_b", "F_c")
ENSEMBLE = "ensemble"
INPUT_NORMS = ("none", "imagenet")
_RUN_FILES = ("last.pt", "best.pt", "history.json", "metrics.json")
_CHOICES = {
    "dataset": DATASETS,
    "arch": tuple(sorted(SEGMENTERS)),
    "input_norm": INPUT_NORMS,
    "peers": (1, 3),
    "recipe": RECIPES,
    "relation": RELATIONS,
    "normalize": NORMALIZATIONS,
}
_RANGES = {  # name: (low, high, low end open)
    "lam": (0.0, 1.0, False),
    "alpha": (0.0, math.inf, False),
    "beta": (0.0, math.inf, False),
    "temperature": (0.0, math.inf, True),
    "lr": (0.0, math.inf, True),
    "momentum": (0.0, 1.0, False),
    "weight_decay": (0.0, math.inf, False),
    "poly_power": (0.0, math.inf, False),
}
_INTS = {"epochs": 1, "batch_size": 1, "seed": 0, "num_workers": 0, "eval_batch_size": 1}


@dataclass
class SegConfig:
    """Everything that defines a stage-2 run. Defaults are the paper's (§3.2) and the released code's.

    Attributes:
        data_root: dataset root in the published layout (``train/``, ``train_PM/``, ``val/``, ``test/``).
        masks: training masks: a folder name under ``<data_root>/train_PM/``, ``"train_gt"`` (the synthetic
            data's pixel truth) or an absolute path to a folder of palette PNGs named like ``train/``.
        dataset: ``"luad"`` or ``"bcss"``.
        arch, encoder, encoder_depth, pretrained, input_norm: passed to
            :func:`arml.models.create_segmenter` (paper: PSPNet, ``resnest101e``, depth 3).
        peers: 3 (mutual learning) or 1 (a single network trained with plain CE; needs ``omega=None`` and
            ``relation=None``).
        recipe: ``"paper"`` (three independent peers) or ``"official"`` (one network run three times).
        omega: SWV weight ω ≥ 1 (paper: 2; ``math.inf`` drops disagreeing pixels), or None for plain CE.
        relation: ``"st"`` (paper, Eq. 8), ``"pt"`` (Eq. 5), ``"kl"``, ``"crl"`` or None.
        lam: λ of Eq. (9). alpha, beta: α, β of Eq. (8). normalize: SWV normalisation (``"weights"`` or
            ``"pixels"``). temperature: temperature of ``"kl"``.
        epochs, batch_size, lr, momentum, weight_decay, poly_power: optimisation (paper: 10, 20, 5e-3, 0.9,
            5e-4; poly 0.9 per iteration as in the released code).
        hflip: random horizontal flip (p = 0.5) of image and mask.
        blur: Gaussian blur of the image only, p = 0.5, σ ~ U(0, 1) (PIL ``GaussianBlur(radius)``).
        seed: seeds everything; peer k is initialised under ``seed + k``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        amp: mixed precision (autocast float16 + GradScaler); only takes effect on CUDA.
        num_workers: DataLoader worker processes.
        progress: tqdm progress bars.
        eval_batch_size: batch size for validation and test.
    """

    data_root: str
    masks: str
    dataset: str = "luad"
    arch: str = "pspnet"
    encoder: str = "resnet18"
    encoder_depth: int | None = None
    pretrained: str | None = None
    input_norm: str = "none"
    peers: int = 3
    recipe: str = "paper"
    omega: float | None = 2.0
    relation: str | None = "st"
    lam: float = 0.2
    alpha: float = 30.0
    beta: float = 60.0
    normalize: str = "weights"
    temperature: float = 1.0
    epochs: int = 10
    batch_size: int = 20
    lr: float = 5e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    hflip: bool = True
    blur: bool = True
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_workers: int = 0
    progress: bool = True
    eval_batch_size: int = 32

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ValueError(f"SegConfig.{name} must be {allowed}, got {getattr(self, name)!r}")

        def is_number(value) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool)

        for name in ("data_root", "masks"):
            need(isinstance(getattr(self, name), str | Path) and str(getattr(self, name)), name, "a path")
            setattr(self, name, str(getattr(self, name)))
        if isinstance(self.omega, str) and self.omega.lower() in ("inf", "+inf", "infinity"):
            self.omega = math.inf  # the JSON spelling written by to_dict
        for name, choices in _CHOICES.items():
            need(getattr(self, name) in choices, name, f"one of {list(choices)}")
        need(isinstance(self.encoder, str) and self.encoder != "", "encoder", "a timm model name")
        need(self.encoder_depth in (None, 1, 2, 3, 4, 5), "encoder_depth", "None or 1..5")
        need(
            self.pretrained is None or isinstance(self.pretrained, str | Path), "pretrained", "None or a str"
        )
        self.pretrained = None if self.pretrained is None else str(self.pretrained)
        need(self.omega is None or (is_number(self.omega) and self.omega >= 1), "omega", "None or >= 1")
        self.omega = None if self.omega is None else float(self.omega)
        for name, (low, high, low_open) in _RANGES.items():
            value = getattr(self, name)
            ok = is_number(value) and low <= value <= high and not (low_open and value == low)
            need(ok, name, f"a number in {'(' if low_open else '['}{low}, {high}]")
        for name, low in _INTS.items():
            value = getattr(self, name)
            need(
                isinstance(value, int) and not isinstance(value, bool) and value >= low,
                name,
                f"an int >= {low}",
            )
        for name in ("hflip", "blur", "amp", "progress"):
            need(isinstance(getattr(self, name), bool), name, "True or False")
        need(
            isinstance(self.device, str) and _valid_device(self.device), "device", "'auto', 'cpu', 'cuda[:N]'"
        )
        if self.peers == 1 and (self.omega is not None or self.relation is not None):
            raise ValueError(
                "SegConfig.peers=1 trains a single network with plain cross-entropy: SWV needs two voting peers "
                "and relation losses need two teachers, so set omega=None and relation=None "
                f"(got omega={self.omega!r}, relation={self.relation!r}), or use peers=3"
            )
        if self.recipe == "official" and self.peers != 3:
            raise ValueError(
                "SegConfig.recipe='official' runs one network three times per batch; it needs peers=3"
            )
        if self.relation == "st" and self.batch_size < 2:
            raise ValueError(
                "SegConfig.batch_size must be >= 2 with relation='st' (relations are across images)"
            )

    @property
    def n_models(self) -> int:
        """Networks that are trained and saved: 3 peers, or 1 (``peers=1`` or ``recipe="official"``)."""
        return 1 if self.recipe == "official" else self.peers

    def to_dict(self) -> dict:
        """A JSON-ready dict (``omega=math.inf`` is written as the string ``"inf"``)."""
        data = asdict(self)
        if data["omega"] is not None and math.isinf(data["omega"]):
            data["omega"] = "inf"
        return data

    @classmethod
    def from_dict(cls, data: dict) -> SegConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SegConfig fields {unknown}; valid fields: {sorted(known)}")
        return cls(**data)


def _valid_device(device: str) -> bool:
    if device == "auto":
        return True
    try:
        torch.device(device)
    except RuntimeError:
        return False
    return True


def _check_device(device: str | torch.device) -> torch.device:
    resolved = resolve_device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asks for CUDA, which is not available here; use 'auto' or 'cpu'")
    return resolved


def resolve_mask_dir(config: SegConfig) -> Path:
    """The training-mask folder named by ``config.masks`` (see :class:`SegConfig`)."""
    root = Path(config.data_root)
    if Path(config.masks).is_absolute():
        folder = Path(config.masks)
    elif config.masks == "train_gt":
        folder = root / "train_gt"
    else:
        folder = root / "train_PM" / config.masks
    if not folder.is_dir():
        available = (
            sorted(p.name for p in (root / "train_PM").iterdir()) if (root / "train_PM").is_dir() else []
        )
        raise FileNotFoundError(
            f"training-mask folder {folder} not found (SegConfig.masks={config.masks!r}); masks must be a folder "
            f"name under {root / 'train_PM'} (found: {available or 'none'}), 'train_gt' or an absolute path"
        )
    return folder


def build_models(config: SegConfig) -> list[nn.Module]:
    """The run's networks on the CPU: peer k initialised under ``torch.manual_seed(config.seed + k)``."""
    models = []
    for k in range(config.n_models):
        torch.manual_seed(config.seed + k)
        models.append(
            create_segmenter(
                config.arch,
                config.encoder,
                num_classes=NUM_CLASSES,
                encoder_depth=config.encoder_depth,
                pretrained=config.pretrained,
                input_norm=config.input_norm,
            )
        )
    return models


def augment(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator,
    hflip: bool = True,
    blur: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The released code's stage-2 augmentation, per image (REFERENCE_NOTES §4.5).

    Horizontal flip (p = 0.5) of image and mask, then Gaussian blur of the image only (p = 0.5) with
    σ ~ U(0, 1) (PIL's ``GaussianBlur(radius)`` uses the radius as σ) and a kernel of ``2·⌈3σ⌉ + 1`` taps.
    Three numbers per image are always drawn from ``generator`` (a CPU generator), whatever the flags.

    Args:
        images: ``B×3×H×W`` float in [0, 1] (any device).
        masks: ``B×H×W`` int64.
        generator: source of the random draws; its state is part of the checkpoint.
        hflip, blur: switch each transform.

    Returns:
        New ``(images, masks)``; the inputs are not modified.
    """
    b = images.shape[0]
    flip = torch.rand(b, generator=generator) < 0.5
    blurred = torch.rand(b, generator=generator) < 0.5
    sigma = torch.rand(b, generator=generator)
    images, masks = images.clone(), masks.clone()
    for i in range(b):
        if hflip and flip[i]:
            images[i], masks[i] = images[i].flip(-1), masks[i].flip(-1)
        if blur and blurred[i] and sigma[i] > 1e-3:
            s = float(sigma[i])
            k = 2 * math.ceil(3 * s) + 1
            images[i] = TF.gaussian_blur(images[i], kernel_size=[k, k], sigma=[s, s])
    return images, masks


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=enabled)


@contextlib.contextmanager
def _eval_mode(models: Sequence[nn.Module]) -> Iterator[None]:
    """Put ``models`` in eval mode and restore each one's previous mode afterwards."""
    modes = [m.training for m in models]
    try:
        for m in models:
            m.eval()
        yield
    finally:
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)


@torch.no_grad()
def predict(models: nn.Module | Sequence[nn.Module], images: torch.Tensor, amp: bool = False) -> torch.Tensor:
    """Label maps ``B×H×W`` (int64, 0..3) from one network or the ensemble of several.

    One network: argmax of its logits. Several: argmax of the mean of their softmax probabilities. The
    networks run in eval mode (their previous mode is restored) on ``images``' device.
    """
    models = [models] if isinstance(models, nn.Module) else list(models)
    with _eval_mode(models), _autocast(images.device, amp and images.device.type == "cuda"):
        if len(models) == 1:
            return models[0](images).float().argmax(1)
        probs = torch.stack([m(images).float().softmax(1) for m in models]).mean(0)
        return probs.argmax(1)


def _model_names(n_models: int) -> list[str]:
    return list(PEER_NAMES[:n_models]) + ([ENSEMBLE] if n_models > 1 else [])


@torch.no_grad()
def evaluate_models(
    models: Sequence[nn.Module],
    loader: DataLoader,
    device: torch.device,
    amp: bool = False,
    progress: bool = False,
    desc: str = "evaluate",
    ensemble: bool = True,
) -> dict[str, dict]:
    """Score each network (``F_a``, ``F_b``, …) and, with ``ensemble``, their mean-softmax ensemble.

    Returns:
        Model name → JSON-ready metrics (:func:`arml.runtime.to_jsonable`) over the whole loader.
    """
    names = _model_names(len(models)) if ensemble else list(PEER_NAMES[: len(models)])
    scores = {name: SegmentationMetrics(NUM_CLASSES) for name in names}
    use_amp = amp and device.type == "cuda"
    with _eval_mode(models):
        for images, masks, _ in tqdm(loader, desc=desc, disable=not progress, leave=False):
            images = images.to(device, non_blocking=True)
            with _autocast(device, use_amp):
                logits = [m(images).float() for m in models]
            for name, out in zip(names, logits, strict=False):
                scores[name].update(out.argmax(1).cpu(), masks)
            if ENSEMBLE in scores:
                probs = torch.stack([out.softmax(1) for out in logits]).mean(0)
                scores[ENSEMBLE].update(probs.argmax(1).cpu(), masks)
    return {name: to_jsonable(s.compute()) for name, s in scores.items()}


def _check_same_config(saved: dict, config: SegConfig, source: Path) -> None:
    diff = config_changes(saved, config.to_dict())
    if diff:
        raise ValueError(
            f"{source} belongs to a run with a different configuration ({'; '.join(diff)}); use another output "
            "folder, or resume=False to start this one over"
        )


def _make_loaders(config: SegConfig, device: torch.device, generator: torch.Generator):
    root = Path(config.data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"SegConfig.data_root {root} is not a folder")
    train_set = TrainDataset(root, config.dataset, mask_dir=resolve_mask_dir(config))
    # L_st needs at least two images per batch: drop a final batch of one (the released code would NaN).
    drop_last = config.relation == "st" and len(train_set) % config.batch_size == 1
    pin = device.type == "cuda"
    train = DataLoader(
        train_set,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=drop_last,
        generator=generator,
        num_workers=config.num_workers,
        pin_memory=pin,
    )
    if len(train) == 0:
        raise ValueError(
            f"{len(train_set)} training image(s) do not make one batch of at least 2 for relation='st'"
        )
    val = DataLoader(
        MaskedDataset(root, "val"),
        batch_size=config.eval_batch_size,
        num_workers=config.num_workers,
        pin_memory=pin,
    )
    return train, val


def _train_step(
    models, optimizers, scaler, images, target, config, device, use_amp
) -> list[tuple[float, float]]:
    """One iteration: forward every network on the same batch, then each peer's Eq. (9) loss and step.

    Returns:
        Per network, the loss and its supervised term (SWV, or CE with ``omega=None``).
    """
    kwargs = {
        "omega": config.omega,
        "lam": config.lam,
        "relation": config.relation,
        "alpha": config.alpha,
        "beta": config.beta,
        "ignore_index": IGNORE_INDEX,
        "normalize": config.normalize,
        "temperature": config.temperature,
    }
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    if config.recipe == "official":
        with _autocast(device, use_amp):
            logits = [models[0](images)]
            with torch.no_grad():
                logits += [models[0](images), models[0](images)]
        pairs = [(0, 1, 2)]
    elif config.peers == 1:
        with _autocast(device, use_amp):
            logits = [models[0](images)]
        logits += [logits[0].detach(), logits[0].detach()]
        pairs = [(0, 1, 2)]
    else:
        with _autocast(device, use_amp):
            logits = [m(images) for m in models]
        pairs = [(0, 1, 2), (1, 0, 2), (2, 0, 1)]
    logits = [out.float() for out in logits]
    values = []
    for k, (own, p1, p2) in enumerate(pairs):
        # The peers are detached inside mutual_loss: this backward reaches network k only, and peer k's
        # step cannot change the other logits, which were all computed before any step.
        loss = mutual_loss(logits[own], logits[p1], logits[p2], target, **kwargs)
        if not use_amp and not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} for {PEER_NAMES[k]}; lower SegConfig.lr")
        with torch.no_grad():  # the supervised term alone, for the history (cheap: one CE)
            supervised = mutual_loss(
                logits[own], logits[p1], logits[p2], target, **{**kwargs, "relation": None}
            )
        scaler.scale(loss).backward()
        scaler.step(optimizers[k])
        values.append((loss.item(), supervised.item()))
    scaler.update()
    return values


def _loss_summary(names: Sequence[str], means: np.ndarray, config: SegConfig) -> dict[str, dict]:
    """History entries from per-network mean (loss, supervised term): ``loss``, ``supervised``, ``relation``.

    The relation term is recovered from Eq. (9) as ``(loss − (1 − λ)·supervised) / λ`` (None without one).
    """
    relation = [None] * len(names)
    if config.relation is not None and config.lam > 0:
        relation = [(total - (1 - config.lam) * sup) / config.lam for total, sup in means]
    return {
        "loss": dict(zip(names, means[:, 0].tolist(), strict=True)),
        "supervised": dict(zip(names, means[:, 1].tolist(), strict=True)),
        "relation": dict(zip(names, relation, strict=True)),
    }


def _checkpoint_models(models: Sequence[nn.Module]) -> list[dict]:
    return [{k: v.detach().cpu().clone() for k, v in m.state_dict().items()} for m in models]


def train_segmenter(config: SegConfig, out: str | Path, resume: bool = True) -> dict:
    """Train stage 2 as ``config`` says, keep the best F_a checkpoint, score the test split.

    Args:
        config: the run.
        out: run folder (created); see the module docstring for its files.
        resume: continue an interrupted run in ``out`` from the epoch after its last finished one, with the
            same weights, optimiser states, history and random states, so it ends exactly as an uninterrupted
            run would; return a finished run's ``metrics.json`` without training. ``False`` starts over and
            replaces the run files in ``out``.

    Returns:
        The test metrics: model name (``"F_a"``, ``"F_b"``, ``"F_c"``, ``"ensemble"``; only ``"F_a"`` for
        one network) → per-class ``iou``/``dice`` lists, ``miou``, ``mdice``, ``acc``, ``fwiou``, ``pixels``
        (fractions, NaN as None); plus ``best_epoch`` (0-based), ``val_miou``, ``seconds_per_epoch``
        (training time), ``split`` and ``dataset``.

    Raises:
        ValueError: ``out`` holds a run with another configuration (and ``resume`` is True).
        FileNotFoundError: missing data folders or training masks.
    """
    if not isinstance(config, SegConfig):
        raise TypeError(f"config must be a SegConfig, got {type(config).__name__}")
    out = Path(out)
    state = None
    if resume and (out / "config.json").is_file():
        saved = json.loads((out / "config.json").read_text())
        if (out / "metrics.json").is_file():
            _check_same_config(saved, config, out / "config.json")
            return json.loads((out / "metrics.json").read_text())
    if resume and (out / "last.pt").is_file():
        state = load_checkpoint(out / "last.pt")
        _check_same_config(state["config"], config, out / "last.pt")
        if state["best_epoch"] is not None and not (out / "best.pt").is_file():
            raise FileNotFoundError(f"{out / 'last.pt'} refers to {out / 'best.pt'}, which is missing")
    if state is None:
        for name in _RUN_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config.to_dict())

    seed_everything(config.seed)
    device = _check_device(config.device)
    use_amp = config.amp and device.type == "cuda"
    loader_generator = torch.Generator().manual_seed(config.seed)
    aug_generator = torch.Generator().manual_seed(config.seed + 1_000_003)
    train_loader, val_loader = _make_loaders(config, device, loader_generator)
    models = [m.to(device) for m in build_models(config)]
    optimizers = [
        torch.optim.SGD(
            m.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        for m in models
    ]
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    max_steps = config.epochs * len(train_loader)
    start_epoch, step, history, best_score, best_epoch = 0, 0, [], -math.inf, None
    if state is not None:
        for m, weights in zip(models, state["models"], strict=True):
            m.load_state_dict(weights)
        for opt, opt_state in zip(optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        scaler.load_state_dict(state["scaler"])
        start_epoch, step, history = state["epoch"] + 1, state["step"], state["history"]
        best_score, best_epoch = state["best_score"], state["best_epoch"]
        aug_generator.set_state(state["aug_rng"])
        set_rng_state(state["rng"], loader_generator)

    names = PEER_NAMES[: len(models)]
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        for m in models:
            m.train()
        totals, seen = np.zeros((len(models), 2)), 0
        bar = tqdm(
            train_loader, desc=f"stage 2 epoch {epoch + 1}/{config.epochs}", disable=not config.progress
        )
        for images, masks, _ in bar:
            images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
            images, masks = augment(images, masks, aug_generator, config.hflip, config.blur)
            target = masks.masked_fill(masks == BACKGROUND, IGNORE_INDEX)
            lr = 0.0
            for opt in optimizers:
                lr = set_poly_lr(opt, step, max_steps, config.poly_power)
            losses = _train_step(models, optimizers, scaler, images, target, config, device, use_amp)
            step += 1
            totals += np.array(losses) * images.shape[0]
            seen += images.shape[0]
            bar.set_postfix(loss=" ".join(f"{v:.3f}" for v in totals[:, 0] / seen), lr=f"{lr:.1e}")
        train_seconds = time.perf_counter() - started
        val = evaluate_models(
            models[:1], val_loader, device, use_amp, config.progress, f"val {epoch + 1}", ensemble=False
        )["F_a"]
        score = val["miou"] if val["miou"] is not None else -math.inf
        history.append(
            {
                "epoch": epoch,
                **_loss_summary(names, totals / max(seen, 1), config),
                "val_miou": val["miou"],
                "lr": lr,
                "train_seconds": train_seconds,
                "seconds": time.perf_counter() - started,
            }
        )
        if best_epoch is None or score > best_score:  # strictly better, as the released code
            best_score, best_epoch = score, epoch
            save_checkpoint(
                out / "best.pt",
                {
                    "models": _checkpoint_models(models),
                    "epoch": epoch,
                    "val_miou": val["miou"],
                    "config": config.to_dict(),
                },
            )
        save_checkpoint(
            out / "last.pt",
            {
                "config": config.to_dict(),
                "models": _checkpoint_models(models),
                "optimizers": [opt.state_dict() for opt in optimizers],
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "step": step,
                "history": history,
                "best_score": best_score,
                "best_epoch": best_epoch,
                "aug_rng": aug_generator.get_state(),
                "rng": rng_state(loader_generator),
            },
        )
        write_json(out / "history.json", {"history": history})

    best = load_checkpoint(out / "best.pt")
    for m, weights in zip(models, best["models"], strict=True):
        m.load_state_dict(weights)
    test_loader = DataLoader(
        MaskedDataset(config.data_root, "test"),
        batch_size=config.eval_batch_size,
        num_workers=config.num_workers,
    )
    metrics = evaluate_models(models, test_loader, device, use_amp, config.progress, "test")
    metrics.update(
        best_epoch=best["epoch"],
        val_miou=best["val_miou"],
        seconds_per_epoch=float(np.mean([h["train_seconds"] for h in history])),
        split="test",
        dataset=config.dataset,
    )
    write_json(out / "metrics.json", metrics)
    return to_jsonable(metrics)


def load_config(run_dir: str | Path) -> SegConfig:
    """The :class:`SegConfig` a stage-2 run folder was trained with."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no stage-2 run in {run_dir} (missing config.json)")
    return SegConfig.from_dict(json.loads(path.read_text()))


def load_models(run_dir: str | Path, device: str | torch.device = "cpu") -> list[nn.Module]:
    """The networks of a stage-2 run at its best epoch (``best.pt``), in eval mode on ``device``."""
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    state = load_checkpoint(run_dir / "best.pt")
    models = []
    for weights in state["models"]:
        # Weights come from the checkpoint: never fetch or read the initial encoder weights again.
        model = create_segmenter(
            config.arch, config.encoder, NUM_CLASSES, config.encoder_depth, None, config.input_norm
        )
        model.load_state_dict(weights)
        models.append(model.to(resolve_device(device)).eval())
    return models


def evaluate(
    checkpoint_dir: str | Path,
    data_root: str | Path | None = None,
    split: str = "test",
    dataset: str | None = None,
    batch_size: int = 32,
    device: str = "auto",
) -> dict:
    """Score a finished (or interrupted) run's ``best.pt`` networks and their ensemble on a split.

    Args:
        checkpoint_dir: a :func:`train_segmenter` output folder (``config.json`` + ``best.pt``).
        data_root: dataset root; default: the run's ``data_root``.
        split: ``"val"`` or ``"test"``.
        dataset: ``"luad"`` or ``"bcss"``; default: the run's. Only recorded in the result (class names).
        batch_size: evaluation batch size.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ….

    Returns:
        The same structure as ``metrics.json``: model name → metrics, plus ``best_epoch``, ``val_miou``,
        ``split`` and ``dataset``.
    """
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"dataset must be None or one of {DATASETS}, got {dataset!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    config = load_config(checkpoint_dir)
    best = load_checkpoint(Path(checkpoint_dir) / "best.pt")
    torch_device = _check_device(device)
    models = load_models(checkpoint_dir, torch_device)
    loader = DataLoader(MaskedDataset(data_root or config.data_root, split), batch_size=batch_size)
    metrics = evaluate_models(models, loader, torch_device, config.amp, desc=split)
    metrics.update(
        best_epoch=best["epoch"], val_miou=best["val_miou"], split=split, dataset=dataset or config.dataset
    )
    return to_jsonable(metrics)


def format_metrics(metrics: dict, class_names: Sequence[str] | str | None = None) -> str:
    """A table in percent: per-class IoU, mIoU, Dice, ACC and FwIoU for every model in ``metrics``.

    Args:
        metrics: as returned by :func:`train_segmenter` or :func:`evaluate`.
        class_names: names of the four classes, or a dataset name (``"luad"``, ``"bcss"``); default: the
            ``dataset`` recorded in ``metrics``.
    """
    if class_names is None:
        class_names = metrics.get("dataset", "luad")
    if isinstance(class_names, str):
        if class_names not in CLASS_NAMES:
            raise ValueError(
                f"class_names must be a list of names or one of {list(CLASS_NAMES)}, got {class_names!r}"
            )
        class_names = CLASS_NAMES[class_names]
    rows = {name: m for name, m in metrics.items() if isinstance(m, dict) and "miou" in m}
    if not rows:
        raise ValueError("metrics holds no model results (expected entries like 'F_a': {'miou': …})")

    def pct(value, width: int = 6) -> str:
        text = "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"
        return f"{text:>{width}}"

    widths = [max(6, len(c)) for c in class_names]
    summary = ("mIoU", "Dice", "ACC", "FwIoU")
    first = max(8, *(len(n) for n in rows))
    split = f"{metrics['split']} split, " if "split" in metrics else ""
    lines = [
        f"{split}percent: IoU per class | mIoU, Dice, ACC, FwIoU",
        f"{'model':<{first}} "
        + " ".join(f"{c:>{w}}" for c, w in zip(class_names, widths, strict=True))
        + " | "
        + " ".join(f"{c:>6}" for c in summary),
    ]
    for name, m in rows.items():
        if len(m["iou"]) != len(class_names):
            raise ValueError(f"{len(class_names)} class names for {len(m['iou'])} classes in {name!r}")
        per_class = " ".join(pct(v, w) for v, w in zip(m["iou"], widths, strict=True))
        rest = " ".join(pct(m[k]) for k in ("miou", "mdice", "acc", "fwiou"))
        lines.append(f"{name:<{first}} {per_class} | {rest}")
    if "best_epoch" in metrics:
        lines.append(f"best epoch {metrics['best_epoch']} (F_a val mIoU {pct(metrics.get('val_miou'), 0)})")
    return "\n".join(lines)
