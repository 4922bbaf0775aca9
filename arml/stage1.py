"""Stage 1: the classification network with ARS, trained on image-level labels (paper §2.1–2.2).

The loop follows the released code (docs/paper_vs_code.md §2.2): multi-label soft-margin loss, SGD with
poly decay per step, backbone at ``lr`` and the new layers (ARS, fc8) at ``10·lr``, flips + Gaussian blur +
colour jitter, inputs in [0, 1]. Differences that the released code has and the paper does not are
switched by ``recipe="official"`` (ARS from epoch index 2, CCA frozen at identity, untrained channel gate,
pseudo masks from the ARS-free forward, the momentum bug that makes SGD momentum 5e-4).

The run folder follows :mod:`arml.runfolder`: each epoch ends with a checkpoint (``last.pt``) that also
holds every random-number state, so a run killed mid-epoch resumes from the start of that epoch and
finishes with the same weights; ``classifier.pt`` marks a finished run.

Steps: :func:`train_one_epoch` (the loop body), :func:`evaluate` (loss and accuracy of the image-level
predictions on a labelled loader), :func:`train_classifier` (the run, built on both).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2
from tqdm.auto import tqdm

from arml import distributed
from arml.datasets import TrainDataset
from arml.evaluation import check_device, eval_mode
from arml.models import Classifier, create_classifier
from arml.options import (
    ARS_PARTS,
    DATASETS,
    INPUT_NORMS,
    OUTPUT_STRIDES,
    REACTIVATION_VARIANTS,
    RECIPES,
    Config,
    option,
)
from arml.runfolder import (
    RunFolder,
    data_record,
    read_checkpoint,
    read_json_file,
    require_run,
    validate_inputs,
)
from arml.runtime import (
    resolve_device,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_poly_lr,
    set_rng_state,
    weights_digest,
)

FINISHED = "classifier.pt"
WEIGHTS = "weights.json"


@dataclass
class ClsConfig(Config):
    """Everything that defines a stage-1 run. Defaults are the paper profile's values except the backbone.

    ``ars_start_epoch=None`` is 0 under the paper recipe and 2 under the official one; ``momentum=None`` is
    0.9 (paper) or 5e-4 (official: the momentum bug). See :attr:`first_ars_epoch`, :attr:`sgd_momentum`.
    """

    data_root: str = option(help="dataset root in the published layout", cli=False)
    dataset: str = option("luad", "file-name grammar, classes and background rule", choices=DATASETS)
    backbone: str = option("resnet18", "a timm name (resnet18, resnet10t) or resnet38d (the paper's)")
    feature_level: int = option(-1, "timm feature level of the CAM features (-1 = deepest; 3 = layer3)")
    output_stride: int = option(8, "backbone output stride", choices=OUTPUT_STRIDES)
    pretrained: str | None = option(None, "initial backbone weights (a file), none = random init")
    ars: str | None = option("both", "ARS parts (none = the plain-CAM baseline)", choices=ARS_PARTS)
    recipe: str = option(
        "paper", "paper (evident bugs fixed) or official (the released code)", choices=RECIPES
    )
    reactivation_variant: str = option(
        "code", "the released AMM or Eq. (3) as printed", choices=REACTIVATION_VARIANTS
    )
    ars_start_epoch: int | None = option(None, "first epoch with ARS on (default: 0 paper, 2 official)")
    input_norm: str = option(
        "none", "input normalisation (the released code feeds [0, 1])", choices=INPUT_NORMS
    )
    dropout: float = option(0.0, "Dropout2d before GAP (0.5 in the released ResNet-38 head)")
    epochs: int = option(20, "training epochs")
    batch_size: int = option(20, "images per batch")
    lr: float = option(0.01, "backbone and ARS learning rate (fc8: 10x)")
    momentum: float | None = option(None, "SGD momentum (default: 0.9 paper, 5e-4 official)")
    weight_decay: float = option(5e-4, "SGD weight decay")
    poly_power: float = option(0.9, "power of the poly decay per step")
    hflip: bool = option(True, "random horizontal flip")
    vflip: bool = option(True, "random vertical flip")
    blur: bool = option(True, "Gaussian blur, sigma ~ U(0.1, 2)")
    color_jitter: float = option(0.5, "brightness and contrast jitter in [0, 1]")
    seed: int = option(0, "seeds everything")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    num_workers: int = option(0, "DataLoader worker processes")
    progress: bool = option(True, "tqdm progress bars", cli=False)

    def __post_init__(self) -> None:
        if not isinstance(self.data_root, str | Path) or not str(self.data_root):
            raise ValueError(f"ClsConfig.data_root must be a path, got {self.data_root!r}")
        # absolute: a run records where its data lives, whatever the working directory of a later command
        self.data_root = str(Path(self.data_root).expanduser().resolve())
        self.check_choices()
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"ClsConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"ClsConfig.lr must be positive, got {self.lr!r}")
        if not 0 <= self.color_jitter <= 1:
            raise ValueError(f"ClsConfig.color_jitter must be in [0, 1], got {self.color_jitter!r}")

    @property
    def first_ars_epoch(self) -> int:
        """The first epoch (0-based) trained with ARS on."""
        if self.ars_start_epoch is not None:
            return self.ars_start_epoch
        return 2 if self.recipe == "official" else 0

    @property
    def sgd_momentum(self) -> float:
        """The SGD momentum actually used."""
        if self.momentum is not None:
            return self.momentum
        return 5e-4 if self.recipe == "official" else 0.9

    def build_model(self) -> Classifier:
        """The run's :class:`~arml.models.Classifier`, freshly initialised (draws from the torch RNG)."""
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
    if not steps:  # v2.Compose refuses an empty list
        return lambda image: (image,)
    compose = v2.Compose(steps)
    return lambda image: (compose(image),)


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    *,
    step: int = 0,
    max_steps: int | None = None,
    poly_power: float = 0.9,
    device: str | torch.device = "cpu",
    desc: str = "stage 1",
    progress: bool = False,
) -> dict:
    """One pass over ``loader`` in train mode: poly lr, multi-label soft-margin loss, one SGD step per batch.

    Under several processes ``model`` is the :func:`arml.distributed.wrap`-ped classifier, whose logits are
    the global batch's; the labels are gathered to match, so the loss is the global batch's mean.

    Args:
        model: the classifier (its ``ars_enabled`` is the caller's choice for this epoch).
        loader: ``(images, labels, names)`` batches (this process's share of each global batch).
        optimizer: SGD whose groups' ``initial_lr`` are the base rates (set on first use).
        step: global step of the first batch; ``max_steps``: of the whole run (default: this epoch's).
        poly_power: power of the poly decay.
        device: where the batches go.
        desc, progress: the tqdm bar.

    Returns:
        ``{"loss": mean loss per image, "step": the next global step, "seconds": wall time}``.
    """
    max_steps = len(loader) if max_steps is None else max_steps
    model.train()
    started, total, seen = time.perf_counter(), 0.0, 0
    bar = tqdm(loader, desc=desc, disable=not progress)
    for images, labels, _ in bar:
        images, labels = images.to(device), labels.to(device)
        labels = distributed.gather_rows(labels)  # the global batch's (several processes: arml.distributed)
        lr = set_poly_lr(optimizer, step, max_steps, poly_power)
        loss = F.multilabel_soft_margin_loss(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        total += loss.item() * labels.shape[0]
        seen += labels.shape[0]
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
    return {"loss": total / max(seen, 1), "step": step, "seconds": time.perf_counter() - started}


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: str | torch.device = "cpu") -> dict:
    """Multi-label soft-margin loss and accuracy of the image-level predictions on a labelled loader.

    A class is predicted present where its logit is positive (probability > 0.5). Runs in eval mode (the
    previous mode is restored). Not called by :func:`train_classifier`: iterating another DataLoader draws
    from the global torch RNG, which would change the training.

    Args:
        model: a classifier giving ``B×K`` logits.
        loader: batches ``(images, labels, ...)`` with multi-hot float labels ``B×K``.
        device: where the batches go.

    Returns:
        ``{"loss": mean per image, "accuracy": per-class fraction correct, "mean_accuracy", "images"}``.
    """
    total, seen, correct = 0.0, 0, None
    with eval_mode([model]):
        for images, labels, *_ in loader:
            images, labels = images.to(device), labels.to(device)
            logits = model(images)
            total += F.multilabel_soft_margin_loss(logits, labels).item() * images.shape[0]
            hits = ((logits > 0) == (labels > 0.5)).sum(0).double().cpu()
            correct = hits if correct is None else correct + hits
            seen += images.shape[0]
    if seen == 0:
        raise ValueError("evaluate needs a loader with at least one image")
    accuracy = (correct / seen).tolist()
    return {
        "loss": total / seen,
        "accuracy": accuracy,
        "mean_accuracy": sum(accuracy) / len(accuracy),
        "images": seen,
    }


