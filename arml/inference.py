"""Inference on new images: a trained stage-2 run segments an image of any size (``arml predict``).

A segmenter is trained on fixed-size patches (224×224 on LUAD-HistoSeg and BCSS-WSSS, 64×64 on the quick
synthetic data). A larger image is cut into overlapping windows of that size, each window is segmented, and
the softmax probabilities are blended back together (:func:`sliding_window_logits`); the label map is their
argmax. F_a alone (the paper's model), any other peer, or the ensemble of the peers (the mean of their
softmax probabilities, as :func:`arml.evaluation.predict` and the test metrics define it) can be used.

The segmenter has four outputs, one per tissue class (0..3); the background / excluded label 4 of the
datasets is never predicted, so white glass or out-of-tissue regions get a tissue class too.

>>> result = predict_image("runs/stage2-demo", "slide_region.tif", out="region_mask.png")  # doctest: +SKIP
>>> result["shares"]  # doctest: +SKIP
{'TE': 0.41, 'NEC': 0.03, 'LYM': 0.12, 'TAS': 0.44}
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from arml.datasets import CLASS_NAMES, DECODE_ERRORS, NUM_CLASSES, list_pngs, write_mask
from arml.evaluation import autocast, check_device, eval_mode, load_models
from arml.options import ENSEMBLE, PEER_NAMES, check_choice
from arml.runfolder import BEST
from arml.runtime import atomic_write

#: Image formats :func:`read_any_image` accepts (PIL's format names) and the suffixes they usually carry.
FORMATS = ("PNG", "JPEG", "TIFF")
#: The window when the run's training images cannot be read: the published patch size of both datasets.
PUBLISHED_PATCH = 224
WEIGHTINGS = ("hann", "uniform")
MODELS = (*PEER_NAMES, ENSEMBLE)


# ------------------------------------------------------------------------------------------------ reading
def read_any_image(path: str | Path) -> torch.Tensor:
    """Read a PNG, JPEG or TIFF image as a ``3×H×W`` float tensor in [0, 1].

    Greyscale and palette images become RGB; an alpha channel is composited onto white (the colour of empty
    glass), so transparent pixels do not turn black. 16-bit greyscale (``I;16``) is scaled by 1/65535. A
    multi-page TIFF gives its first page. The format is read from the file's bytes, not its name.

    Raises:
        FileNotFoundError: no such file (named, with ``--image``).
        ValueError: naming the file: not an image, truncated, another format (GIF, BMP, …), a pixel mode
            that is not colour or grey (e.g. 32-bit float), or more pixels than PIL's decompression-bomb
            limit (crop or tile the image first).
        OSError: the system refuses (permission, I/O); the message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path} (--image)")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; --image takes one PNG, JPEG or TIFF file")
    try:
        with Image.open(path) as img:
            fmt, mode = img.format, img.mode
            arr = _to_rgb(img) if fmt in FORMATS and mode not in ("I", "F") else None
    except Image.DecompressionBombError as err:
        raise ValueError(f"{path}: too large to read whole ({err}); crop or tile it first") from None
    except DECODE_ERRORS as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise  # the system refused (permission, I/O): keeps its errno and file name
        raise ValueError(
            f"{path}: not a readable PNG, JPEG or TIFF image ({type(err).__name__}: {err}); "
            "is the file truncated or of another kind?"
        ) from err
    if fmt not in FORMATS:
        raise ValueError(f"{path}: a {fmt or 'unknown'} image; --image reads {', '.join(FORMATS)} only")
    if arr is None:
        kind = "32-bit integer" if mode == "I" else "floating-point"
        raise ValueError(f"{path}: {kind} pixels (mode {mode!r}); save it as an 8-bit RGB image first")
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _to_rgb(img: Image.Image) -> np.ndarray:
    """``H×W×3`` float32 in [0, 1] from an open PIL image (decoded here) in a colour or grey mode."""
    if img.mode.startswith("I;16"):
        grey = np.asarray(img, dtype=np.float32) / 65535.0
        return np.repeat(grey[..., None], 3, axis=2)
    if "A" in img.mode or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


