"""Scoring stage-2 networks (paper §3.2): prediction, metrics per network and for the ensemble, run folders.

F_a's validation mIoU picks the best epoch of a run (:func:`arml.stage2.train_segmenter`), and the test
split is scored with that checkpoint for F_a (the paper's model), each peer, and the ensemble (mean of the
peers' softmax probabilities). Metrics are those of the released ``Evaluator`` (docs/paper_vs_code.md §5):
per-class IoU and Dice, mIoU, pixel accuracy and frequency-weighted IoU over the four tissue classes; the
background / excluded label 4 counts nowhere.

>>> metrics = evaluate("runs/stage2-demo", split="test")  # doctest: +SKIP
>>> print(format_metrics(metrics, "luad"))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from arml.datasets import CLASS_NAMES, NUM_CLASSES, MaskedDataset
from arml.metrics import SegmentationMetrics
from arml.models import create_segmenter
from arml.options import DATASETS, ENSEMBLE, EVAL_SPLITS, PEER_NAMES, check_choice
from arml.runfolder import BEST, data_record, read_checkpoint, read_data_record, validate_inputs
from arml.runtime import resolve_device, to_jsonable


def autocast(device: torch.device, enabled: bool):
    """Mixed precision on ``device`` when ``enabled`` (float16 on CUDA, bfloat16 on the CPU); a no-op otherwise."""
    dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


def training_amp(device: torch.device, amp: bool) -> bool:
    """Whether stage-2 training runs in mixed precision: float16 on CUDA; bfloat16 on a CPU with native
    bfloat16 instructions (AVX512-BF16/AMX: 1.6× faster steps on one core of the reference machine,
    ``benchmarks/stage2_speed.py``). Weights, optimiser and losses stay float32; evaluation stays float32
    on the CPU."""
    if not amp:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@contextlib.contextmanager
def eval_mode(models: Sequence[nn.Module]) -> Iterator[None]:
    """Put ``models`` in eval mode and restore each one's previous mode afterwards."""
    modes = [m.training for m in models]
    try:
        for m in models:
            m.eval()
        yield
    finally:
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)


def check_device(device: str | torch.device) -> torch.device:
    """:func:`arml.runtime.resolve_device`, refusing CUDA where there is none (a clear error, not a crash)."""
    resolved = resolve_device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} asks for CUDA, which is not available here; use --device auto or cpu"
        )
    return resolved


@torch.no_grad()
def predict(models: nn.Module | Sequence[nn.Module], images: torch.Tensor, amp: bool = False) -> torch.Tensor:
    """Label maps ``B×H×W`` (int64, 0..3) from one network or the ensemble of several.

    One network: argmax of its logits. Several: argmax of the mean of their softmax probabilities. The
    networks run in eval mode (their previous mode is restored) on ``images``' device.
    """
    models = [models] if isinstance(models, nn.Module) else list(models)
    with eval_mode(models), autocast(images.device, amp and images.device.type == "cuda"):
        if len(models) == 1:
            return models[0](images).float().argmax(1)
        probs = torch.stack([m(images).float().softmax(1) for m in models]).mean(0)
        return probs.argmax(1)


def model_names(n_models: int, ensemble: bool = True) -> list[str]:
    """``F_a``, ``F_b``, … for ``n_models`` networks, then ``ensemble`` when there are several."""
    return list(PEER_NAMES[:n_models]) + ([ENSEMBLE] if ensemble and n_models > 1 else [])


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
    names = model_names(len(models), ensemble)
    scores = {name: SegmentationMetrics(NUM_CLASSES) for name in names}
    use_amp = amp and device.type == "cuda"
    with eval_mode(models):
        for images, masks, _ in tqdm(loader, desc=desc, disable=not progress, leave=False):
            images = images.to(device, non_blocking=True)
            with autocast(device, use_amp):
                logits = [m(images).float() for m in models]
            for name, out in zip(names, logits, strict=False):
                scores[name].update(out.argmax(1).cpu(), masks)
            if ENSEMBLE in scores:
                probs = torch.stack([out.softmax(1) for out in logits]).mean(0)
                scores[ENSEMBLE].update(probs.argmax(1).cpu(), masks)
    return {name: to_jsonable(s.compute()) for name, s in scores.items()}


def score_split(
    models: Sequence[nn.Module],
    data_root: str | Path,
    split: str,
    batch_size: int,
    device: torch.device,
    amp: bool = False,
    progress: bool = False,
    num_workers: int = 0,
) -> dict[str, dict]:
    """:func:`evaluate_models` on the ``"val"`` or ``"test"`` split of ``data_root`` (with the ensemble)."""
    loader = DataLoader(MaskedDataset(data_root, split), batch_size=batch_size, num_workers=num_workers)
    return evaluate_models(models, loader, device, amp, progress, desc=split)


