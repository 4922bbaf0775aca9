"""Stage 2: segmentation networks trained on pseudo masks by mutual learning (paper §2.1, §2.3–2.4, §3.2).

Three peers F_a, F_b, F_c of the same architecture but different initialisations see the same augmented
batch. Each is trained with Eq. (9), ``(1 − λ)·L_swv + λ·L_st``, where the other two vote in SWV (Eq. 4) and
act as detached teachers in SRM (Eq. 5–8); every peer has its own optimiser (the paper's SGD: lr 5e-3,
momentum 0.9, weight decay 5e-4, poly decay 0.9 per iteration; ``optimizer="adamw"`` in the ``cpu`` profile). The pseudo-mask value 4 (background / excluded) is mapped
to the ignore label 255 for the losses. F_a's validation mIoU picks the best epoch (strictly better wins, as
in the released code) and the test split is scored with that checkpoint for F_a (the paper's model), each
peer, and the ensemble (mean of the peers' softmax probabilities): :mod:`arml.evaluation`.

Which networks are trained, and against which logits, is the recipe's (:mod:`arml.recipes`): the three
peers, a single network (``peers=1``, plain CE), or ``recipe="official"``, the released code
(docs/paper_vs_code.md §4.2): one network run three times per batch, only the first pass trained.

Cost: L_st reads every distance and angle off the B×B Gram matrix of the batch (:func:`arml.losses.structure_loss`),
so it costs one B×D matmul per network rather than the B×B×D tensor of difference vectors of the released
code (321 MB per copy at the paper's B = 20, D = 4·224·224). Measured with ``benchmarks/stage2_speed.py``
on 2 CPU cores: one forward + backward at that size takes 0.26 s and peaks at 262 MiB, inputs included
(the difference-vector version: 6–12 s and 2.0 GiB). The trainer backpropagates the peers' losses one
after the other (memory: :mod:`arml.recipes`).

Outputs in ``out`` (:mod:`arml.runfolder`): ``config.json``, ``data.json`` (what the run was made from: the
absolute data root, a fingerprint of train/, the training masks, val/ and test/, and the pseudo-mask
manifest's digest), ``last.pt`` (every epoch: weights, optimisers, step, history, best score, RNG states),
``best.pt`` (all peers' weights at the best F_a validation mIoU), ``history.json`` (per epoch and network:
the Eq. 9 ``loss``, its ``supervised`` and ``relation`` terms) and ``metrics.json`` (test metrics per model,
``best_epoch``, ``val_miou``, ``seconds_per_epoch``, ``data_root``).

>>> config = SegConfig("data/synthetic/quick", masks="train_gt", encoder="resnet10t", epochs=2)  # doctest: +SKIP
>>> metrics = train_segmenter(config, "runs/stage2-demo")  # doctest: +SKIP
>>> print(format_metrics(metrics, "luad"))  # from arml.evaluation  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from arml import distributed
from arml.datasets import BACKGROUND, IGNORE_INDEX, MaskedDataset, TrainDataset, in_memory
from arml.evaluation import check_device, evaluate_models, score_split
from arml.losses import RELATION_LOSSES
from arml.models import SEGMENTERS
from arml.options import (
    DATASETS,
    EVAL_SPLITS,
    INPUT_NORMS,
    PEER_COUNTS,
    RECIPES,
    SWV_NORMALIZATIONS,
    Config,
    option,
    parse_omega,
)
from arml.pseudo_masks import manifest_digest, read_manifest
from arml.recipes import Networks, build_networks, create_recipe
from arml.runfolder import RunFolder, data_changes, data_record, read_json_file, require_run, validate_inputs
from arml.runtime import rng_state, seed_everything, set_poly_lr, set_rng_state, to_jsonable
from arml.train_probe import load_probe, probe_networks

FINISHED = "metrics.json"
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
_INTS = {"epochs": 1, "batch_size": 1, "seed": 0, "num_workers": 0, "eval_batch_size": 1, "probe_images": 0}


@dataclass
class SegConfig(Config):
    """Everything that defines a stage-2 run. Defaults are the paper's (§3.2) and the released code's.

    ``masks`` names the training masks: a folder under ``<data_root>/train_PM/``, ``"train_gt"`` (the
    synthetic data's pixel truth) or an absolute path to a folder of palette PNGs named like ``train/``.
    ``peers=1`` trains a single network with plain CE and needs ``omega=None`` and ``relation=None``;
    ``omega=math.inf`` drops disagreeing pixels (written ``"inf"`` in JSON). Peer k is initialised under
    ``seed + k``.
    """

    data_root: str = option(help="dataset root (train/, train_PM/, val/, test/)", cli=False)
    masks: str = option(help="training masks: a train_PM/ folder name, train_gt, or an absolute path")
    dataset: str = option("luad", "file-name grammar and classes", choices=DATASETS)
    arch: str = option("pspnet", "architecture (paper: pspnet)", choices=tuple(sorted(SEGMENTERS)))
    encoder: str = option("resnet18", "timm encoder name (paper: resnest101e)")
    encoder_depth: int | None = option(None, "encoder stages used (paper: 3)", choices=(None, 1, 2, 3, 4, 5))
    pretrained: str | None = option(None, "initial encoder weights (a file), none = random init")
    input_norm: str = option("none", "input normalisation", choices=INPUT_NORMS)
    peers: int = option(3, "3 (mutual learning) or 1 (a single network, plain CE)", choices=PEER_COUNTS)
    recipe: str = option("paper", "paper (three peers) or official (one network run thrice)", choices=RECIPES)
    omega: float | None = option(2.0, "SWV weight ω >= 1 of Eq. (4), inf, or none for plain CE")
    relation: str | None = option("st", "relation loss (st: Eq. 8)", choices=(*sorted(RELATION_LOSSES), None))
    lam: float = option(0.2, "λ of Eq. (9)")
    alpha: float = option(30.0, "α of Eq. (8) (distance term)")
    beta: float = option(60.0, "β of Eq. (8) (angle term)")
    normalize: str = option("weights", "Eq. (4) over the weights or pixels", choices=SWV_NORMALIZATIONS)
    temperature: float = option(1.0, "temperature of the kl relation")
    epochs: int = option(10, "training epochs (paper: 10)")
    batch_size: int = option(20, "images per batch (paper: 20)")
    optimizer: str = option(
        "sgd",
        "per-peer optimiser: sgd (paper; uses momentum) or adamw (decoupled weight decay; the cpu profile, "
        "which trains from random initialisation and reaches its plateau in fewer steps)",
        choices=("sgd", "adamw"),
    )
    lr: float = option(5e-3, "peak learning rate under poly decay (paper: 5e-3 with SGD)")
    momentum: float = option(0.9, "SGD momentum (unused by adamw)")
    weight_decay: float = option(5e-4, "weight decay (paper: 5e-4 with SGD)")
    poly_power: float = option(0.9, "power of the poly decay per iteration")
    hflip: bool = option(True, "random horizontal flip of image and mask (p = 0.5)")
    blur: bool = option(True, "Gaussian blur of the image, p = 0.5, sigma ~ U(0, 1)")
    seed: int = option(0, "seeds everything; peer k is initialised under seed + k")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    amp: bool = option(
        True, "mixed precision training: float16 + GradScaler on CUDA, bfloat16 on CPUs with native support"
    )
    num_workers: int = option(0, "DataLoader worker processes")
    progress: bool = option(True, "tqdm progress bars", cli=False)
    eval_batch_size: int = option(32, "batch size for validation and test")
    probe_images: int = option(
        512, "training images scored every epoch against the pseudo masks and the truth (0: off)"
    )

    def __post_init__(self) -> None:
        for name in ("data_root", "masks"):
            self._need(
                isinstance(getattr(self, name), str | Path) and str(getattr(self, name)), name, "a path"
            )
            setattr(self, name, str(getattr(self, name)))
        # absolute: a run records where its data lives, whatever the working directory of a later command
        self.data_root = str(Path(self.data_root).expanduser().resolve())
        self.check_choices()
        self._need(isinstance(self.encoder, str) and self.encoder != "", "encoder", "a timm model name")
        self._need(
            self.pretrained is None or isinstance(self.pretrained, str | Path), "pretrained", "None or a str"
        )
        self.pretrained = None if self.pretrained is None else str(self.pretrained)
        self.omega = self._omega()
        for name, (low, high, low_open) in _RANGES.items():
            value = getattr(self, name)
            ok = _is_number(value) and low <= value <= high and not (low_open and value == low)
            self._need(ok, name, f"a number in {'(' if low_open else '['}{low}, {high}]")
        for name, low in _INTS.items():
            value = getattr(self, name)
            self._need(_is_int(value) and value >= low, name, f"an int >= {low}")
        for name in ("hflip", "blur", "amp", "progress"):
            self._need(isinstance(getattr(self, name), bool), name, "True or False")
        self._need(
            isinstance(self.device, str) and _valid_device(self.device), "device", "'auto', 'cpu', 'cuda[:N]'"
        )
        create_recipe(self)  # the recipe refuses options it cannot honour (e.g. SWV with peers=1)
        if self.relation == "st" and self.batch_size < 2:
            raise ValueError(
                "SegConfig.batch_size must be >= 2 with relation='st' (relations are across images; "
                "--batch-size, --relation)"
            )

    def _need(self, ok: bool, name: str, allowed: str) -> None:
        if not ok:
            raise ValueError(f"SegConfig.{name} must be {allowed}, got {getattr(self, name)!r}")

    def _omega(self) -> float | None:
        """``omega`` as :func:`~arml.options.parse_omega` reads it (``"inf"`` is how :meth:`to_dict` writes ∞)."""
        if self.omega is None or isinstance(self.omega, str) or _is_number(self.omega):
            with contextlib.suppress(ValueError):
                return parse_omega(self.omega)
        raise ValueError(f"SegConfig.omega must be None or >= 1 (or 'inf'), got {self.omega!r}")

    @property
    def n_models(self) -> int:
        """Networks that are trained and saved: 3 peers, or 1 (``peers=1`` or ``recipe="official"``)."""
        return create_recipe(self).n_models

    def to_dict(self) -> dict:
        """A JSON-ready dict (``omega=math.inf`` is written as the string ``"inf"``)."""
        data = super().to_dict()
        if data["omega"] is not None and math.isinf(data["omega"]):
            data["omega"] = "inf"
        return data

    def loss_options(self) -> dict:
        """The keyword arguments of :func:`arml.losses.loss_terms` under this config."""
        names = ("omega", "lam", "relation", "alpha", "beta", "normalize", "temperature")
        return {**{k: getattr(self, k) for k in names}, "ignore_index": IGNORE_INDEX}


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_device(device: str) -> bool:
    if device == "auto":
        return True
    try:
        torch.device(device)
    except RuntimeError:
        return False
    return True


def mask_dir(config: SegConfig) -> Path:
    """The training-mask folder named by ``config.masks``, whether it exists or not."""
    root = Path(config.data_root)
    if Path(config.masks).is_absolute():
        return Path(config.masks)
    return root / "train_gt" if config.masks == "train_gt" else root / "train_PM" / config.masks


def resolve_mask_dir(config: SegConfig) -> Path:
    """The training-mask folder named by ``config.masks`` (see :class:`SegConfig`).

    Raises:
        FileNotFoundError: no such folder (the message lists the ``train_PM/`` folders there are).
        ValueError: a pseudo-mask folder whose ``manifest.json`` says its making was interrupted.
    """
    root, folder = Path(config.data_root), mask_dir(config)
    if not folder.is_dir():
        available = (
            sorted(p.name for p in (root / "train_PM").iterdir()) if (root / "train_PM").is_dir() else []
        )
        raise FileNotFoundError(
            f"training-mask folder {folder} not found (--masks {config.masks}); masks must be a folder "
            f"name under {root / 'train_PM'} (found: {available or 'none'}), 'train_gt' or an absolute path"
        )
    manifest = read_manifest(folder)
    if manifest is not None and not manifest.get("complete", False):
        raise ValueError(
            f"the pseudo-mask folder {folder} (--masks {config.masks}) is incomplete: its making was "
            "interrupted (manifest.json: complete false); run arml pseudo-masks again with the same "
            "--checkpoint and --name to finish it"
        )
    made_from = (manifest or {}).get("data")
    if made_from is not None:  # masks made by arml: from the training images that are there now?
        now = data_record(root, {"train": root / "train"})
        if made_from.get("fingerprint") != now["fingerprint"]:
            changes = "; ".join(data_changes(made_from, now)) or "other names or sizes"
            raise ValueError(
                f"the pseudo masks in {folder} (--masks {config.masks}) were made from other training images "
                f"({changes}); make them again with arml pseudo-masks --overwrite and the same --name"
            )
    return folder


def data_of(config: SegConfig) -> dict:
    """The :func:`~arml.runfolder.data_record` of what stage 2 reads: training images and masks, the val
    and test splits, and the digest of the pseudo-mask folder's manifest (what made the masks)."""
    root = Path(config.data_root)
    folders = {"train": root / "train", "masks": mask_dir(config)}
    folders.update(
        {f"{split}/{kind}": root / split / kind for split in EVAL_SPLITS for kind in ("img", "mask")}
    )
    manifest = read_manifest(folders["masks"]) if folders["masks"].is_dir() else None
    upstream = {} if manifest is None else {"masks manifest": manifest_digest(manifest)}
    return data_record(root, folders, upstream)


def augment(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator,
    hflip: bool = True,
    blur: bool = True,
    span: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The released code's stage-2 augmentation, per image (docs/paper_vs_code.md §4.5).

    Horizontal flip (p = 0.5) of image and mask, then Gaussian blur of the image only (p = 0.5) with
    σ ~ U(0, 1) (PIL's ``GaussianBlur(radius)`` uses the radius as σ) and a kernel of ``2·⌈3σ⌉ + 1`` taps.
    Three numbers per image are always drawn from ``generator`` (a CPU generator), whatever the flags.

    Args:
        images: ``B×3×H×W`` float in [0, 1] (any device).
        masks: ``B×H×W`` int64.
        generator: source of the random draws; its state is part of the checkpoint.
        hflip, blur: switch each transform.
        span: ``(offset, total)``: the images are rows ``offset…`` of a global batch of ``total`` split over
            processes (:func:`arml.distributed.batch_span`); the draws are the global batch's, so each image
            gets the numbers it gets in a single-process run. None: the images are the whole batch.

    Returns:
        New ``(images, masks)``; the inputs are not modified.
    """
    b = images.shape[0]
    offset, total = (0, b) if span is None else span
    rows = slice(offset, offset + b)
    flip = (torch.rand(total, generator=generator) < 0.5)[rows]
    blurred = (torch.rand(total, generator=generator) < 0.5)[rows]
    sigma = torch.rand(total, generator=generator)[rows]
    images, masks = images.clone(), masks.clone()
    for i in range(b):
        if hflip and flip[i]:
            images[i], masks[i] = images[i].flip(-1), masks[i].flip(-1)
        if blur and blurred[i] and sigma[i] > 1e-3:
            s = float(sigma[i])
            k = 2 * math.ceil(3 * s) + 1
            images[i] = TF.gaussian_blur(images[i], kernel_size=[k, k], sigma=[s, s])
    return images, masks


def train_one_epoch(
    nets: Networks,
    loader: DataLoader,
    aug_generator: torch.Generator,
    config: SegConfig,
    *,
    step: int = 0,
    max_steps: int | None = None,
    desc: str = "stage 2",
) -> dict:
    """One pass over ``loader``: augment, map the background to the ignore label, poly lr, :func:`train_step`.

    Under several processes ``nets`` holds the :func:`arml.distributed.wrap`-ped networks: the augmentation
    draws, the target and the logits are the global batch's, so the losses are the single-process ones.

    Returns:
        ``{"loss", "supervised", "relation", "voter_agreement"}`` (network name → mean per image; relation
        None without one, agreement None for a single network: :meth:`arml.recipes.Networks.step`),
        ``"lr"`` (the last one), ``"step"`` (the next global step) and ``"train_seconds"``.
    """
    max_steps = len(loader) if max_steps is None else max_steps
    started = time.perf_counter()
    for m in nets.models:
        m.train()
    totals, seen, lr = np.zeros((len(nets.models), 4)), 0, 0.0
    distributed_run = isinstance(nets.models[0], distributed.GatherRows)
    bar = tqdm(loader, desc=desc, disable=not config.progress or not distributed.detect().is_main)
    for images, masks, _ in bar:
        images, masks = images.to(nets.device, non_blocking=True), masks.to(nets.device, non_blocking=True)
        span = distributed.batch_span(images.shape[0], nets.device)[:2] if distributed_run else None
        images, masks = augment(images, masks, aug_generator, config.hflip, config.blur, span)
        target = distributed.gather_rows(masks.masked_fill(masks == BACKGROUND, IGNORE_INDEX))
        for opt in nets.optimizers:
            lr = set_poly_lr(opt, step, max_steps, config.poly_power)
        totals += np.array(nets.step(images, target, config.loss_options())) * target.shape[0]
        step += 1
        seen += target.shape[0]
        bar.set_postfix(loss=" ".join(f"{v:.3f}" for v in totals[:, 0] / seen), lr=f"{lr:.1e}")
    means = totals / max(seen, 1)
    terms = {
        term: dict(zip(nets.recipe.names, means[:, i].tolist(), strict=True))
        for i, term in enumerate(("loss", "supervised", "relation", "voter_agreement"))
    }
    if config.relation is None:
        terms["relation"] = dict.fromkeys(nets.recipe.names)
    if not nets.recipe.votes:
        terms["voter_agreement"] = dict.fromkeys(nets.recipe.names)
    return {**terms, "lr": lr, "step": step, "train_seconds": time.perf_counter() - started}


def _make_loaders(
    config: SegConfig,
    device: torch.device,
    generator: torch.Generator,
    world: distributed.World = distributed.SINGLE,
):
    root = Path(config.data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist (--data)")
    # decoded once (small datasets): each epoch would otherwise re-read every PNG
    train_set = in_memory(TrainDataset(root, config.dataset, mask_dir=resolve_mask_dir(config)))
    # L_st needs at least two images per batch: drop a final batch of one (the released code would NaN).
    drop_last = config.relation == "st" and len(train_set) % config.batch_size == 1
    pin = device.type == "cuda"
    if world.enabled:  # this process's share of the single-process run's global batches
        sampler = distributed.GlobalBatchSampler(
            len(train_set), config.batch_size, drop_last=drop_last, generator=generator, world=world
        )
        train = DataLoader(
            train_set,
            batch_sampler=sampler,
            generator=generator,
            num_workers=config.num_workers,
            pin_memory=pin,
            worker_init_fn=distributed.worker_init(world),
        )
    else:
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
            f"{len(train_set)} training image(s) do not make one batch of at least 2 for relation='st' "
            "(--relation st): add training images or choose another --relation"
        )
    val = DataLoader(
        in_memory(MaskedDataset(root, "val")),
        batch_size=config.eval_batch_size,
        num_workers=config.num_workers,
        pin_memory=pin,
    )
    return train, val


def _resume(
    run: RunFolder,
    nets: Networks,
    aug_generator: torch.Generator,
    loader_generator,
    world: distributed.World = distributed.SINGLE,
) -> dict:
    """The progress to continue from: ``last.pt``'s, restored into ``nets`` and the generators (and this
    process's own random states, under several), or a fresh one."""
    state = run.load_last()
    if state is None:
        return {"epoch": -1, "step": 0, "history": [], "best_score": -math.inf, "best_epoch": None}
    distributed.check_resume(state, world, run.file("last.pt"))
    if state["best_epoch"] is not None and not run.file("best.pt").is_file():
        raise FileNotFoundError(f"{run.file('last.pt')} refers to {run.file('best.pt')}, which is missing")
    nets.load_state_dict(state)
    aug_generator.set_state(state["aug_rng"])
    set_rng_state(state["rank_rng"][world.rank] if world.enabled else state["rng"], loader_generator)
    return {k: state[k] for k in ("epoch", "step", "history", "best_score", "best_epoch")}


def _run_epoch(
    run,
    nets,
    config,
    epoch: int,
    progress: dict,
    loaders,
    generators,
    probe=None,
    train_nets=None,
    world=None,
) -> None:
    """Train one epoch, score F_a on the validation split (and the training probe,
    :mod:`arml.train_probe`), keep the best checkpoint, write ``last.pt``.

    Under several processes ``train_nets`` holds the wrapped networks that train (``nets`` the plain ones,
    which score and are saved); rank 0 alone scores and writes, the others wait for it."""
    (train_loader, val_loader), (aug_generator, loader_generator) = loaders, generators
    world = world or distributed.SINGLE
    started = time.perf_counter()
    result = train_one_epoch(
        train_nets or nets,
        train_loader,
        aug_generator,
        config,
        step=progress["step"],
        max_steps=config.epochs * len(train_loader),
        desc=f"stage 2 epoch {epoch + 1}/{config.epochs}",
    )
    if world.is_main:
        _score_epoch(run, nets, config, epoch, progress, result, val_loader, probe, started)
    else:
        progress.update(epoch=epoch, step=result["step"])
    rng = rng_state(loader_generator)  # after scoring: the validation loader draws from the torch RNG
    extra = {}
    if world.enabled:  # every process's random states, so that each resumes its own streams
        extra = {"world_size": world.size, "rank_rng": distributed.gather_objects(rng, world)}
    if world.is_main:
        run.save_last(
            {**nets.state_dict(), **progress, "aug_rng": aug_generator.get_state(), "rng": rng, **extra}
        )
        run.write_json("history.json", {"history": progress["history"], **distributed.record(world)})
    distributed.barrier()


def _score_epoch(
    run, nets, config, epoch: int, progress: dict, result: dict, val_loader, probe, started
) -> None:
    """F_a's validation score and the probe into ``progress["history"]``; ``best.pt`` when F_a improved."""
    val = evaluate_models(
        nets.models[:1], val_loader, nets.device, nets.use_amp, config.progress, f"val {epoch + 1}"
    )
    val = val["F_a"]
    score = val["miou"] if val["miou"] is not None else -math.inf
    progress["history"].append(
        {
            "epoch": epoch,
            **{term: result[term] for term in ("loss", "supervised", "relation", "voter_agreement")},
            "val_miou": val["miou"],
            "train_probe": None if probe is None else probe_networks(nets.models, probe, nets.device),
            "lr": result["lr"],
            "train_seconds": result["train_seconds"],
            "seconds": time.perf_counter() - started,
        }
    )
    progress.update(epoch=epoch, step=result["step"])
    # strictly better wins, as in the released code
    if progress["best_epoch"] is None or score > progress["best_score"]:
        progress.update(best_score=score, best_epoch=epoch)
        run.save_best({"models": nets.weights(), "epoch": epoch, "val_miou": val["miou"]})


def _test(
    run: RunFolder,
    nets: Networks,
    config: SegConfig,
    history: list[dict],
    probe=None,
    world: distributed.World = distributed.SINGLE,
) -> dict:
    """Score the best checkpoint's networks and their ensemble on the test split (and the training probe);
    write ``metrics.json``."""
    best = run.load_best()
    nets.load_state_dict(best)
    metrics = score_split(
        nets.models,
        config.data_root,
        "test",
        config.eval_batch_size,
        nets.device,
        nets.use_amp,
        config.progress,
    )
    metrics.update(
        best_epoch=best["epoch"],
        val_miou=best["val_miou"],
        seconds_per_epoch=float(np.mean([h["train_seconds"] for h in history])),
        train_probe=None if probe is None else probe_networks(nets.models, probe, nets.device),
        split="test",
        dataset=config.dataset,
        data_root=config.data_root,
        **distributed.record(world),
    )
    run.write_json(FINISHED, metrics)
    return to_jsonable(metrics)


def train_segmenter(config: SegConfig, out: str | Path, resume: bool = True) -> dict:
    """Train stage 2 as ``config`` says, keep the best F_a checkpoint, score the test split.

    Args:
        config: the run.
        out: run folder (created once config, data and device are checked); see the module docstring.
        resume: continue an interrupted run in ``out`` from the epoch after its last finished one, with the
            same weights, optimiser states, history and random states, so it ends exactly as an uninterrupted
            run would; return a finished run's ``metrics.json`` without training. ``False`` starts over and
            replaces the run files in ``out`` (:mod:`arml.runfolder`).

    Returns:
        The test metrics: model name (``"F_a"``, ``"F_b"``, ``"F_c"``, ``"ensemble"``; only ``"F_a"`` for
        one network) → per-class ``iou``/``dice`` lists, ``miou``, ``mdice``, ``acc``, ``fwiou``, ``pixels``
        (fractions, NaN as None); plus ``best_epoch`` (0-based), ``val_miou``, ``seconds_per_epoch``
        (training time), ``split``, ``dataset`` and ``data_root`` (the data used, absolute).

    Raises:
        ValueError: ``out`` holds a run with another configuration or made from other data (and
            ``resume`` is True); bad data files or training masks (each named, found before the first
            epoch: :func:`arml.runfolder.validate_inputs`); a device without CUDA asked for CUDA; an
            interrupted pseudo-mask folder.
        FileNotFoundError: missing data folders or training masks.
    """
    if not isinstance(config, SegConfig):
        raise TypeError(f"config must be a SegConfig, got {type(config).__name__}")
    run = RunFolder(out, config, stage="stage 2", finished=FINISHED, resume=resume, data=data_of(config))
    if run.finished:
        if distributed.detect().is_main:
            run.refresh()  # the data may have moved: evaluate reads the root from config.json
        return {**run.read_json(FINISHED), "data_root": config.data_root}
    validate_inputs(
        config.data_root, config.dataset, masks_dir=resolve_mask_dir(config), progress=config.progress
    )
    with distributed.session(config.device, check_device) as (world, device):
        return _train(run, config, world, device)


def _train(run: RunFolder, config: SegConfig, world: distributed.World, device: torch.device) -> dict:
    """The epochs and the test of :func:`train_segmenter`. Under several processes (:mod:`arml.distributed`)
    every peer gets synchronised BatchNorms and its own DDP wrapper; rank 0 alone scores the validation and
    test splits and the probe and writes; every process returns rank 0's metrics."""
    seed_everything(config.seed)
    loader_generator = torch.Generator().manual_seed(config.seed)
    generators = (torch.Generator().manual_seed(config.seed + 1_000_003), loader_generator)
    loaders = _make_loaders(config, device, loader_generator, world)
    probe = None
    if world.is_main:
        probe = load_probe(config.data_root, config.dataset, resolve_mask_dir(config), config.probe_images)
    nets = build_networks(config, device)
    if world.enabled:
        for model in nets.models:
            distributed.sync_batchnorm(model, device)
        distributed.seed_process(config.seed, world)
    if world.is_main:
        run.start()
    distributed.barrier()
    progress = _resume(run, nets, *generators, world)
    train_nets = None
    if world.enabled:  # one DDP wrapper per peer: each keeps its own optimiser
        train_nets = dataclasses.replace(nets, models=[distributed.wrap(m, device) for m in nets.models])
    for epoch in range(progress["epoch"] + 1, config.epochs):
        _run_epoch(run, nets, config, epoch, progress, loaders, generators, probe, train_nets, world)
    metrics = _test(run, nets, config, progress["history"], probe, world) if world.is_main else None
    return distributed.broadcast(metrics, world)


def load_history(run_dir: str | Path) -> list[dict]:
    """The per-epoch log of a stage-2 run (``history.json``): losses, ``val_miou``, ``train_probe``, …"""
    path = Path(run_dir) / "history.json"
    if not path.is_file():
        raise FileNotFoundError(f"no stage-2 history in {run_dir} (missing history.json)")
    return read_json_file(path)["history"]


def load_config(run_dir: str | Path) -> SegConfig:
    """The :class:`SegConfig` a stage-2 run folder was trained with.

    Raises:
        ValueError: ``run_dir`` is a stage-1 run folder.
        FileNotFoundError: ``run_dir`` holds no run (no ``config.json``).
    """
    require_run(run_dir, "stage 2", "a stage-2 run folder (config.json and best.pt, from arml train-seg)")
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no stage-2 run in {run_dir} (missing config.json)")
    return SegConfig.from_dict(read_json_file(path))