def _train_loader(
    config: ClsConfig, world: distributed.World = distributed.SINGLE
) -> tuple[DataLoader, torch.Generator]:
    dataset = TrainDataset(config.data_root, config.dataset, transform=train_transform(config))
    generator = torch.Generator().manual_seed(config.seed)
    if world.enabled:  # this process's share of the single-process run's global batches
        sampler = distributed.GlobalBatchSampler(
            len(dataset),
            config.batch_size,
            drop_last=len(dataset) > config.batch_size,
            generator=generator,
            world=world,
        )
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=config.num_workers,
            generator=generator,
            worker_init_fn=distributed.worker_init(world),
        )
        return loader, generator
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=len(dataset) > config.batch_size,
        num_workers=config.num_workers,
        generator=generator,
    )
    return loader, generator


def _resume(
    run: RunFolder,
    model: Classifier,
    optimizer,
    generator: torch.Generator,
    world: distributed.World = distributed.SINGLE,
) -> dict:
    """``last.pt``'s progress, restored into the model, the optimiser and every RNG (this process's own,
    under several); or a fresh start's."""
    state = run.load_last()
    if state is None:
        return {"epoch": -1, "step": 0, "history": []}
    distributed.check_resume(state, world, run.file("last.pt"))
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rank_rng"][world.rank] if world.enabled else state["rng"], generator)
    return state


