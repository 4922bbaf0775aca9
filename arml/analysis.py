"""Analysis for the stage-1 notebooks (01–03): scoring pseudo masks against truth and where the noise is.

Also the numbers behind the stage-1 figures of :mod:`arml.viz` (which only draws): a fixed random sample
of a dataset's patches (:func:`sample_patches`), the steps of the LUAD background rule
(:func:`background_rule_steps`), one query's criss-cross attention (:func:`attention_map`), and the small
statistics figures print (:func:`mean_std`, :func:`rank_correlation`). The stage-2 counterparts (SWV
weights, L_st relations) live in :mod:`arml.loss_probes`.

The pseudo-mask functions work on plain arrays (``N×H×W`` integer masks with 0..3 tissue, 4 background, 255
ignored), so it applies to pseudo masks read from ``train_PM/<name>/`` and to masks made in memory from
:func:`arml.cams.collect_cams`. Pixel truth for the training split exists only for the built-in synthetic
data (``<root>/train_gt``); the real datasets have none, which is why the paper scores pseudo masks only
through the segmentation they train.

>>> import numpy as np
>>> truth = np.array([[0, 0, 1, 1]])
>>> boundary_distance(truth).tolist()
[[1.0, 0.0, 0.0, 1.0]]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from arml.datasets import BACKGROUND, NUM_CLASSES, list_pngs, parse_image_label, read_mask
from arml.metrics import SegmentationMetrics
from arml.runtime import to_numpy


def has_truth(root: str | Path) -> bool:
    """Whether ``root`` holds pixel truth for the training split (``train_gt/``; synthetic data only)."""
    return (Path(root) / "train_gt").is_dir()


def read_masks(folder: str | Path, names: Sequence[str]) -> np.ndarray:
    """Read the palette masks ``folder/<name>`` for ``names`` into an ``N×H×W`` uint8 array.

    Raises:
        FileNotFoundError: a mask is missing (the message names the first one).
    """
    folder = Path(folder)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(names)} masks missing in {folder} (first: {missing[0]})"
        )
    return np.stack([read_mask(folder / n) for n in names])


@dataclass(frozen=True)
class PatchSample:
    """Patches drawn by :func:`sample_patches`, in file order.

    Attributes:
        images: ``H×W×3`` uint8 RGB arrays.
        masks: per image an ``H×W`` index mask, or None (training split without ``train_gt``).
        labels: per image the four 0/1 class flags.
        total: how many patches the split holds (the sample is ``len(images)`` of them).
        synth: the folder's ``synth.json`` (synthetic data), or None for real data.
    """

    images: list[np.ndarray]
    masks: list[np.ndarray | None]
    labels: list[tuple[int, ...]]
    total: int
    synth: dict | None


def sample_patches(
    root: str | Path, split: str = "train", n: int = 16, dataset: str = "luad", seed: int = 0
) -> PatchSample:
    """Read ``n`` random patches of one split (drawn without replacement, fixed by ``seed``), for figures.

    ``train``: the image, its ``train_gt`` mask when that folder exists (synthetic data only) and the
    image-level label parsed from the file name. ``val``/``test``: the image, its mask and, as label, the
    classes present in the mask. Asking for more than the split holds returns all of it.

    Raises:
        ValueError: ``split`` is not ``train``, ``val`` or ``test``.
        FileNotFoundError: the split's image folder is missing or empty.
    """
    root = Path(root)
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    folder = root / "train" if split == "train" else root / split / "img"
    files = list_pngs(folder)
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    pick = sorted(np.random.default_rng(seed).choice(len(files), size=min(n, len(files)), replace=False))
    images, masks, labels = [], [], []
    for i in pick:
        path = files[i]
        with Image.open(path) as img:
            images.append(np.array(img.convert("RGB")))
        if split == "train":
            gt = root / "train_gt" / path.name
            masks.append(read_mask(gt) if gt.exists() else None)
            labels.append(parse_image_label(path.name, dataset))
        else:
            mask = read_mask(root / split / "mask" / path.name)
            masks.append(mask)
            labels.append(tuple(int((mask == c).any()) for c in range(NUM_CLASSES)))
    synth = root / "synth.json"
    meta = json.loads(synth.read_text()) if synth.exists() else None
    return PatchSample(images, masks, labels, len(files), meta)


def pseudo_masks_from_cams(collected: dict, config=None, dataset: str = "luad") -> torch.Tensor:
    """Pseudo masks ``N×H×W`` (int64, 0..3 and 4) from :func:`~arml.cams.collect_cams` output.

    :meth:`PseudoMaskConfig.to_masks <arml.pseudo_masks.PseudoMaskConfig.to_masks>` of ``config`` (default
    the released code's), exactly as :func:`~arml.pseudo_masks.generate_pseudo_masks` makes its files.
    """
    from arml.pseudo_masks import PseudoMaskConfig

    config = config or PseudoMaskConfig()
    return config.to_masks(collected["cams"], collected["labels"], collected["images"], dataset)


def pick_examples(labels, truth=None, n: int = 3, min_classes: int = 2) -> list[int]:
    """Indices of ``n`` examples whose image-level label has at least ``min_classes`` classes, for figures.

    With ``truth`` (``N×H×W``), the most balanced come first: sorted by the smallest share of a labelled
    class among the tissue pixels, largest first (ties keep file order). Deterministic.
    """
    labels = to_numpy(labels).astype(bool)
    candidates = [i for i in range(len(labels)) if labels[i].sum() >= min_classes]
    if truth is not None:
        truth = to_numpy(truth)

        def smallest_share(i: int) -> float:
            tissue = truth[i][truth[i] < BACKGROUND]
            counts = np.bincount(tissue, minlength=NUM_CLASSES)[: labels.shape[1]]
            return float(counts[labels[i]].min() / max(tissue.size, 1))

        candidates.sort(key=lambda i: -smallest_share(i))
    return candidates[:n]


def label_only_masks(collected: dict, config=None, dataset: str = "luad") -> torch.Tensor:
    """The floor any CAM must beat: every tissue pixel gets the *first* class of its image-level label.

    Built from :func:`pseudo_masks_from_cams` with spatially constant maps (1 for present classes, 0 for
    absent ones), so the background rule of ``config`` still applies. Single-class images come out exactly
    right, which is why this floor is high on data with many single-class patches.
    """
    labels = collected["labels"].float()
    height, width = collected["images"].shape[-2:]
    flat = {**collected, "cams": labels[:, :, None, None].expand(-1, -1, height, width)}
    return pseudo_masks_from_cams(flat, config, dataset)


def label_floor(truth) -> dict[str, object]:
    """The label-only floor of a split with pixel truth (the reference line "floor" of notebook 06).

    Every tissue pixel of an image gets the first class present in its truth, i.e. what a segmenter that
    knew each image's label and nothing else would score (:func:`label_only_masks` on CAM inputs). Returns
    :func:`score_masks` of those masks.

    >>> truth = np.array([[[0, 0], [1, 4]]])   # one 2×2 image: classes 0 and 1, one excluded pixel
    >>> round(label_floor(truth)["miou"], 3)      # class 0: IoU 2/3; class 1: IoU 0
    0.333
    """
    truth = to_numpy(truth).astype(np.int64)
    if truth.ndim != 3:
        raise ValueError(f"need truth masks N×H×W, got shape {truth.shape}")
    pred = np.full_like(truth, BACKGROUND)
    for i, mask in enumerate(truth):
        present = np.unique(mask[mask < NUM_CLASSES])
        if present.size:
            pred[i][mask < NUM_CLASSES] = present[0]
    return score_masks(pred, truth)


def absent_class_rate(masks, labels) -> float:
    """Fraction of tissue-labelled pixels (0..K-1) whose class is absent from the image-level label.

    Label gating should make this 0; it is not when every present class's map is 0 at a pixel (common with
    ReLU-ed maps) and the argmax resolves the tie to the lowest class index.
    """
    masks, labels = to_numpy(masks).astype(np.int64), to_numpy(labels).astype(bool)
    if masks.ndim != 3 or labels.shape != (masks.shape[0], labels.shape[-1]):
        raise ValueError(f"need masks N×H×W and labels N×K, got {masks.shape} and {labels.shape}")
    tissue = masks < labels.shape[1]
    present = np.take_along_axis(labels[:, :, None, None], np.where(tissue, masks, 0)[:, None], axis=1)[:, 0]
    return float((tissue & ~present).sum() / max(tissue.sum(), 1))


def score_masks(pred, truth, num_classes: int = NUM_CLASSES) -> dict[str, object]:
    """Score pseudo masks against truth with the paper's protocol (:class:`~arml.metrics.SegmentationMetrics`).

    Args:
        pred: ``N×H×W`` (or ``H×W``) predicted indices; 4 = background.
        truth: the same shape; pixels with truth 4 or 255 are not scored.
        num_classes: ``K`` tissue classes.

    Returns:
        The metrics dict (``miou``, ``iou``, ``dice``, ``acc``, ``fwiou``, ``pixels``; fractions) plus
        ``confusion``: the ``K×K`` matrix (rows truth, columns prediction) normalised so each row sums to 1
        over the tissue predictions (NaN for a class absent from the truth), and ``background_rate``: per
        true class, the fraction of its pixels the pseudo mask calls background (not in ``confusion``).
    """
    pred, truth = to_numpy(pred), to_numpy(truth)
    scorer = SegmentationMetrics(num_classes)
    scorer.update(pred, truth)
    result = scorer.compute()
    counts = scorer.confusion_matrix.astype(np.float64)
    support = np.array([(truth == c).sum() for c in range(num_classes)], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        result["confusion"] = counts / counts.sum(axis=1, keepdims=True)
        result["background_rate"] = 1.0 - counts.sum(axis=1) / support
    return result


def error_pixels(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    """Which pixels count and which are wrong when a mask is scored against ``truth``: ``(scored, wrong)``.

    ``scored``: truth is tissue (0..3; truth 4 and 255 are not scored, as in :func:`score_masks`);
    ``wrong``: scored and ``pred`` differs (background 4 included). Boolean arrays of the input shape.
    """
    pred, truth = to_numpy(pred), to_numpy(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth must have the same shape, got {pred.shape} and {truth.shape}")
    scored = truth < BACKGROUND
    return scored, scored & (pred != truth)


def confusable_pairs(confusion, class_names: Sequence[str], top: int = 3) -> list[tuple[str, str, float]]:
    """The ``top`` largest off-diagonal entries of a row-normalised confusion matrix.

    Returns ``(true class, predicted class, fraction of the true class's pixels)`` tuples, largest first.
    """
    conf = np.nan_to_num(np.array(confusion, dtype=np.float64))
    np.fill_diagonal(conf, -1.0)
    order = np.argsort(conf, axis=None)[::-1][:top]
    return [
        (class_names[i], class_names[j], float(conf[i, j]))
        for i, j in zip(*np.unravel_index(order, conf.shape), strict=True)
    ]


def boundary_distance(truth) -> np.ndarray:
    """Euclidean distance (pixels) of every pixel to the nearest class boundary of ``truth``.

    A pixel is on a boundary (distance 0) when a 4-neighbour has another label (background 4 counts as a
    label). Works on ``H×W`` or ``N×H×W`` (each image separately). An image with a single label has no
    boundary; its distances are ``inf``.
    """
    truth = to_numpy(truth)
    if truth.ndim == 3:
        return np.stack([boundary_distance(t) for t in truth])
    if truth.ndim != 2:
        raise ValueError(f"truth must be H×W or N×H×W, got shape {truth.shape}")
    edge = np.zeros(truth.shape, dtype=bool)
    vertical = truth[1:] != truth[:-1]
    horizontal = truth[:, 1:] != truth[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    if not edge.any():
        return np.full(truth.shape, np.inf)
    return ndimage.distance_transform_edt(~edge)


def _binned_error(values: np.ndarray, wrong: np.ndarray, edges: Sequence[float]) -> dict[str, list]:
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"edges must be an increasing sequence of at least 2 numbers, got {edges.tolist()}")
    which = np.digitize(values, edges) - 1
    if np.isposinf(edges[-1]):
        which[np.isposinf(values)] = edges.size - 2  # "infinitely far" belongs to the open last bin
    inside = (which >= 0) & (which < edges.size - 1)
    n = np.bincount(which[inside], minlength=edges.size - 1)
    bad = np.bincount(which[inside], weights=wrong[inside].astype(np.float64), minlength=edges.size - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        error = bad / n
    return {"edges": edges.tolist(), "error": error.tolist(), "pixels": n.tolist()}


def error_by_distance(
    pred, truth, edges: Sequence[float] = (0, 1, 2, 3, 5, 8, 13, np.inf)
) -> dict[str, list]:
    """Pseudo-mask error rate as a function of the distance to the nearest true class boundary.

    Only tissue pixels (truth 0..3) count; a pixel is wrong when the pseudo mask gives it another index
    (background included). Bin ``b`` holds distances in ``[edges[b], edges[b+1])``; pixels of an image without
    any boundary are infinitely far and land in the last bin when ``edges[-1]`` is ``inf``.

    Returns:
        ``{"edges", "error", "pixels"}``: the edges, the error rate per bin (NaN for an empty bin) and the
        number of pixels per bin.
    """
    pred, truth = to_numpy(pred), to_numpy(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth must have the same shape, got {pred.shape} and {truth.shape}")
    dist = boundary_distance(truth)
    keep = truth < BACKGROUND
    return _binned_error(dist[keep], (pred != truth)[keep], edges)


def error_by_region_size(
    pred, truth, edges: Sequence[float] = (0, 16, 64, 256, 1024, np.inf)
) -> dict[str, list]:
    """Pseudo-mask error rate of tissue pixels grouped by the area of the true region they belong to.

    Regions are the 4-connected components of each class in the truth; every pixel gets
    the area of its region, then errors are binned as in :func:`error_by_distance` (edges in pixels).
    """
    pred, truth = to_numpy(pred), to_numpy(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth must have the same shape, got {pred.shape} and {truth.shape}")
    pred, truth = (pred[None], truth[None]) if truth.ndim == 2 else (pred, truth)
    area = np.zeros(truth.shape, dtype=np.float64)
    for n, image in enumerate(truth):
        for cls in range(NUM_CLASSES):
            labelled, count = ndimage.label(image == cls)
            if count:
                sizes = np.bincount(labelled.ravel(), minlength=count + 1).astype(np.float64)
                area[n][labelled > 0] = sizes[labelled[labelled > 0]]
    keep = truth < BACKGROUND
    return _binned_error(area[keep], (pred != truth)[keep], edges)


def attention_map(a_col, a_row, i: int, j: int) -> np.ndarray:
    """Paint the criss-cross attention of the query pixel ``(i, j)`` into an ``H×W`` map.

    ``a_col`` (``H×W×H``) and ``a_row`` (``H×W×W``) are one image's blocks from
    :meth:`arml.ars.CrissCrossAttention.attention`. Column ``j`` receives ``a_col[i, j, :]``, row ``i``
    receives ``a_row[i, j, :]`` (the query itself appears in both blocks and its weights add); every other
    pixel is 0. Under the paper recipe the map sums to 1.
    """
    a_col, a_row = to_numpy(a_col), to_numpy(a_row)
    if a_col.ndim != 3 or a_row.ndim != 3 or a_col.shape[:2] != a_row.shape[:2]:
        raise ValueError(f"need a_col H×W×H and a_row H×W×W, got {a_col.shape} and {a_row.shape}")
    height, width = a_col.shape[:2]
    if not (0 <= i < height and 0 <= j < width):
        raise ValueError(f"query ({i}, {j}) lies outside the {height}×{width} feature map")
    out = np.zeros((height, width), dtype=np.float64)
    out[:, j] += a_col[i, j]
    out[i, :] += a_row[i, j]
    return out


def background_rule_steps(
    rgb, threshold: float = 200.0, min_size: int = 50
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The LUAD background rule on one ``H×W×3`` uint8 image, step by step: ``(grey, white, kept)``.

    ``grey``: the ITU-R 601 luma on the 0..255 scale (:func:`arml.cams.grey_level`); ``white``:
    ``grey > threshold``; ``kept``: the background mask after white blobs smaller than ``min_size`` pixels
    are dropped (:func:`arml.cams.background_mask`). ``white & ~kept`` are the specks the size rule removes.
    """
    from arml.cams import background_mask, grey_level

    rgb = to_numpy(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be an H×W×3 uint8 image, got shape {rgb.shape} and dtype {rgb.dtype}")
    x = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)[None]
    grey = grey_level(x)[0].numpy()
    return grey, grey > threshold, background_mask(x, threshold, min_size)[0].numpy()


def mean_std(value) -> tuple[float, float]:
    """``(mean, std)`` of a score stored as a pair or a bare number (std 0); a None mean is NaN, a None or
    non-finite std is 0 (one seed: no spread to show).

    >>> mean_std((52.5, None)), mean_std(49)
    ((52.5, 0.0), (49.0, 0.0))
    """
    mean, std = value if isinstance(value, tuple | list) else (value, 0.0)
    mean = np.nan if mean is None else float(mean)
    return mean, 0.0 if std is None or not np.isfinite(std) else float(std)


def rank_correlation(x, y) -> float:
    """Spearman's rank correlation ρ of two equally long samples (flattened); NaN below three points.

    ρ is the Pearson correlation of the ranks: +1 when ``y`` grows with ``x`` (not necessarily linearly),
    −1 when it falls.
    """
    from scipy.stats import spearmanr

    x, y = to_numpy(x).astype(np.float64).ravel(), to_numpy(y).astype(np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in size ({x.size} vs {y.size})")
    return float(spearmanr(x, y).statistic) if x.size > 2 else float("nan")
