"""Checking a dataset before anything trains on it (``arml data check``; docs/paper_vs_code.md §1).

* :func:`check_layout` decodes every image and mask of a dataset root and reports every problem, each naming
  its file: missing folders, unparsable names, truncated files, files the loaders would skip (``.jpg``,
  subfolders), image/mask pairs that are missing or differ in size, masks that are not palette PNGs, mask
  values outside 0..4. It never modifies anything.
* :func:`validate_split` raises on the first problems of one split: the trainers call it before epoch 1.
* :func:`name_grammar`, :func:`detect_dataset`, :func:`require_dataset` tell LUAD-HistoSeg from BCSS-WSSS by
  the spelling of the training names (or the synthetic data's ``synth.json``), so a ``--dataset`` that does
  not fit the data is an error instead of a silent relabelling of every class.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from arml.datasets import (
    BACKGROUND,
    CLASS_NAMES,
    DECODE_ERRORS,
    NUM_CLASSES,
    check_dataset,
    list_pngs,
    parse_image_label,
)
from arml.options import DATASETS, EVAL_SPLITS

# ------------------------------------------------------------------------------- which dataset is this?
_GRAMMAR = {
    "luad": re.compile(r"\[[01]( [01]){3}\]\.png$"),  # LUAD-HistoSeg: …-[1 0 0 1].png (spaces)
    "bcss": re.compile(r"\[[01]{4}\]\.png$"),  # BCSS-WSSS: …+0[1101].png (no spaces)
}
_GRAMMAR_TEXT = {
    "luad": "the LUAD-HistoSeg grammar '…-[a b c d].png' (spaces)",
    "bcss": "the BCSS-WSSS grammar '…+N[abcd].png' (no spaces)",
}


def name_grammar(name: str | Path) -> str | None:
    """Which dataset's spelling a training file name uses: ``"luad"`` (``[1 0 0 1]``, spaces), ``"bcss"``
    (``[1101]``, none) or None (neither, e.g. ``[1 0 01]`` or no label).

    >>> name_grammar("1031280-2300-27920-[1 0 0 1].png"), name_grammar("TCGA-…+0[1101].png")
    ('luad', 'bcss')
    """
    base = Path(str(name)).name
    return next((ds for ds, pattern in _GRAMMAR.items() if pattern.search(base)), None)


@dataclass
class _Evidence:
    """What a dataset root says about which dataset it is."""

    names: dict[str, list[str]]  # grammar -> training file names using it
    synth: str | None  # the "dataset" in synth.json, when there is one

    @property
    def by_names(self) -> str | None:
        luad, bcss = len(self.names["luad"]), len(self.names["bcss"])
        return None if luad == bcss else ("luad" if luad > bcss else "bcss")

    @property
    def detected(self) -> str | None:
        return self.synth or self.by_names

    def describe(self, dataset: str) -> str:
        """Why the data is ``dataset``: what synth.json and the training names say."""
        parts = []
        if self.synth == dataset:
            parts.append(f"its synth.json says dataset {dataset!r}")
        names = self.names[dataset]
        if names:
            total = sum(len(v) for v in self.names.values())
            parts.append(
                f"{len(names)} of its {total} training names follow {_GRAMMAR_TEXT[dataset]}, e.g. {names[0]!r}"
            )
        return " and ".join(parts)


def _evidence(root: Path) -> _Evidence:
    names: dict[str, list[str]] = {"luad": [], "bcss": [], "other": []}
    train = root / "train"
    if train.is_dir():
        for path in list_pngs(train):
            names[name_grammar(path.name) or "other"].append(path.name)
    synth = None
    try:
        found = json.loads((root / "synth.json").read_text()).get("dataset")
        synth = found if found in DATASETS else None
    except (OSError, ValueError, AttributeError):
        pass
    return _Evidence(names, synth)


def detect_dataset(root: str | Path) -> str | None:
    """Which dataset a root holds: ``"luad"``, ``"bcss"`` or None when nothing tells.

    ``synth.json`` (the built-in data) decides when it names a dataset; otherwise the spelling of the
    training names does (:func:`name_grammar`: LUAD-HistoSeg ``…-[a b c d].png`` with spaces, BCSS-WSSS
    ``…+N[abcd].png`` without), by majority. None: no ``train/`` images, or as many names of each kind.
    """
    return _evidence(Path(root)).detected


def _mismatch(root: Path, dataset: str, evidence: _Evidence) -> str | None:
    """Why ``dataset`` does not fit ``root`` (None: it fits, or nothing tells)."""
    detected = evidence.detected
    if detected is None or detected == dataset:
        return None
    names = ", ".join(CLASS_NAMES[detected])
    return (
        f"{root}: --dataset {dataset} does not fit this data: {evidence.describe(detected)}; "
        f"use --dataset {detected} (classes {names}), or every report would name the classes wrongly"
    )


def require_dataset(root: str | Path, dataset: str) -> None:
    """Raise unless ``dataset`` fits the data in ``root`` (see :func:`detect_dataset`).

    For the trainers: a BCSS run on LUAD-named data (or the reverse) would read the labels in the other
    class order, and every report would relabel the classes. Nothing is raised when nothing tells.

    Raises:
        ValueError: naming the root, what ``synth.json`` and the training names say, and the ``--dataset``
            value that fits.
    """
    message = _mismatch(Path(root), check_dataset(dataset), _evidence(Path(root)))
    if message is not None:
        raise ValueError(message)


# ----------------------------------------------------------------------------------------------- checks
@dataclass
class CheckReport:
    """What :func:`check_layout` found: a list of problems (each naming a file) and per-split counts.

    ``notes`` are things worth knowing that are not problems (hidden files the loaders skip);
    ``detected`` is what :func:`detect_dataset` says.
    """

    root: Path
    dataset: str
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    label_frequency: dict[str, int] = field(default_factory=dict)
    pixel_frequency: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    detected: str | None = None

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
        lines += [f"  note: {n}" for n in self.notes]
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  - {p}" for p in self.problems]
        else:
            lines.append(f"OK: no problems found (classes {', '.join(names)} + background 4)")
        return "\n".join(lines)


def _check_entries(folder: Path, report: CheckReport, allowed: tuple[str, ...] = ()) -> None:
    """Report what the loaders would silently skip in ``folder``: other suffixes and subfolders."""
    skipped = []
    hidden = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            hidden.append(entry)
        elif entry.is_dir():
            report.problems.append(f"{entry}: a folder; the loaders do not look into subfolders of {folder}")
        elif entry.suffix != ".png" and entry.name not in allowed:
            skipped.append(entry)
    for entry in skipped:
        report.problems.append(
            f"{entry}: not a '.png' file; the loaders skip it (they read only lower-case '*.png' files)"
        )
    if hidden:
        report.notes.append(
            f"{folder}: {len(hidden)} hidden file(s) skipped by the loaders (first: {hidden[0].name})"
        )


def _check_image(path: Path, problems: list[str]) -> tuple[int, int] | None:
    """Decode ``path`` fully (a truncated file fails only here); its size, or None when unreadable."""
    try:
        with Image.open(path) as img:
            img.load()
            mode, size = img.mode, img.size
    except DECODE_ERRORS as err:
        problems.append(f"{path}: unreadable image ({type(err).__name__}: {err})")
        return None
    if mode not in ("RGB", "RGBA"):
        problems.append(f"{path}: image mode {mode!r}, expected RGB")
    return size


def _check_mask(path: Path, image_size: tuple[int, int] | None, problems: list[str]) -> np.ndarray | None:
    try:
        with Image.open(path) as img:
            mode, size = img.mode, img.size
            arr = np.array(img)  # decodes fully: a truncated mask fails here
    except DECODE_ERRORS as err:
        problems.append(f"{path}: unreadable mask ({type(err).__name__}: {err})")
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


def _check_pairs(
    img_dir: Path,
    mask_dir: Path,
    split: str,
    report: CheckReport,
    progress,
    sizes: dict[str, tuple[int, int] | None] | None = None,
    allowed: tuple[str, ...] = (),
) -> None:
    """Images and masks of one split, decoded fully; ``sizes`` holds images already decoded (by name)."""
    names = CLASS_NAMES[report.dataset] + ("BG",)
    for folder in (img_dir, mask_dir):
        if folder.is_dir() and (sizes is None or folder != img_dir):
            _check_entries(folder, report, allowed if folder == mask_dir else ())
    images = {p.name: p for p in list_pngs(img_dir)} if img_dir.is_dir() else {}
    masks = {p.name: p for p in list_pngs(mask_dir)} if mask_dir.is_dir() else {}
    for missing in sorted(set(images) - set(masks)):
        report.problems.append(f"{img_dir / missing}: no mask {mask_dir / missing}")
    for orphan in sorted(set(masks) - set(images)):
        report.problems.append(f"{mask_dir / orphan}: mask without an image in {img_dir}")
    counts = np.zeros(BACKGROUND + 1, dtype=np.int64)
    for name in progress(sorted(set(images) & set(masks)), desc=f"check {split}"):
        if sizes is not None and name in sizes:
            size = sizes[name]
        else:
            size = _check_image(images[name], report.problems)
        arr = _check_mask(masks[name], size, report.problems)
        if arr is not None:
            counts += np.bincount(arr[arr <= BACKGROUND].ravel(), minlength=BACKGROUND + 1)
    report.counts[split] = len(images)
    if counts.sum():
        report.pixel_frequency[split] = {
            n: float(c / counts.sum()) for n, c in zip(names, counts, strict=True)
        }


def _check_train(
    root: Path, report: CheckReport, bar, evidence: _Evidence
) -> dict[str, tuple[int, int] | None]:
    """``train/``: names, labels, the dataset's grammar, every image decoded; returns the image sizes."""
    train = root / "train"
    _check_entries(train, report)
    files = list_pngs(train)
    report.counts["train"] = len(files)
    if not files:
        report.problems.append(f"{train}: no training images (*.png)")
    mismatch = _mismatch(root, report.dataset, evidence)
    if mismatch is not None:
        report.problems.append(mismatch)
    elif evidence.synth is not None and evidence.by_names not in (None, evidence.synth):
        report.problems.append(
            f"{root}: synth.json says dataset {evidence.synth!r} but the training names follow "
            f"{_GRAMMAR_TEXT[evidence.by_names]}"
        )
    main = evidence.detected or report.dataset
    for other in DATASETS:
        stray = evidence.names[other]
        if other != main and stray and evidence.names[main]:
            report.problems.append(
                f"{train}: {len(stray)} training name(s) follow {_GRAMMAR_TEXT[other]} while "
                f"{len(evidence.names[main])} follow {_GRAMMAR_TEXT[main]}; mixed datasets? (first: {stray[0]})"
            )
    freq = np.zeros(NUM_CLASSES, dtype=np.int64)
    sizes: dict[str, tuple[int, int] | None] = {}
    for path in bar(files, "check train"):
        try:
            freq += np.array(parse_image_label(path, report.dataset))
        except ValueError as err:
            report.problems.append(str(err))
        sizes[path.name] = _check_image(path, report.problems)
    report.label_frequency = dict(zip(CLASS_NAMES[report.dataset], freq.tolist(), strict=True))
    return sizes


