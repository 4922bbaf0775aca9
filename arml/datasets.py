"""Readers for LUAD-HistoSeg and BCSS-WSSS in their published layout (docs/paper_vs_code.md §1).

The layout, shared by the real data and the built-in synthetic data (:mod:`arml.synth`)::

    ROOT/train/<name>[a b c d].png      RGB patches; the image-level label sits in the file name
    ROOT/train_gt/<name>[a b c d].png   (synthetic only) pixel truth for the training split
    ROOT/train_PM/<NAME>/<same name>     pseudo masks written by stage 1 (palette PNG)
    ROOT/val/{img,mask}/<name>.png       validation patches and palette masks (indices 0..4)
    ROOT/test/{img,mask}/<name>.png      test patches and palette masks

Masks are PIL palette ("P") PNGs whose pixel values *are* class indices: 0..3 tissue, 4 = background or
excluded. They are read as indices and never converted to RGB.

Nothing bad passes silently: the readers raise an error naming the file for a truncated or undecodable
image or mask, a mask of the wrong size or with values outside 0..4. Checking a whole dataset before
anything trains on it (``arml data check``, the trainers' input validation, which dataset the names
spell) is :mod:`arml.data_check`.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from arml.options import DATASETS, EVAL_SPLITS, check_choice
from arml.runtime import atomic_write

NUM_CLASSES = 4
BACKGROUND = 4
IGNORE_INDEX = 255

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "luad": ("TE", "NEC", "LYM", "TAS"),
    "bcss": ("TUM", "STR", "LYM", "NEC"),
}
CLASS_LONG_NAMES: dict[str, tuple[str, ...]] = {
    "luad": ("tumour epithelium", "necrosis", "lymphocyte", "tumour-associated stroma"),
    "bcss": ("tumour", "stroma", "lymphocytic infiltrate", "necrosis"),
}
# Palette RGB for indices 0..4 (index 4: white background / exclude), docs/paper_vs_code.md §1.3.
PALETTES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "luad": ((205, 51, 51), (0, 255, 0), (65, 105, 225), (255, 165, 0), (255, 255, 255)),
    "bcss": ((255, 0, 0), (0, 255, 0), (0, 0, 255), (153, 0, 255), (255, 255, 255)),
}

_LABEL = re.compile(r"\[([^\[\]]*)\][^\[\]]*$")
_DIGITS = re.compile(r"^[01]( ?[01]){3}$")


def check_dataset(dataset: str) -> str:
    check_choice("dataset", dataset, DATASETS)
    return dataset


def parse_image_label(name: str | Path, dataset: str) -> tuple[int, int, int, int]:
    """Read the image-level label from a training file name.

    The label is the last ``[...]`` group of the name: four 0/1 digits, optionally separated by single
    spaces. LUAD writes ``1031280-2300-27920-[1 0 0 1].png`` (order TE, NEC, LYM, TAS); BCSS writes
    ``TCGA-…+0[1101].png`` (order TUM, STR, LYM, NEC). Both spellings are accepted for both datasets;
    ``dataset`` only validates the name of the dataset.

    Args:
        name: a bare file name or a path, with or without ``.png``.
        dataset: ``"luad"`` or ``"bcss"``.

    Returns:
        The four 0/1 flags in the dataset's class order.

    Raises:
        ValueError: the name has no final ``[...]`` group of exactly four 0/1 digits.

    >>> parse_image_label("1031280-2300-27920-[1 0 0 1].png", "luad")
    (1, 0, 0, 1)
    """
    check_dataset(dataset)
    base = Path(str(name)).name
    if base.endswith(".png"):
        base = base[: -len(".png")]
    match = _LABEL.search(base)
    if match is None or not _DIGITS.match(match.group(1)):
        raise ValueError(
            f"cannot read an image-level label from {str(name)!r}: expected the name to end with a "
            "'[a b c d]' or '[abcd]' group of four 0/1 digits (e.g. '1031280-2300-27920-[1 0 0 1].png')"
        )
    digits = match.group(1).replace(" ", "")
    return tuple(int(d) for d in digits)  # type: ignore[return-value]


def format_train_name(stem: str, label: tuple[int, ...] | np.ndarray, dataset: str) -> str:
    """Build a training file name carrying ``label`` in the dataset's own spelling.

    >>> format_train_name("000012-0-0-", (1, 0, 0, 1), "luad")
    '000012-0-0-[1 0 0 1].png'
    >>> format_train_name("img+0", (1, 1, 0, 1), "bcss")
    'img+0[1101].png'
    """
    check_dataset(dataset)
    flags = [int(v) for v in label]
    if len(flags) != NUM_CLASSES or any(v not in (0, 1) for v in flags):
        raise ValueError(f"label must be four 0/1 values, got {label!r}")
    sep = " " if dataset == "luad" else ""
    return f"{stem}[{sep.join(map(str, flags))}].png"


def palette_bytes(dataset: str) -> list[int]:
    """The flat 768-entry palette for PIL: the dataset's five colours, then black."""
    flat = [c for rgb in PALETTES[check_dataset(dataset)] for c in rgb]
    return flat + [0] * (768 - len(flat))


