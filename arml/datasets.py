"""Readers for LUAD-HistoSeg and BCSS-WSSS in their published layout (docs/paper_vs_code.md §1).

The layout, shared by the real data and the built-in synthetic data (:mod:`arml.synth`)::

    ROOT/train/<name>[a b c d].png      RGB patches; the image-level label sits in the file name
    ROOT/train_gt/<name>[a b c d].png   (synthetic only) pixel truth for the training split
    ROOT/train_PM/<NAME>/<same name>     pseudo masks written by stage 1 (palette PNG)
    ROOT/val/{img,mask}/<name>.png       validation patches and palette masks (indices 0..4)
    ROOT/test/{img,mask}/<name>.png      test patches and palette masks

Masks are PIL palette ("P") PNGs whose pixel values *are* class indices: 0..3 tissue, 4 = background or
excluded. They are read as indices and never converted to RGB.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from arml.options import DATASETS, check_choice
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


def _check_dataset(dataset: str) -> str:
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
    _check_dataset(dataset)
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
    _check_dataset(dataset)
    flags = [int(v) for v in label]
    if len(flags) != NUM_CLASSES or any(v not in (0, 1) for v in flags):
        raise ValueError(f"label must be four 0/1 values, got {label!r}")
    sep = " " if dataset == "luad" else ""
    return f"{stem}[{sep.join(map(str, flags))}].png"


def palette_bytes(dataset: str) -> list[int]:
    """The flat 768-entry palette for PIL: the dataset's five colours, then black."""
    flat = [c for rgb in PALETTES[_check_dataset(dataset)] for c in rgb]
    return flat + [0] * (768 - len(flat))