def _progress_bar(progress: bool):
    from tqdm.auto import tqdm

    def bar(items, desc):
        return tqdm(items, desc=desc, disable=not progress, leave=False, unit="file")

    return bar


def check_layout(root: str | Path, dataset: str = "luad", progress: bool = False) -> CheckReport:
    """Check a dataset folder against the published layout without modifying anything.

    Reports every problem found, each naming its file:

    - missing folders; files the loaders would skip silently (another suffix such as ``.jpg`` or ``.PNG``,
      subfolders) in ``train/``, ``train_gt/`` and ``val|test/{img,mask}/``; hidden files are only noted;
    - ``dataset`` not fitting the data (:func:`detect_dataset`: ``synth.json`` or the training names'
      spelling), and training names mixing both spellings;
    - training names without a parsable label;
    - images and masks that cannot be decoded: every file is decoded in full, so a truncated PNG is found
      here and not hours into training;
    - image/mask pairs that are missing or differ in size, masks that are not palette PNGs, mask values
      outside 0..4.

    Also counts images per split, image-level label frequencies and the share of each class among mask
    pixels. ``train_gt/`` (synthetic data) is checked like a split; ``train_PM/`` is not checked.

    Speed: decoding every file dominates. Measured in one process on 2 CPU cores busy with a training run:
    600–700 224-px RGB patches/s (synthetic tissue, and tissue with added noise: 120 KB PNGs), about
    4,000 224-px masks/s, and for the cpu synthetic profile (600 64-px images, 600 masks) 0.2 s in all.
    LUAD-HistoSeg (16,678 train patches and 607 val/test pairs at 224 px) therefore takes about 30 s
    (27 s for the images, 0.2 s for the masks); BCSS-WSSS (23,422 + 8,404 pairs) about 50 s.
    ``progress=True`` shows a bar per split.
    """
    check_dataset(dataset)
    bar = _progress_bar(progress)
    root = Path(root)
    report = CheckReport(root=root, dataset=dataset)
    if not root.is_dir():
        report.problems.append(f"{root}: dataset root folder does not exist")
        return report
    for folder in ("train", "val/img", "val/mask", "test/img", "test/mask"):
        if not (root / folder).is_dir():
            report.problems.append(f"{root / folder}: missing folder")
    evidence = _evidence(root)
    report.detected = evidence.detected
    if (root / "train").is_dir():
        sizes = _check_train(root, report, bar, evidence)
        if (root / "train_gt").is_dir():
            _check_pairs(root / "train", root / "train_gt", "train_gt", report, bar, sizes=sizes)
    for split in EVAL_SPLITS:
        if (root / split).is_dir():
            _check_pairs(root / split / "img", root / split / "mask", split, report, bar)
    return report