# What PIL raises on bad bytes: a truncated file ("image file is truncated"), a broken stream, a file that is
# not an image at all (UnidentifiedImageError), a bad chunk (SyntaxError).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error)


def _read_failure(path: str | Path, what: str, err: BaseException) -> BaseException:
    """The error to raise when reading ``path`` failed with ``err``: always one that names the file.

    The system refusing (missing file, permission, I/O: an ``OSError`` with an errno) stays an ``OSError``;
    bad bytes become a ``ValueError``.
    """
    if isinstance(err, OSError) and err.errno is not None:
        return err if err.filename is not None else OSError(err.errno, f"cannot read {path}: {err.strerror}")
    return ValueError(f"{path}: unreadable {what} ({type(err).__name__}: {err}); is the file truncated?")


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a palette PNG mask as an ``H×W`` uint8 array of class indices (decoded once).

    Args:
        path: the mask file.
        shape: when given, the ``(H, W)`` the mask must have (its image's).

    Raises:
        ValueError: naming the file: the PNG cannot be decoded (truncated, not a PNG), is not in palette
            ("P") or grey ("L") mode (so its values are not indices), has another shape than ``shape``, or
            holds values outside 0..4.
        OSError: the file cannot be opened (missing, permission); the message names it.
    """
    try:
        with Image.open(path) as img:
            mode = img.mode
            arr = np.array(img, dtype=np.uint8) if mode in ("P", "L") else None
    except DECODE_ERRORS as err:
        failure = _read_failure(path, "mask", err)
        if failure is err:
            raise
        raise failure from err
    if arr is None:
        raise ValueError(f"{path}: mask must be a palette ('P') PNG of class indices, found mode {mode!r}")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise ValueError(
            f"{path}: mask is {arr.shape[1]}×{arr.shape[0]} pixels but its image is {shape[1]}×{shape[0]}"
        )
    if arr.size and arr.max() > BACKGROUND:
        bad = np.unique(arr[arr > BACKGROUND])
        raise ValueError(f"{path}: mask values outside 0..{BACKGROUND}: {bad[:5].tolist()}")
    return arr


def write_mask(path: str | Path, mask: np.ndarray, dataset: str = "luad") -> Path:
    """Write an ``H×W`` index mask (values 0..4) as a palette PNG, atomically."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be H×W, got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > BACKGROUND):
        raise ValueError(f"mask values must lie in 0..{BACKGROUND}, found {mask.min()}..{mask.max()}")
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    img.putpalette(palette_bytes(dataset))
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def read_image(path: str | Path) -> torch.Tensor:
    """Read an RGB PNG as a ``3×H×W`` float tensor in [0, 1].

    Raises:
        ValueError: the file cannot be decoded (truncated, not an image); the message names it.
        OSError: the file cannot be opened (missing, permission); the message names it.
    """
    try:
        with Image.open(path) as img:
            arr = np.array(img.convert("RGB"), dtype=np.uint8)
    except DECODE_ERRORS as err:
        failure = _read_failure(path, "image", err)
        if failure is err:
            raise
        raise failure from err
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


def list_pngs(folder: str | Path) -> list[Path]:
    """Sorted ``*.png`` files directly inside ``folder`` (docs/paper_vs_code.md §8.15: always sort).

    Hidden files (names starting with ``.``, among them :func:`arml.runtime.atomic_write`'s temporary files
    left by a killed write) are skipped, and so are other suffixes (``.jpg``, ``.PNG``) and subfolders;
    :func:`check_layout` reports the last two.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix == ".png" and not p.name.startswith("."))


Transform = Callable[..., tuple]


@dataclass
class TrainDataset(Dataset):
    """The training split: image, multi-hot image-level label and name.

    Items are ``(image 3×H×W float in [0,1], label float tensor (4,), name)``. With ``mask_dir`` (a
    pseudo-mask folder such as ``ROOT/train_PM/NAME`` or the synthetic ``ROOT/train_gt``), items are
    ``(image, mask H×W int64, name)`` instead — the stage-2 training set.

    ``transform`` (optional) is called as ``transform(image)`` or ``transform(image, mask)`` and must
    return the same number of tensors.

    An unreadable or truncated image or mask, a mask of another size than its image or with values
    outside 0..4 raises a ``ValueError`` naming the file when the item is read (:func:`read_image`,
    :func:`read_mask`). :func:`validate_split` finds all of them before training starts.
    """

    root: str | Path
    dataset: str = "luad"
    mask_dir: str | Path | None = None
    transform: Transform | None = None
    files: list[Path] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_dataset(self.dataset)
        self.root = Path(self.root)
        self.files = list_pngs(self.root / "train")
        if not self.files:
            raise FileNotFoundError(f"no training images in {self.root / 'train'}")
        self.labels = [parse_image_label(p.name, self.dataset) for p in self.files]
        if self.mask_dir is not None:
            self.mask_dir = Path(self.mask_dir)
            missing = [p.name for p in self.files if not (self.mask_dir / p.name).exists()]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} training images have no mask in {self.mask_dir} (first: {missing[0]})"
                )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path = self.files[index]
        image = read_image(path)
        if self.mask_dir is None:
            if self.transform is not None:
                (image,) = self.transform(image)
            return image, torch.tensor(self.labels[index], dtype=torch.float32), path.name
        mask = torch.from_numpy(read_mask(self.mask_dir / path.name, image.shape[-2:]).astype(np.int64))
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask, path.name


class InMemory(Dataset):
    """A dataset whose items are decoded once and kept in memory (every epoch re-reads the same PNGs
    otherwise). Only for data that fits: :func:`in_memory` decides."""

    def __init__(self, dataset: Dataset) -> None:
        self.items = [dataset[i] for i in range(len(dataset))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


def in_memory(dataset: Dataset, max_bytes: int = 2**30) -> Dataset:
    """``dataset`` decoded into memory (:class:`InMemory`) if its items take at most ``max_bytes`` (judged
    from the first item), else ``dataset`` itself, read from disk on every access."""
    if len(dataset) == 0:
        return dataset
    first = dataset[0]
    size = sum(t.numel() * t.element_size() for t in first if isinstance(t, torch.Tensor))
    return InMemory(dataset) if size * len(dataset) <= max_bytes else dataset


@dataclass
class MaskedDataset(Dataset):
    """A val or test split: ``(image 3×H×W float in [0,1], mask H×W int64, name)``.

    Bad files raise a ``ValueError`` naming the file, as in :class:`TrainDataset`.
    """

    root: str | Path
    split: str = "val"
    transform: Transform | None = None
    files: list[Path] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.split not in EVAL_SPLITS:
            raise ValueError(f"split must be 'val' or 'test', got {self.split!r}")
        self.root = Path(self.root)
        self.files = list_pngs(self.root / self.split / "img")
        if not self.files:
            raise FileNotFoundError(f"no images in {self.root / self.split / 'img'}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path = self.files[index]
        image = read_image(path)
        mask_path = self.root / self.split / "mask" / path.name
        mask = torch.from_numpy(read_mask(mask_path, image.shape[-2:]).astype(np.int64))
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask, path.name


def label_to_classes(label: tuple[int, ...], dataset: str) -> list[str]:
    """The class abbreviations present in an image-level label."""
    return [n for n, v in zip(CLASS_NAMES[check_dataset(dataset)], label, strict=True) if v]