def load_models(run_dir: str | Path, device: str | torch.device = "cpu") -> list[nn.Module]:
    """The networks of a stage-2 run at its best epoch (``best.pt``), in eval mode on ``device``."""
    from arml.stage2 import load_config  # stage 2 scores its runs with this module

    run_dir = Path(run_dir)
    config = load_config(run_dir)
    state = read_checkpoint(run_dir / BEST, _retrain(run_dir))
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

    Scoring other data than the run was trained on is allowed (``data_root``); the result says which data
    it scored, absolute, and whether the split's files are the ones the run saw.

    Args:
        checkpoint_dir: a :func:`~arml.stage2.train_segmenter` output folder (``config.json`` + ``best.pt``).
        data_root: dataset root; default: the run's ``data_root``.
        split: ``"val"`` or ``"test"``.
        dataset: ``"luad"`` or ``"bcss"``; default: the run's. Only recorded in the result (class names).
        batch_size: evaluation batch size.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ….

    Returns:
        The same structure as ``metrics.json``: model name → metrics, plus ``best_epoch``, ``val_miou``,
        ``split``, ``dataset``, ``data_root`` (the data scored, absolute), ``run_data_root`` (the data the
        run was trained on) and ``data_matches_run`` (whether the split's file names and sizes are those
        recorded by the run; None for runs made before ``data.json``).

    Raises:
        ValueError: ``checkpoint_dir`` is a stage-1 run folder; bad arguments; CUDA asked for and missing;
            bad files in the split (each named: :func:`arml.runfolder.validate_inputs`); a damaged
            ``best.pt``.
        FileNotFoundError: no stage-2 run, no finished epoch (``best.pt``), or the split is missing.
    """
    from arml.stage2 import load_config

    if split not in EVAL_SPLITS:
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    check_choice("dataset", dataset, (None, *DATASETS))
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    checkpoint_dir = Path(checkpoint_dir)
    config = load_config(checkpoint_dir)  # a stage-1 folder: a message naming what it is
    if not (checkpoint_dir / BEST).is_file():
        raise FileNotFoundError(
            f"{checkpoint_dir} holds a stage-2 run with no finished epoch yet (no {BEST}); train it with "
            f"arml train-seg --out {checkpoint_dir} and the same options"
        )
    torch_device = check_device(device)
    root = validate_inputs(data_root or config.data_root, dataset or config.dataset, splits=(split,))
    best = read_checkpoint(checkpoint_dir / BEST, _retrain(checkpoint_dir))
    models = load_models(checkpoint_dir, torch_device)
    metrics = score_split(models, root, split, batch_size, torch_device, config.amp)
    recorded = read_data_record(checkpoint_dir)
    matches = None
    if recorded is not None:
        now = data_record(root, {f"{split}/{kind}": root / split / kind for kind in ("img", "mask")})[
            "folders"
        ]
        matches = all(recorded["folders"].get(k, {}).get("sha256") == v["sha256"] for k, v in now.items())
    metrics.update(
        best_epoch=best["epoch"],
        val_miou=best["val_miou"],
        split=split,
        dataset=dataset or config.dataset,
        data_root=str(root),
        run_data_root=(recorded or {}).get("data_root", config.data_root),
        data_matches_run=matches,
    )
    return to_jsonable(metrics)


def _retrain(run_dir: Path) -> str:
    return f"train it again with arml train-seg --out {run_dir} --restart and the same options"


def _pct(value, width: int = 6) -> str:
    text = "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"
    return f"{text:>{width}}"


def format_metrics(metrics: dict, class_names: Sequence[str] | str | None = None) -> str:
    """A table in percent: per-class IoU, mIoU, Dice, ACC and FwIoU for every model in ``metrics``.

    Args:
        metrics: as returned by :func:`~arml.stage2.train_segmenter` or :func:`evaluate`.
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
    widths = [max(6, len(c)) for c in class_names]
    first = max(8, *(len(n) for n in rows))
    split = f"{metrics['split']} split, " if "split" in metrics else ""
    lines = [
        f"{split}percent: IoU per class | mIoU, Dice, ACC, FwIoU",
        f"{'model':<{first}} "
        + " ".join(f"{c:>{w}}" for c, w in zip(class_names, widths, strict=True))
        + " | "
        + " ".join(f"{c:>6}" for c in ("mIoU", "Dice", "ACC", "FwIoU")),
    ]
    for name, m in rows.items():
        if len(m["iou"]) != len(class_names):
            raise ValueError(f"{len(class_names)} class names for {len(m['iou'])} classes in {name!r}")
        per_class = " ".join(_pct(v, w) for v, w in zip(m["iou"], widths, strict=True))
        rest = " ".join(_pct(m[k]) for k in ("miou", "mdice", "acc", "fwiou"))
        lines.append(f"{name:<{first}} {per_class} | {rest}")
    if "best_epoch" in metrics:
        lines.append(f"best epoch {metrics['best_epoch']} (F_a val mIoU {_pct(metrics.get('val_miou'), 0)})")
    return "\n".join(lines)