def read_mask(path: str | Path) -> np.ndarray:
    """Read a palette PNG mask as an ``H×W`` uint8 array of class indices.

    Raises:
        ValueError: the PNG is not in palette ("P") or grey ("L") mode, so its values are not indices.
    """
    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            raise ValueError(
                f"{path}: mask must be a palette ('P') PNG of class indices, found mode {img.mode!r}"
            )
        return np.array(img, dtype=np.uint8)


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
    """Read an RGB PNG as a ``3×H×W`` float tensor in [0, 1]."""
    with Image.open(path) as img:
        arr = np.array(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


def list_pngs(folder: str | Path) -> list[Path]:
    """Sorted ``*.png`` files directly inside ``folder`` (docs/paper_vs_code.md §8.15: always sort)."""
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
    """

    root: str | Path
    dataset: str = "luad"
    mask_dir: str | Path | None = None
    transform: Transform | None = None
    files: list[Path] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_dataset(self.dataset)
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
        mask = torch.from_numpy(read_mask(self.mask_dir / path.name).astype(np.int64))
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask, path.name


@dataclass
class MaskedDataset(Dataset):
    """A val or test split: ``(image 3×H×W float in [0,1], mask H×W int64, name)``."""

    root: str | Path
    split: str = "val"
    transform: Transform | None = None
    files: list[Path] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.split not in ("val", "test"):
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
        mask = torch.from_numpy(read_mask(self.root / self.split / "mask" / path.name).astype(np.int64))
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask, path.name


def label_to_classes(label: tuple[int, ...], dataset: str) -> list[str]:
    """The class abbreviations present in an image-level label."""
    return [n for n, v in zip(CLASS_NAMES[_check_dataset(dataset)], label, strict=True) if v]


@dataclass
class CheckReport:
    """What :func:`check_layout` found: a list of problems (each naming a file) and per-split counts."""

    root: Path
    dataset: str
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    label_frequency: dict[str, int] = field(default_factory=dict)
    pixel_frequency: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        names = CLASS_NAMES[self.dataset]
        lines = [f"dataset root: {self.root} ({self.dataset})"]
        lines += [f"  {split:<9} {n:>7} images" for split, n in self.counts.items()]
        if self.label_frequency:
            freq = ", ".join(f"{k} {v}" for k, v in self.label_frequency.items())
            lines.append(f"  train image-level labels: {freq}")
        for split, freq in self.pixel_frequency.items():
            shares = ", ".join(f"{k} {100 * v:.1f}%" for k, v in freq.items())
            lines.append(f"  {split} mask pixels: {shares}")
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  - {p}" for p in self.problems]
        else:
            lines.append(f"OK: no problems found (classes {', '.join(names)} + background 4)")
        return "\n".join(lines)


def _check_mask(path: Path, image_size: tuple[int, int] | None, problems: list[str]) -> np.ndarray | None:
    try:
        with Image.open(path) as img:
            mode, size = img.mode, img.size
            arr = np.array(img)
    except (OSError, ValueError) as err:
        problems.append(f"{path}: unreadable mask ({err})")
        return None
    if mode != "P":
        problems.append(
            f"{path}: mask is not a palette ('P') PNG (mode {mode!r}); values must be class indices"
        )
        return None
    if image_size is not None and size != image_size:
        problems.append(f"{path}: mask size {size} differs from its image size {image_size}")
    bad = np.unique(arr[arr > BACKGROUND])
    if bad.size:
        problems.append(f"{path}: mask values outside 0..{BACKGROUND}: {bad[:5].tolist()}")
    return arr


def _image_size(path: Path, problems: list[str]) -> tuple[int, int] | None:
    try:
        with Image.open(path) as img:
            if img.mode not in ("RGB", "RGBA"):
                problems.append(f"{path}: image mode {img.mode!r}, expected RGB")
            return img.size
    except OSError as err:
        problems.append(f"{path}: unreadable image ({err})")
        return None


def _check_pairs(img_dir: Path, mask_dir: Path, split: str, report: CheckReport, progress) -> None:
    names = CLASS_NAMES[report.dataset] + ("BG",)
    images = {p.name: p for p in list_pngs(img_dir)} if img_dir.is_dir() else {}
    masks = {p.name: p for p in list_pngs(mask_dir)} if mask_dir.is_dir() else {}
    for missing in sorted(set(images) - set(masks)):
        report.problems.append(f"{img_dir / missing}: no mask {mask_dir / missing}")
    for orphan in sorted(set(masks) - set(images)):
        report.problems.append(f"{mask_dir / orphan}: mask without an image in {img_dir}")
    counts = np.zeros(BACKGROUND + 1, dtype=np.int64)
    for name in progress(sorted(set(images) & set(masks)), desc=f"check {split}"):
        size = _image_size(images[name], report.problems)
        arr = _check_mask(masks[name], size, report.problems)
        if arr is not None:
            counts += np.bincount(arr[arr <= BACKGROUND].ravel(), minlength=BACKGROUND + 1)
    report.counts[split] = len(images)
    if counts.sum():
        report.pixel_frequency[split] = {
            n: float(c / counts.sum()) for n, c in zip(names, counts, strict=True)
        }


def check_layout(root: str | Path, dataset: str = "luad", progress: bool = False) -> CheckReport:
    """Check a dataset folder against the published layout without modifying anything.

    Reports every problem found, each naming its file: missing folders, training names without a
    parsable label, image/mask pairs that are missing or differ in size, masks that are not palette
    PNGs, mask values outside 0..4. Also counts images per split, image-level label frequencies and
    the share of each class among mask pixels. ``train_gt/`` (synthetic data) is checked like a split.
    """
    from tqdm.auto import tqdm

    def bar(items, desc):
        return tqdm(items, desc=desc, disable=not progress, leave=False)

    _check_dataset(dataset)
    root = Path(root)
    report = CheckReport(root=root, dataset=dataset)
    if not root.is_dir():
        report.problems.append(f"{root}: dataset root folder does not exist")
        return report
    for folder in ("train", "val/img", "val/mask", "test/img", "test/mask"):
        if not (root / folder).is_dir():
            report.problems.append(f"{root / folder}: missing folder")
    train = root / "train"
    if train.is_dir():
        files = list_pngs(train)
        report.counts["train"] = len(files)
        if not files:
            report.problems.append(f"{train}: no training images (*.png)")
        freq = np.zeros(NUM_CLASSES, dtype=np.int64)
        for path in bar(files, "check train"):
            try:
                freq += np.array(parse_image_label(path, dataset))
            except ValueError as err:
                report.problems.append(str(err))
            _image_size(path, report.problems)
        report.label_frequency = dict(zip(CLASS_NAMES[dataset], freq.tolist(), strict=True))
        if (root / "train_gt").is_dir():
            _check_pairs(train, root / "train_gt", "train_gt", report, bar)
    for split in ("val", "test"):
        if (root / split).is_dir():
            _check_pairs(root / split / "img", root / split / "mask", split, report, bar)
    return report