def validate_split(
    root: str | Path,
    split: str,
    dataset: str,
    masks_dir: str | Path | None = None,
    progress: bool = False,
    limit: int = 5,
) -> None:
    """Check one split before training on it, as :func:`check_layout` would; raise if anything is wrong.

    ``split="train"`` checks ``train/`` (files the loaders would skip, the dataset's name grammar, labels,
    every image decoded) and, with ``masks_dir`` (a ``train_PM/<name>`` folder or ``train_gt``), that every
    image has a mask of its size with values 0..4. ``"val"``/``"test"`` check the image/mask pairs. Costs
    one full decode of the split (LUAD-HistoSeg's 16,678 training patches: about 30 s, see
    :func:`check_layout`).

    Raises:
        ValueError: the number of problems and the first ``limit`` of them, each naming its file.
    """
    check_dataset(dataset)
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    bar = _progress_bar(progress)
    root = Path(root)
    report = CheckReport(root=root, dataset=dataset)
    if split == "train":
        folders = [root / "train"] + ([Path(masks_dir)] if masks_dir is not None else [])
    else:
        folders = [root / split / "img", root / split / "mask"]
    report.problems += [f"{f}: missing folder" for f in folders if not f.is_dir()]
    if not report.problems:
        if split == "train":
            sizes = _check_train(root, report, bar, _evidence(root))
            if masks_dir is not None:
                # a pseudo-mask folder also holds its manifest.json
                _check_pairs(root / "train", Path(masks_dir), "masks", report, bar, sizes, ("manifest.json",))
        else:
            _check_pairs(folders[0], folders[1], split, report, bar)
    if report.problems:
        shown = "\n".join(f"  - {p}" for p in report.problems[:limit])
        more = len(report.problems) - limit
        raise ValueError(
            f"{root}: the {split} split fails the data check ({len(report.problems)} problem(s)):\n{shown}"
            + (
                f"\n  … and {more} more; `arml data check {root} --dataset {dataset}` lists all"
                if more > 0
                else ""
            )
        )