def _finish(run: RunFolder, model: Classifier, config: ClsConfig) -> Classifier:
    """Write ``classifier.pt`` (ARS on when the model has it) and ``weights.json``; the model, on the CPU."""
    model.ars_enabled = model.ars.parts is not None
    save_checkpoint(run.file(FINISHED), {"model": model.state_dict(), "config": config.to_dict()})
    # The weights' digest, computed while they are in memory: pseudo-mask caches are keyed by it
    run.write_json(WEIGHTS, {"digest": weights_digest(model.state_dict())})
    return model.cpu().eval()


def data_of(config: ClsConfig) -> dict:
    """The :func:`~arml.runfolder.data_record` of what stage 1 reads: the training images."""
    return data_record(config.data_root, {"train": Path(config.data_root) / "train"})


def train_classifier(config: ClsConfig, out: str | Path, resume: bool = True) -> Classifier:
    """Train the stage-1 classifier; write ``config.json``, ``data.json``, ``last.pt``, ``history.json``,
    ``classifier.pt``.

    With ``resume`` an interrupted run in ``out`` continues from its last finished epoch (config and data
    must match) and a finished run is loaded instead of retrained; ``resume=False`` (``--restart``) starts
    over (:mod:`arml.runfolder`). Before the first epoch the data (train/, val/, test/: layout, ``dataset``
    fitting the names, every file decoded: :func:`arml.runfolder.validate_inputs`) and the device are
    checked; a run that fails them leaves no folder.

    Returns:
        The trained :class:`Classifier` in eval mode (on the CPU).

    Raises:
        ValueError: ``out`` holds a run of another config or other data (and ``resume``); bad data files
            (each named); a device without CUDA asked for CUDA.
        FileNotFoundError: missing data folders.
    """
    run = RunFolder(
        out,
        config,
        stage="stage 1",
        finished=FINISHED,
        outputs=(WEIGHTS,),
        resume=resume,
        data=data_of(config),
    )
    if run.finished:
        if distributed.detect().is_main:
            run.refresh()  # the data may have moved: later calls (pseudo masks) read the root from config.json
        return load_classifier(out)
    validate_inputs(config.data_root, config.dataset, progress=config.progress)
    with distributed.session(config.device, check_device) as (world, device):
        return _train(run, config, world, device)