# ------------------------------------------------------------------------------------------ sliding window
def model_stride(models: Sequence[nn.Module]) -> int:
    """The size every input side must be a multiple of: the networks' output stride (8 for PSPNet at depth
    3, 16 for DeepLabV3+); 1 for modules without a ``stride`` attribute."""
    return max(int(getattr(m, "stride", 1) or 1) for m in models)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Window offsets along one side of ``length >= window`` pixels: every ``stride``, plus a last window
    flush with the end when the steps do not land there (so the windows cover every pixel).

    >>> window_starts(150, 64, 32)
    [0, 32, 64, 86]
    """
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def window_weights(window: int, weighting: str = "hann") -> torch.Tensor:
    """The ``window×window`` blending weights: ``"uniform"`` (all ones) or ``"hann"``.

    ``"hann"``: ``w(i, j) = h(i)·h(j)``, ``h(i) = sin²(π(i + ½)/window)``: near 1 in the middle of a window,
    near 0 (never 0) at its edges, where a network sees the least context and is least reliable. Shifted by
    half a window, ``h`` sums to exactly 1 (sin² + cos²), so with the default stride the blend is an even
    cross-fade; elsewhere the sum of the weights divides it out.
    """
    check_choice("weighting", weighting, WEIGHTINGS)
    if weighting == "uniform":
        return torch.ones(window, window)
    ramp = torch.sin(math.pi * (torch.arange(window, dtype=torch.float64) + 0.5) / window) ** 2
    return torch.outer(ramp, ramp).float()


def _reflect_pad(image: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, int, int]:
    """Pad ``image`` (3×H×W) by reflection to at least ``height×width``, centred; returns it and the offsets
    of the original in it. NumPy's reflection repeats for pads wider than the image (a 10-px image in a 64-px
    window), where :func:`torch.nn.functional.pad` refuses."""
    _, h, w = image.shape
    top, left = max(0, height - h) // 2, max(0, width - w) // 2
    bottom, right = max(0, height - h) - top, max(0, width - w) - left
    if not (top or bottom or left or right):
        return image, 0, 0
    arr = np.pad(image.numpy(), ((0, 0), (top, bottom), (left, right)), mode="reflect")
    return torch.from_numpy(arr), top, left


@torch.no_grad()
def sliding_window_logits(
    models: nn.Module | Sequence[nn.Module],
    image: torch.Tensor,
    window: int,
    stride: int | None = None,
    device: str | torch.device = "cpu",
    amp: bool = False,
    weighting: str = "hann",
    batch_size: int = 8,
) -> torch.Tensor:
    """Class probabilities ``K×H×W`` (float32, on the CPU) of an image of any size, window by window.

    Despite the name, the result is probabilities, not logits: each window's softmax (for several networks,
    the mean of their softmax probabilities: the ensemble of :func:`arml.evaluation.predict`), blended over
    overlapping windows with :func:`window_weights` and divided by the summed weights. The argmax of the
    result is the label map. With one window covering the whole image (``window`` = its size) the argmax is
    :func:`arml.evaluation.predict`'s.

    Any size works: an image smaller than the window is padded by reflection to the window and the result
    cropped back; a side that is not a multiple of the networks' stride is covered by windows ending flush
    with it (:func:`window_starts`), so every window the networks see is ``window×window``.

    Args:
        models: one network or several (the ensemble); run in eval mode, their previous mode restored.
        image: ``3×H×W`` float in [0, 1] (:func:`read_any_image`).
        window: window side in pixels; a multiple of the networks' stride (:func:`model_stride`, 8 for PSPNet).
        stride: step between windows, 1..``window``; default ``window // 2``.
        device: where the networks are (the windows are sent there); the blend is accumulated on the CPU.
        amp: float16 autocast, CUDA only (as :func:`arml.evaluation.predict`).
        weighting: ``"hann"`` (default) or ``"uniform"`` (:func:`window_weights`).
        batch_size: windows per forward pass.

    Raises:
        ValueError: a bad ``image`` shape, ``window``, ``stride``, ``weighting`` or ``batch_size``, each named
            with its command-line flag.
    """
    models = [models] if isinstance(models, nn.Module) else list(models)
    if not models:
        raise ValueError("models is empty: give one network or several")
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be 3×H×W, got shape {tuple(image.shape)}")
    window, stride = check_window(window, stride, model_stride(models))
    check_choice("weighting", weighting, WEIGHTINGS)
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    device = torch.device(device)
    _, h, w = image.shape
    padded, top, left = _reflect_pad(image.float().cpu(), window, window)
    ph, pw = padded.shape[-2:]
    boxes = [(y, x) for y in window_starts(ph, window, stride) for x in window_starts(pw, window, stride)]
    weights = window_weights(window, weighting)
    acc: torch.Tensor | None = None
    total = torch.zeros(ph, pw)
    use_amp = amp and device.type == "cuda"
    with eval_mode(models), autocast(device, use_amp):
        for i in range(0, len(boxes), batch_size):
            chunk = boxes[i : i + batch_size]
            batch = torch.stack([padded[:, y : y + window, x : x + window] for y, x in chunk]).to(device)
            probs = torch.stack([m(batch).float().softmax(1) for m in models]).mean(0).cpu()
            if acc is None:
                acc = torch.zeros(probs.shape[1], ph, pw)
            for (y, x), p in zip(chunk, probs, strict=True):
                acc[:, y : y + window, x : x + window] += p * weights
                total[y : y + window, x : x + window] += weights
    assert acc is not None  # at least one window
    return (acc / total)[:, top : top + h, left : left + w].contiguous()


def check_window(window, stride, multiple: int = 8) -> tuple[int, int]:
    """``(window, stride)`` checked: the window a positive multiple of ``multiple`` (the networks' stride),
    the stride in 1..window (default ``window // 2``).

    Raises:
        ValueError: naming ``--window`` or ``--stride`` and what is allowed.
    """
    if not _is_int(window) or window < multiple or window % multiple:
        raise ValueError(
            f"--window (window={window!r}) must be a positive multiple of {multiple}, the segmenter's output "
            "stride (default: the run's training image size)"
        )
    if stride is None:
        stride = max(1, window // 2)
    if not _is_int(stride) or not 1 <= stride <= window:
        raise ValueError(
            f"--stride (stride={stride!r}) must be an int in 1..{window} (the window; larger steps would leave "
            "pixels unseen); default: window // 2"
        )
    return window, stride


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ------------------------------------------------------------------------------------------- one image
def training_window(data_root: str | Path, multiple: int = 8) -> tuple[int, str]:
    """The window at the training scale and where it came from.

    The side of the first image in ``<data_root>/train/`` (the shorter side if it is not square), rounded
    down to a multiple of ``multiple``; when that folder is missing, empty or unreadable (the run was
    trained elsewhere), :data:`PUBLISHED_PATCH` (224, the patch size of LUAD-HistoSeg and BCSS-WSSS).

    Returns:
        ``(window, source)``, ``source`` a short text for the user (which file, or the fallback).
    """
    try:
        first = list_pngs(Path(data_root) / "train")[0]
        with Image.open(first) as img:
            side = min(img.size)
    except (IndexError, FileNotFoundError, *DECODE_ERRORS):
        window = max(multiple, PUBLISHED_PATCH // multiple * multiple)
        return window, f"the published patch size ({Path(data_root) / 'train'} not readable)"
    return max(multiple, side // multiple * multiple), f"training image {first.name}"


def default_out(image_path: str | Path) -> Path:
    """Where the mask goes when no ``--out`` is given: ``./<image stem>_mask.png`` (the current folder, not
    beside the user's data)."""
    return Path.cwd() / f"{Path(image_path).stem}_mask.png"


def overlay_path(out: str | Path) -> Path:
    """The overlay written beside the mask ``out``: ``<out stem>_overlay.png``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_overlay.png")


def predict_image(
    run_dir: str | Path,
    image_path: str | Path,
    out: str | Path | None = None,
    model: str = "F_a",
    window: int | None = None,
    stride: int | None = None,
    device: str = "auto",
    weighting: str = "hann",
) -> dict:
    """Segment one image with a stage-2 run's best checkpoint; write the mask and an overlay.

    Writes, atomically: ``out``, a palette PNG of class indices 0..3 in the dataset's colours
    (:func:`arml.datasets.write_mask`; the segmenter never predicts the background label 4), and
    ``<out stem>_overlay.png``, the image blended with those colours (:func:`arml.viz.base.overlay`).

    Args:
        run_dir: a stage-2 run folder (``config.json`` and ``best.pt``, from ``arml train-seg``).
        image_path: a PNG, JPEG or TIFF image of any size (:func:`read_any_image`).
        out: the mask file (``.png``); default ``./<image stem>_mask.png`` (:func:`default_out`).
        model: ``"F_a"`` (the paper's model), ``"F_b"``, ``"F_c"`` or ``"ensemble"`` (three-peer runs).
        window: window side; default the training scale (:func:`training_window`: the size of the run's
            training images, else 224, the published patch size).
        stride: step between windows; default ``window // 2``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ….
        weighting: how overlapping windows are blended (:func:`window_weights`).

    Returns:
        ``mask``, ``overlay``, ``image`` (paths as str), ``height``, ``width``, ``model``, ``window``,
        ``window_source``, ``stride``, ``windows`` (how many), ``dataset``, ``shares`` (class name → fraction
        of the image's pixels), ``device``, ``seconds``.

    Raises:
        ValueError: ``run_dir`` is a stage-1 folder; an unreadable or unsupported image; a bad ``model``
            (or ``ensemble`` for a one-network run), ``window``, ``stride`` or ``out``; CUDA asked for and
            missing; a damaged ``best.pt``.
        FileNotFoundError: no run in ``run_dir``, no finished epoch (``best.pt``), no image.
    """
    from arml.stage2 import load_config
    from arml.viz.base import overlay

    start = time.perf_counter()
    check_choice("--model (model)", model, MODELS)
    check_choice("weighting", weighting, WEIGHTINGS)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"--checkpoint {run_dir}: no such folder (expected a stage-2 run folder)")
    config = load_config(run_dir)  # a stage-1 folder: a message naming what it is
    if not (run_dir / BEST).is_file():
        raise FileNotFoundError(
            f"{run_dir} holds a stage-2 run with no finished epoch yet (no {BEST}); train it with "
            f"arml train-seg --out {run_dir} and the same options"
        )
    names = PEER_NAMES[: config.n_models]
    if model not in (*names, ENSEMBLE) or (model == ENSEMBLE and len(names) < 2):
        raise ValueError(
            f"--model {model}: the run in {run_dir} holds {len(names)} network(s) ({', '.join(names)})"
            + ("; the ensemble needs a three-peer run (--peers 3)" if model == ENSEMBLE else "")
        )
    image_path = Path(image_path)
    out = Path(out) if out is not None else default_out(image_path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: the mask is a palette PNG; give a name ending in .png")
    over = overlay_path(out)
    for target in (out, over):
        if image_path.exists() and target.resolve() == image_path.resolve():
            raise ValueError(
                f"--out {out} would overwrite the input image {image_path}; choose another --out"
            )
    torch_device = check_device(device)
    image = read_any_image(image_path)
    models = load_models(run_dir, torch_device)
    models = models if model == ENSEMBLE else [models[PEER_NAMES.index(model)]]
    source = "--window"
    if window is None:
        window, source = training_window(config.data_root, model_stride(models))
    window, stride = check_window(window, stride, model_stride(models))
    amp = config.amp and torch_device.type == "cuda"
    probs = sliding_window_logits(models, image, window, stride, torch_device, amp, weighting)
    mask = probs.argmax(0).numpy().astype(np.uint8)
    write_mask(out, mask, config.dataset)
    blended = overlay(image, mask, config.dataset)
    atomic_write(over, lambda tmp: Image.fromarray(blended).save(tmp, format="PNG"))
    counts = np.bincount(mask.ravel(), minlength=NUM_CLASSES)
    _, h, w = image.shape
    padded_h, padded_w = max(h, window), max(w, window)
    n_windows = len(window_starts(padded_h, window, stride)) * len(window_starts(padded_w, window, stride))
    return {
        "mask": str(out),
        "overlay": str(over),
        "image": str(image_path),
        "height": h,
        "width": w,
        "model": model,
        "window": window,
        "window_source": source,
        "stride": stride,
        "windows": n_windows,
        "dataset": config.dataset,
        "shares": {
            name: float(c) / mask.size for name, c in zip(CLASS_NAMES[config.dataset], counts, strict=True)
        },
        "device": str(torch_device),
        "seconds": time.perf_counter() - start,
    }
