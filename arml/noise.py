"""A noise laboratory: the true training masks, corrupted the way CAM pseudo masks go wrong.

Stage 2 never sees the truth, only pseudo masks made from CAMs. How much does each *kind* of CAM error
hurt, and how well do SWV and SRM resist it? Real pseudo masks mix every error at once; this module makes
one kind at a time, at a chosen amount, from the synthetic data's ``train_gt/``: ``boundary`` (a CAM
spills over an edge), ``swap`` (a CAM fires for the wrong class), ``drop`` (CAMs miss small regions) and
``blur`` (CAMs are coarse). Each is a pure function ``kind(mask, classes, strength, rng) -> mask`` on one
``H×W`` uint8 mask, whose docstring says which CAM error it mimics; background (4) never changes and
never counts. :func:`corrupt_dataset` turns the user-facing knob, the ``rate`` of wrong tissue pixels
over the training set (:func:`wrong_fraction`), into a strength and writes ``<root>/train_PM/<name>/``
with a ``manifest.json`` (``method: "noise"``) that stage 2 takes like real pseudo masks
(``SegConfig(root, masks=name)``).

How the rate is met: ``boundary``, ``swap`` and ``drop`` give every pixel the strength at which it goes
wrong (its distance to the growing class, its region's random draw, its region's size), scaled per image
by a random factor in [0.5, 1.5] (``swap``: 1) so that pixels of different images do not flip all at
once; the strength is the quantile of those thresholds that makes the requested count wrong, so the rate
is off by at most one region or one distance ring of one image (≤ 0.001 on the ``cpu`` data). ``blur``
bisects its cell size (≤ 0.001 there too). Further than :data:`RATE_TOLERANCE` from the request, or
above the kind's maximum, is a ``ValueError``.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from arml.datasets import BACKGROUND, NUM_CLASSES, TrainDataset, list_pngs, read_mask, write_mask
from arml.metrics import SegmentationMetrics
from arml.options import NOISE_KINDS, check_choice
from arml.pseudo_masks import MANIFEST, _prepare_folder, _up_to_date, read_manifest
from arml.runfolder import check_inputs, data_record, folder_fingerprint, validate_inputs
from arml.runtime import to_jsonable, write_json

MAX_RATE = 0.9
RATE_TOLERANCE = 0.01  # |achieved - requested| allowed before corrupt_dataset refuses
_CROSS = ndimage.generate_binary_structure(2, 1)  # regions are 4-connected


def wrong_fraction(masks, truths) -> float:
    """Fraction of tissue pixels (truth 0..3) whose mask value differs from the truth; NaN without tissue.

    ``masks`` and ``truths``: one ``H×W`` array each, or sequences of them (pooled, not averaged).
    """
    if isinstance(truths, np.ndarray):
        masks, truths = [masks], [truths]
    wrong = tissue = 0
    for mask, truth in zip(masks, truths, strict=True):
        keep = np.asarray(truth) != BACKGROUND
        wrong += int((np.asarray(mask)[keep] != np.asarray(truth)[keep]).sum())
        tissue += int(keep.sum())
    return wrong / tissue if tissue else float("nan")


def _present(mask: np.ndarray) -> list[int]:
    return [c for c in range(NUM_CLASSES) if (mask == c).any()]


def _apply(mask: np.ndarray, plan, strength: float, scale: float = 1.0) -> np.ndarray:
    """Pixels whose threshold ``t / scale`` is at most ``strength`` take their planned label."""
    t, label = plan
    return np.where(t / scale <= strength, label, mask).astype(np.uint8)


def _plan_boundary(mask, classes, rng):
    """Per pixel: the distance to the nearest class that beats its own at their boundary, and that class.

    For each pair of present classes one grows into the other (a fair coin; only label classes grow: a
    CAM spills only for a class it fires for). Distances are Euclidean, to the class's pixels in the truth.
    """
    present = _present(mask)
    dist = {c: ndimage.distance_transform_edt(mask != c) for c in present}
    t, label = np.full(mask.shape, np.inf), mask.copy()
    for i, a in enumerate(present):
        for b in present[i + 1 :]:
            coin = rng.random() < 0.5  # one draw per pair whatever the label: the stream stays aligned
            grows = [c for c in ((a, b) if coin else (b, a)) if c in classes][:1]
            for winner in grows:
                loser = b if winner == a else a
                better = (mask == loser) & (dist[winner] < t)
                t[better], label[better] = dist[winner][better], winner
    return t, label


def _regions(mask):
    """4-connected regions of each tissue class: ids (0 = background) and the class of each id."""
    ids, classes, offset = np.zeros(mask.shape, np.int64), [BACKGROUND], 0
    for c in _present(mask):
        lab, n = ndimage.label(mask == c, structure=_CROSS)
        ids[lab > 0] = lab[lab > 0] + offset
        classes += [c] * n
        offset += n
    return ids, np.array(classes, np.uint8)


def _plan_swap(mask, classes, rng):
    """Per region: a draw in (0, 1] (swapped when it is at most the strength) and another label class."""
    ids, region_class = _regions(mask)
    n = len(region_class) - 1
    draw = np.concatenate([[np.inf], 1.0 - rng.random(n)])  # region order: by class, then scan order
    pick, target = rng.integers(0, NUM_CLASSES, n + 1), region_class.copy()
    for r in range(1, n + 1):
        others = [c for c in sorted(classes) if c != region_class[r]]
        target[r] = others[pick[r] % len(others)] if others else target[r]
        draw[r] = draw[r] if others else np.inf  # the label allows no other class
    return draw[ids], target[ids]


def _plan_drop(mask, classes, rng):
    """Per region: its size (dropped when at most the strength) and the class of its largest neighbour
    among the larger regions; a region with no larger neighbour (each image's largest) is never dropped."""
    ids, region_class = _regions(mask)
    size = np.bincount(ids.ravel(), minlength=len(region_class)).astype(float)
    a = np.concatenate([ids[1:].ravel(), ids[:, 1:].ravel()])  # 4-neighbours: below and right
    b = np.concatenate([ids[:-1].ravel(), ids[:, :-1].ravel()])
    touch = (a > 0) & (b > 0) & (a != b)
    pairs = np.unique(
        np.concatenate([np.stack([a[touch], b[touch]], 1), np.stack([b[touch], a[touch]], 1)]), axis=0
    )
    pairs = pairs[size[pairs[:, 1]] > size[pairs[:, 0]]]
    t, target = np.full(len(size), np.inf), region_class.copy()
    for small, big in pairs[np.argsort(size[pairs[:, 1]], kind="stable")]:  # the largest neighbour last
        t[small], target[small] = size[small], region_class[big]
    return t[ids], target[ids]


_PLANS = {"boundary": _plan_boundary, "swap": _plan_swap, "drop": _plan_drop}


def boundary(mask: np.ndarray, classes, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Shift class boundaries by ``strength`` pixels: per pair of classes, one grows into the other.

    Mimics a CAM spilling over an edge: the activation of a class is smooth, so its region ends some pixels
    past the true edge. ``classes``: the image's label classes (only they grow).
    """
    return _apply(mask, _plan_boundary(mask, classes, rng), strength)


def swap(mask: np.ndarray, classes, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Relabel each connected region, with probability ``strength``, to another class of the label.

    Mimics a CAM that fires for the wrong class: co-occurring classes share texture, and a classifier
    that only learnt "this image holds TE and TAS" may paint a whole TAS region as TE. The new class is
    drawn from ``classes`` (the image-level label), so an image whose label has one class is left as is.
    """
    return _apply(mask, _plan_swap(mask, classes, rng), strength)


def drop(mask: np.ndarray, classes, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Absorb every region of at most ``strength`` pixels into its largest larger neighbour.

    Mimics CAMs missing small regions: a few lymphocytes inside stroma barely move the image-level score,
    so the CAM does not light them up. Deterministic (``rng`` is accepted for a common signature).
    """
    return _apply(mask, _plan_drop(mask, classes, rng), strength)


def _cell(strength: float, side: int) -> int:
    return int(min(max(round(strength), 1), side))


def blur(mask: np.ndarray, classes, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Coarsen like a CAM: average one-hot masks over ``strength``-pixel cells, upsample bilinearly, argmax.

    Mimics CAM resolution: a stride-8 classifier sees one value per 8×8 cell, so boundaries are rounded and
    thin regions vanish. The grid's offset is drawn from ``rng``. The argmax runs over the label classes
    (and classes present in the mask): no other class appears; tissue never becomes background.
    """
    h, w = mask.shape
    c = _cell(strength, max(h, w))
    channels = sorted(set(classes) | set(_present(mask)))
    if c == 1 or len(channels) < 2:
        return mask.copy()
    oy, ox = rng.integers(0, c, 2)
    gh, gw = -(-(h + oy) // c), -(-(w + ox) // c)
    onehot = np.zeros((len(channels), gh * c, gw * c))
    for k, cls in enumerate(channels):
        onehot[k, oy : oy + h, ox : ox + w] = mask == cls
    pooled = onehot.reshape(len(channels), gh, c, gw, c).mean(axis=(2, 4))

    def upsample(n: int, offset: int, cells: int) -> np.ndarray:
        """``n×cells`` bilinear weights between cell centres (torch's ``align_corners=False``)."""
        f = np.clip((np.arange(n) + offset + 0.5) / c - 0.5, 0, cells - 1)
        i0 = np.floor(f).astype(int)
        i1 = np.minimum(i0 + 1, cells - 1)
        up = np.zeros((n, cells))
        np.add.at(up, (np.arange(n), i0), 1 - (f - i0))
        np.add.at(up, (np.arange(n), i1), f - i0)
        return up

    scores = upsample(h, oy, gh) @ pooled @ upsample(w, ox, gw).T
    coarse = np.asarray(channels, np.uint8)[scores.argmax(0)]
    return np.where(mask == BACKGROUND, mask, coarse).astype(np.uint8)


CORRUPTIONS = {"boundary": boundary, "swap": swap, "drop": drop, "blur": blur}


def noise_folder_name(kind: str, rate: float, seed: int) -> str:
    """The default ``train_PM/`` folder name of :func:`corrupt_dataset` (``noise-<kind>-<rate>-s<seed>``)."""
    return f"noise-{kind}-{rate:.2f}-s{seed}"


def _check_request(kind, rate, seed, name) -> str:
    """The folder name, once kind, rate, seed and name are known to be valid."""
    check_choice("kind", kind, NOISE_KINDS)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= MAX_RATE:
        raise ValueError(
            f"rate (the fraction of wrong tissue pixels) must be a number in [0, {MAX_RATE}], got {rate!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an int, got {seed!r}")
    name = noise_folder_name(kind, rate, seed) if name is None else name
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        raise ValueError(f"name must be a plain folder name (made under train_PM/), got {name!r}")
    return name


def _image_rng(seed: int, file_name: str, kind: str) -> tuple[np.random.Generator, float]:
    """An image's own generator (from the seed and its file name) and its strength scale."""
    rng = np.random.default_rng([seed, zlib.crc32(file_name.encode())])
    scale = rng.uniform(0.5, 1.5)  # drawn for every kind: the rest of the stream is the same
    return rng, 1.0 if kind == "swap" else scale


def _search(kind, truths, classes, names, seed, wanted: int, tissue: int):
    """The strength whose corrupted masks are closest to ``wanted`` wrong pixels: (strength, masks, max)."""
    if kind in _PLANS:
        plans, scales, thresholds = [], [], []
        for truth, cls, file_name in zip(truths, classes, names, strict=True):
            rng, scale = _image_rng(seed, file_name, kind)
            plans.append(_PLANS[kind](truth, cls, rng))
            scales.append(scale)
            t = plans[-1][0] / scale
            thresholds.append(t[np.isfinite(t) & (truth != BACKGROUND)])
        values, counts = np.unique(np.concatenate([[0.0], *thresholds]), return_counts=True)
        reached = np.cumsum(counts) - 1  # wrong pixels at strength = values (0.0 was added once)
        strength = float(values[np.abs(reached - wanted).argmin()])
        masks = [_apply(tr, p, strength, s) for tr, p, s in zip(truths, plans, scales, strict=True)]
        return strength, masks, int(reached[-1])
    cache: dict[tuple[int, int], np.ndarray] = {}
    scales = [_image_rng(seed, file_name, kind)[1] for file_name in names]

    def corrupt_all(strength: float) -> list[np.ndarray]:
        out = []
        for i, (truth, cls, file_name) in enumerate(zip(truths, classes, names, strict=True)):
            key = (i, _cell(strength * scales[i], max(truth.shape)))
            if key not in cache:
                cache[key] = blur(truth, cls, key[1], _image_rng(seed, file_name, kind)[0])
            out.append(cache[key])
        return out

    def wrong(strength: float) -> int:
        masks = corrupt_all(strength)
        return sum(int(((m != t) & (t != BACKGROUND)).sum()) for m, t in zip(masks, truths, strict=True))

    lo, hi = 0.0, 2.0 * max(max(t.shape) for t in truths)  # hi: every image one cell
    tried = {lo: wrong(lo), hi: wrong(hi)}
    for _ in range(40):
        if min(abs(v - wanted) for v in tried.values()) <= 0.0005 * tissue:
            break
        mid = (lo + hi) / 2
        tried[mid] = wrong(mid)
        lo, hi = (mid, hi) if tried[mid] < wanted else (lo, mid)
    strength = min(tried, key=lambda s: (abs(tried[s] - wanted), s))
    return strength, corrupt_all(strength), max(tried.values())


def corrupt_dataset(
    root: str | Path,
    kind: str,
    rate: float,
    seed: int = 0,
    name: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    dataset: str | None = None,
) -> dict[str, object]:
    """Write the true training masks of ``root``, corrupted by ``kind`` to ``rate``, as a pseudo-mask folder.

    Args:
        root: a dataset with ``train/`` and the pixel truth ``train_gt/`` (the synthetic data).
        kind: one of :data:`~arml.options.NOISE_KINDS`.
        rate: wanted fraction of wrong tissue pixels over the training set, in [0, 0.9].
        seed: draws of every image (the growing class, swapped regions, grid offset, strength scale).
        name: folder under ``train_PM/``; default ``noise-<kind>-<rate:.2f>-s<seed>``.
        overwrite: replace a folder that holds other masks; the same request again reuses the folder.
        progress: a progress bar while writing.
        dataset: ``"luad"`` or ``"bcss"`` (file names, palette); default: detected, else luad.

    Returns:
        ``{"name", "folder", "rate" (achieved), "requested_rate", "miou" (against the truth), "kind",
        "strength", "reused", "seconds"}``.

    Raises:
        ValueError: bad kind, rate or name; a rate the kind cannot reach (the message names the maximum);
            the folder holds other masks and not ``overwrite``.
        FileNotFoundError: no data, or no ``train_gt/`` (real data has no training truth).
    """
    from arml.data_check import detect_dataset

    started = time.perf_counter()
    name = _check_request(kind, rate, seed, name)
    root = check_inputs(root, splits=())
    truth_dir = root / "train_gt"
    if not truth_dir.is_dir():
        raise FileNotFoundError(
            f"{truth_dir} not found: noise masks are made from the pixel truth of the training images, which "
            "only the synthetic data has (arml.synth.generate_dataset); real datasets cannot be corrupted"
        )
    dataset = dataset or detect_dataset(root) or "luad"
    folder = root / "train_PM" / name
    config = {"method": "noise", "kind": kind, "rate": float(rate), "seed": int(seed)}
    config["truth"] = folder_fingerprint(truth_dir)["sha256"]
    wanted = {"config": config, "method": "noise", "kind": kind, "dataset": dataset, "data_root": str(root)}
    wanted["data"] = data_record(root, {"train": root / "train"})
    files = [p.name for p in list_pngs(root / "train")]
    if not overwrite and _up_to_date(folder, wanted) and all((folder / f).is_file() for f in files):
        saved = read_manifest(folder)
        return {"name": name, "folder": str(folder), "rate": saved["achieved_rate"], "requested_rate": rate,
                "miou": saved["miou"], "kind": kind, "strength": saved["strength"], "reused": True,
                "seconds": time.perf_counter() - started}  # fmt: skip

    validate_inputs(root, dataset, ("train",), truth_dir)  # every image has a readable truth of its size
    train = TrainDataset(root, dataset)
    names = [p.name for p in train.files]
    truths = [read_mask(truth_dir / n) for n in names]
    classes = [tuple(c for c in range(NUM_CLASSES) if flags[c]) for flags in train.labels]
    tissue = sum(int((t != BACKGROUND).sum()) for t in truths)
    if tissue == 0:
        raise ValueError(f"{truth_dir} holds no tissue pixels (all 4): there is nothing to corrupt")
    strength, masks, most = _search(kind, truths, classes, names, seed, round(rate * tissue), tissue)
    achieved = wrong_fraction(masks, truths)
    if rate > most / tissue + 1e-12:
        raise ValueError(
            f"{kind!r} noise cannot make {rate:.3f} of the tissue pixels of {root} wrong: the maximum "
            f"reachable is {most / tissue:.3f}"
            + (" (swap needs images whose label has several classes)" if kind == "swap" else "")  # fmt: skip
        )
    if abs(achieved - rate) > RATE_TOLERANCE:
        raise ValueError(
            f"{kind!r} noise on {root} reaches {achieved:.4f}, not {rate:.4f} within {RATE_TOLERANCE}: too "
            "few regions or images to meet it more closely; ask for another rate or use more images"
        )

    _prepare_folder(folder, wanted, overwrite)
    write_json(folder / MANIFEST, {**wanted, "complete": False})
    scorer = SegmentationMetrics(NUM_CLASSES)
    for i in tqdm(range(len(names)), desc=f"noise {name}", disable=not progress):
        mask, truth, file_name = masks[i], truths[i], names[i]
        write_mask(folder / file_name, mask, dataset)
        scorer.update(mask, truth)
    miou = float(scorer.compute()["miou"])
    manifest = {**wanted, "requested_rate": float(rate), "achieved_rate": achieved, "strength": strength,
                "seed": int(seed), "count": len(names), "miou": miou, "complete": True}  # fmt: skip
    write_json(folder / MANIFEST, to_jsonable(manifest))
    return {"name": name, "folder": str(folder), "rate": achieved, "requested_rate": rate, "miou": miou,
            "kind": kind, "strength": strength, "reused": False, "seconds": time.perf_counter() - started}  # fmt: skip