def _train(run: RunFolder, config: ClsConfig, world: distributed.World, device: torch.device) -> Classifier:
    """The epochs of :func:`train_classifier`; under several processes rank 0 alone writes."""
    seed_everything(config.seed)
    model = config.build_model()
    if world.enabled:
        distributed.sync_batchnorm(model, device)
        distributed.seed_process(config.seed, world)
    model = model.to(device)
    loader, generator = _train_loader(config, world)
    optimizer = torch.optim.SGD(
        model.param_groups(config.lr, config.weight_decay), lr=config.lr, momentum=config.sgd_momentum
    )
    if world.is_main:
        run.start()
    distributed.barrier()
    state = _resume(run, model, optimizer, generator, world)
    step, history = state["step"], state["history"]
    # ARS is off before first_ars_epoch: its parameters are then unused, which DDP must be told
    net = distributed.wrap(model, device, config.first_ars_epoch > 0) if world.enabled else model
    for epoch in range(state["epoch"] + 1, config.epochs):
        model.ars_enabled = model.ars.parts is not None and epoch >= config.first_ars_epoch
        result = train_one_epoch(
            net,
            loader,
            optimizer,
            step=step,
            max_steps=config.epochs * len(loader),
            poly_power=config.poly_power,
            device=device,
            desc=f"stage 1 epoch {epoch + 1}/{config.epochs}",
            progress=config.progress and world.is_main,
        )
        step = result["step"]
        if not math.isfinite(result["loss"]):  # never save (and make pseudo masks from) a diverged classifier
            raise FloatingPointError(
                f"stage 1 diverged: the mean loss of epoch {epoch + 1} is {result['loss']} (lower --lr, or check "
                "the --pretrained weights); nothing of this epoch was saved"
            )
        history.append(
            {"epoch": epoch, "loss": result["loss"], "seconds": result["seconds"], "ars": model.ars_enabled}
        )
        last = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "step": step,
            "history": history,
            "rng": rng_state(generator),
        }
        if world.enabled:  # every process's random states, so that each resumes its own streams
            last.update(world_size=world.size, rank_rng=distributed.gather_objects(last["rng"], world))
        if world.is_main:
            run.save_last(last)
            run.write_json("history.json", {"history": history, **distributed.record(world)})
    if not world.enabled:
        return _finish(run, model, config)
    if world.is_main:
        _finish(run, model, config)
    distributed.barrier()
    return load_classifier(run.path)


def load_classifier(run_dir: str | Path, device: str = "cpu") -> Classifier:
    """Rebuild a finished stage-1 classifier from ``run_dir`` (``config.json`` + ``classifier.pt``)."""
    state = read_checkpoint(Path(run_dir) / FINISHED, _retrain(run_dir))
    model = ClsConfig.from_dict(state["config"]).build_model()
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval()


def load_config(run_dir: str | Path) -> ClsConfig:
    """The :class:`ClsConfig` a stage-1 run was trained with.

    Raises:
        ValueError: ``run_dir`` is a stage-2 run folder.
        FileNotFoundError: ``run_dir`` holds no run (no ``config.json``).
    """
    require_run(
        run_dir, "stage 1", "a stage-1 run folder (config.json and classifier.pt, from arml train-cls)"
    )
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no stage-1 run in {run_dir} (missing config.json)")
    return ClsConfig.from_dict(read_json_file(path))


def classifier_digest(run: str | Path) -> str:
    """The digest of a stage-1 run's weights: ``weights.json`` as training wrote it, else from ``classifier.pt``."""
    sidecar = Path(run) / WEIGHTS
    if sidecar.is_file():
        return read_json_file(sidecar)["digest"]
    state = read_checkpoint(Path(run) / FINISHED, _retrain(run))  # runs made before weights.json
    return weights_digest(state["model"])


def _retrain(run_dir: str | Path) -> str:
    return f"train the classifier again with arml train-cls --out {run_dir} --restart and the same options"
