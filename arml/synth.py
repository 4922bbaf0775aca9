"""The built-in synthetic H&E dataset, written to disk in the LUAD-HistoSeg layout (SYNTH.md).

Why: the real datasets cannot be downloaded everywhere, and a teaching repo must run end to end on a laptop.
Every loader, checker and notebook runs the same code on this data and on the real data. Results on it are
*synthetic* and not comparable with the paper's numbers.

How a patch is made (:func:`generate_patch`):

1. Draw 1, 2 or 3 classes (``classes_per_patch``) without replacement from the tempered prior
   ``class_prior ** imbalance``; give each one smooth multi-octave noise field (feature size
   ``region_scale × size``); the tissue map is the argmax of the fields: irregular, interlocking regions.
2. Cut glass into the patch (a tissue edge or a hole) with probability ``background_fraction``.
3. Render every present class as haematoxylin and eosin concentration maps (tumour nests with crowded
   pleomorphic nuclei and lumens; stroma fibres along an orientation field with spindle nuclei; dense
   lymphocyte sheets; necrosis with nuclear dust, ghost cells and blotchy eosin), then mix the stains by
   Beer–Lambert, ``I = I0 · exp(−(C_H v_H + C_E v_E))``, with jittered stain vectors and concentration scales.
4. Focus blur and sensor noise.

The mask holds the class index per pixel (LUAD order 0 TE, 1 NEC, 2 LYM, 3 TAS) and 4 for glass and for
slivers: classes covering at most ``label_threshold`` of the patch, which are also left out of the label.
Confounders (``confounders``): stray lymphocytes in tumour and stroma never make a LYM label, and necrosis
takes on the pink of stroma.

>>> rgb, mask, label = generate_patch(0, SYNTH_PROFILES["quick"], "train")
>>> rgb.shape, mask.shape, len(label)
((64, 64, 3), (64, 64), 4)
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from arml.datasets import BACKGROUND, DATASETS, NUM_CLASSES, format_train_name, list_pngs, write_mask
from arml.runtime import atomic_write

GENERATOR_VERSION = "arml.synth/1"
SPLITS = ("train", "val", "test")
TE, NEC, LYM, TAS = range(NUM_CLASSES)
LUAD_TO_BCSS = np.array([0, 3, 2, 1, BACKGROUND], dtype=np.uint8)  # TE→TUM, NEC→NEC, LYM→LYM, TAS→STR

# Stain optical-density vectors (R, G, B), SYNTH.md: H halfway between Ruifrok & Johnston and one measured on
# real H&E; E halfway between the Macenko reference and the same measurement. val/test move along _SHIFT_*.
_H_OD = np.array([0.5905, 0.7255, 0.3420])
_E_OD = np.array([0.1970, 0.8181, 0.5396])
_SHIFT_H = np.array([-0.15, -0.05, 0.30])  # per unit stain_shift: a bluer haematoxylin ...
_SHIFT_E = np.array([0.20, -0.05, -0.20])  # ... and a more orange eosin


@dataclass(frozen=True)
class SynthConfig:
    """Size and difficulty of a synthetic dataset. Profiles (:data:`SYNTH_PROFILES`) are instances.

    Attributes:
        size: patch side in pixels (LUAD-HistoSeg: 224).
        n_train, n_val, n_test: patches per split.
        microns_per_pixel: scale. 2.0 for 64-px patches (a 128 µm field: lymphocytes ~3 px, tumour nuclei
            5–8 px, so nuclei stay visible); 1.0 for 224-px patches (LUAD-HistoSeg's 10×).
        label_noise: probability of flipping each bit of the label written into a *training* file name
            (``train_gt`` keeps the truth; a draw that would empty the label keeps the true one). Default 0:
            the paper assumes clean image labels.
        stain_shift: how far val/test stains sit from train's: mean H and E OD vectors moved by
            ``stain_shift × (±0.2…0.3)`` per channel, mean H concentration ×(1 + s/2), E ×(1 − s/2).
        imbalance: exponent on the class prior (0 uniform, 1 the LUAD-like prior, >1 more skewed).
        region_scale: feature size of the region noise fields relative to the patch side; smaller values
            give smaller, more interlocking regions.
        background_fraction: probability that a patch contains glass (a tissue edge or a hole of 3–35 %).
        confounders: 0…1, strength of the traps for image-level supervision: stray lymphocytes in tumour and
            stroma (up to ~30 per 128 µm field) and necrosis eosin as pink as stroma.
        label_threshold: a class is in the label iff it covers more than this fraction of the patch; smaller
            slivers become 4 (excluded) in the mask.
        class_prior: prior over (TE, NEC, LYM, TAS) before tempering (SYNTH.md).
        classes_per_patch: probabilities of drawing 1, 2 or 3 classes. Slivers lower the counts that reach
            the label: the defaults give about 0.28/0.44/0.28 labelled classes per patch, a little more mixed
            than SYNTH.md's 0.30/0.45/0.25, for a harder default.
    """

    size: int = 64
    n_train: int = 2000
    n_val: int = 250
    n_test: int = 250
    microns_per_pixel: float = 2.0
    label_noise: float = 0.0
    stain_shift: float = 0.1
    imbalance: float = 1.0
    region_scale: float = 0.35
    background_fraction: float = 0.25
    confounders: float = 0.5
    label_threshold: float = 0.02
    class_prior: tuple[float, ...] = (0.34, 0.14, 0.20, 0.32)
    classes_per_patch: tuple[float, ...] = (0.25, 0.45, 0.30)

    def __post_init__(self) -> None:
        def need(ok: bool, what: str, allowed: str) -> None:
            if not ok:
                raise ValueError(f"SynthConfig.{what} must be {allowed}, got {getattr(self, what)!r}")

        need(isinstance(self.size, int) and self.size >= 32, "size", "an int >= 32 (pixels)")
        for name in ("n_train", "n_val", "n_test"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, name, "an int >= 1")
        need(0.1 <= self.microns_per_pixel <= 10, "microns_per_pixel", "in [0.1, 10]")
        need(0 <= self.label_noise <= 0.5, "label_noise", "a probability in [0, 0.5]")
        need(0 <= self.stain_shift <= 1, "stain_shift", "in [0, 1]")
        need(0 <= self.imbalance <= 5, "imbalance", "in [0, 5] (0 uniform, 1 the prior)")
        need(0.05 <= self.region_scale <= 2, "region_scale", "in [0.05, 2] (fraction of the patch side)")
        need(0 <= self.background_fraction <= 1, "background_fraction", "a probability in [0, 1]")
        need(0 <= self.confounders <= 1, "confounders", "in [0, 1]")
        need(0 <= self.label_threshold < 0.25, "label_threshold", "a fraction in [0, 0.25)")
        need(
            len(self.class_prior) == NUM_CLASSES and min(self.class_prior) > 0,
            "class_prior",
            "four positive weights (TE, NEC, LYM, TAS)",
        )
        need(
            len(self.classes_per_patch) == 3
            and min(self.classes_per_patch) >= 0
            and abs(sum(self.classes_per_patch) - 1) < 1e-6,
            "classes_per_patch",
            "three probabilities (1, 2, 3 classes) summing to 1",
        )

    def count(self, split: str) -> int:
        """Number of patches in ``split``."""
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[_check_split(split)]


SYNTH_PROFILES: dict[str, SynthConfig] = {
    "quick": SynthConfig(n_train=48, n_val=16, n_test=16),
    "cpu": SynthConfig(n_train=400, n_val=80, n_test=120),  # sized for the 20-min CPU main job
    "paper": SynthConfig(size=224, n_train=2000, n_val=300, n_test=300, microns_per_pixel=1.0),
}


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def patch_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator that :func:`generate_dataset` uses for patch ``index`` of ``split``."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(_check_split(split)), index]))


# ----------------------------------------------------------------------------------------------- primitives
def _smooth(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise of unit standard deviation (features ~2.5 σ pixels)."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), max(sigma, 0.3), mode="wrap")
    return field / (field.std() + 1e-8)


def _region_fields(rng: np.random.Generator, k: int, size: int, scale: float, octaves: int = 3) -> np.ndarray:
    """``k`` multi-octave noise fields (k×size×size), unit variance, main features ``scale × size`` px."""
    n = 2 * size  # FFT on a doubled canvas, crop one corner: no wrap-around inside the patch
    fy, fx = np.fft.fftfreq(n)[:, None], np.fft.rfftfreq(n)[None, :]
    f2 = fy**2 + fx**2
    gain = np.zeros_like(f2)
    for o in range(octaves):
        sigma = max(scale * size / 4 / 2**o, 0.5)
        gain += 0.55**o * np.sqrt(4 * np.pi) * sigma * np.exp(-2 * np.pi**2 * sigma**2 * f2)
    full = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((k, n, n))) * gain, s=(n, n))
    return full[:, :size, :size] / full.std(axis=(1, 2), keepdims=True)


def _lattice(rng, size: int, spacing: float, jitter: float, keep: float) -> tuple[np.ndarray, np.ndarray]:
    """Centres on a randomly rotated, jittered hexagonal lattice covering the patch (crowded cells)."""
    m = int(np.ceil(0.75 * size / spacing)) + 1
    j, i = np.mgrid[-m : m + 1, -m : m + 1].astype(float)
    x, y = (i + 0.5 * (j % 2)) * spacing, j * spacing * np.sqrt(3) / 2
    phi = rng.uniform(0, np.pi)
    xr = x * np.cos(phi) - y * np.sin(phi) + size / 2 + rng.normal(0, jitter * spacing, x.shape)
    yr = x * np.sin(phi) + y * np.cos(phi) + size / 2 + rng.normal(0, jitter * spacing, x.shape)
    ok = (xr > -3) & (xr < size + 2) & (yr > -3) & (yr < size + 2) & (rng.random(x.shape) < keep)
    return yr[ok], xr[ok]


def _scatter(rng, size: int, per_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Uniform random points with ``per_px`` expected points per pixel."""
    n = rng.poisson(per_px * (size + 4) ** 2)
    return rng.uniform(-2, size + 2, n), rng.uniform(-2, size + 2, n)


def _stamp(size: int, y, x, a, b, theta, value, body: float = 1.0, rim: float = 0.0) -> np.ndarray:
    """Anti-aliased ellipses (semi-axes a, b px; angle θ) max-composited onto a size×size canvas.

    The profile is ``value × (body + rim · ring)``: body=1, rim>0 gives vesicular nuclei with a dark rim;
    body≈0, rim=1 gives ghost-cell outlines.
    """
    canvas = np.zeros((size, size))
    if len(y) == 0:
        return canvas
    a, b, theta, value = (np.broadcast_to(np.asarray(v, float), y.shape) for v in (a, b, theta, value))
    r_max = int(np.ceil(max(a.max(), b.max()))) + 1
    off = np.arange(-r_max, r_max + 1)
    iy = np.round(y).astype(int)[:, None, None] + off[None, :, None]
    ix = np.round(x).astype(int)[:, None, None] + off[None, None, :]
    dy, dx = iy - y[:, None, None], ix - x[:, None, None]
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    r = np.hypot((dx * c + dy * s) / a[:, None, None], (dy * c - dx * s) / b[:, None, None])
    cover = np.clip((1 - r) * b[:, None, None] + 0.5, 0, 1)
    val = value[:, None, None] * cover * (body + rim * np.exp(-(((r - 0.8) / 0.2) ** 2)))
    iy, ix = np.broadcast_arrays(iy, ix)
    ok = (iy >= 0) & (iy < size) & (ix >= 0) & (ix < size) & (val > 0)
    np.maximum.at(canvas, (iy[ok], ix[ok]), val[ok])
    return canvas


def _lic(src: np.ndarray, theta: np.ndarray, half_len: float) -> np.ndarray:
    """Line-integral convolution: average ``src`` along the local direction θ (fibres), unit std.

    Samples every pixel of the line (at most 8 each side), bilinear, with periodic lookup (``src`` is noise).
    """
    size = src.shape[0]
    t = np.linspace(-half_len, half_len, 2 * int(np.clip(round(half_len), 2, 8)) + 1)[:, None, None]
    yy, xx = np.mgrid[0:size, 0:size]
    y, x = yy + t * np.sin(theta), xx + t * np.cos(theta)
    y0, x0 = np.floor(y), np.floor(x)
    wy, wx = y - y0, x - x0
    r0, c0 = (y0.astype(int) % size) * size, x0.astype(int) % size
    r1, c1 = (r0 + size) % (size * size), (c0 + 1) % size
    flat = src.ravel()
    out = (1 - wy) * ((1 - wx) * flat[r0 + c0] + wx * flat[r0 + c1]) + wy * (
        (1 - wx) * flat[r1 + c0] + wx * flat[r1 + c1]
    )
    out = out.mean(0)
    return (out - out.mean()) / (out.std() + 1e-8)


def _lymphocyte_nuclei(rng, size: int, ppu: float, y, x) -> np.ndarray:
    """Small, round, very dark, homogeneous nuclei (5.5–7 µm, H 1.8–2.4)."""
    n = len(y)
    a = rng.uniform(5.5, 7.0, n) * ppu / 2
    return _stamp(
        size, y, x, a, a / rng.uniform(1, 1.15, n), rng.uniform(0, np.pi, n), rng.uniform(1.8, 2.4, n)
    )


def _strays(rng, size: int, ppu: float, confounders: float) -> np.ndarray:
    """Stray lymphocytes that never make a LYM label (~0.0018 per µm² at confounders=1)."""
    return _lymphocyte_nuclei(rng, size, ppu, *_scatter(rng, size, confounders * 0.0018 / ppu**2))


# ------------------------------------------------------------------------------------------ class textures
# Each renderer returns haematoxylin and eosin concentration maps (size×size) and an optional glass mask.
def _at(field: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``field`` at the nearest pixel of each point (points may lie just outside the patch)."""
    size = field.shape[0]
    return field[np.clip(np.round(y), 0, size - 1).astype(int), np.clip(np.round(x), 0, size - 1).astype(int)]


def _tumour(rng, size: int, ppu: float, cfg: SynthConfig):
    grain = _smooth(rng, size, 0.6)
    septa = np.abs(_smooth(rng, size, 12 * ppu)) < rng.uniform(0.06, 0.16)  # thin cords between nests
    lumen = (_smooth(rng, size, 4 * ppu) > rng.uniform(1.8, 3.0)) & ~septa
    y, x = _lattice(rng, size, rng.uniform(9, 11) * ppu, 0.2, 0.92)
    y, x = y[~_at(septa | lumen, y, x)], x[~_at(septa | lumen, y, x)]
    n = len(y)
    a = rng.uniform(10, 16, n) * ppu / 2
    b, theta, value = a / rng.uniform(1, 1.6, n), rng.uniform(0, np.pi, n), rng.uniform(0.9, 1.4, n)
    nuclei = _stamp(size, y, x, a, b, theta, value, body=0.75, rim=0.45) * (1 + 0.15 * grain)  # vesicular
    pick = rng.random(n) < 0.7
    jitter = rng.normal(0, 0.15, (2, n)) * a
    r = max(1.0 * ppu, 0.5)
    nucleoli = _stamp(size, (y + jitter[0])[pick], (x + jitter[1])[pick], r, r, 0.0, 0.45)
    strays = _strays(rng, size, ppu, cfg.confounders)
    h = 0.22 + 0.05 * _smooth(rng, size, 2 * ppu) + nuclei + nucleoli + strays
    e = (0.45 + 0.08 * _smooth(rng, size, 2 * ppu)) * (1 - 0.35 * np.clip(nuclei, 0, 1))
    h[septa], e[septa] = 0.08, 0.75 + 0.1 * grain[septa]
    return h, e, lumen


def _necrosis(rng, size: int, ppu: float, cfg: SynthConfig):
    grain = _smooth(rng, size, 0.6)
    pink = 0.42 + 0.3 * cfg.confounders  # at confounders=1 as pink as stroma
    e = np.clip(pink * (1 + 0.3 * _smooth(rng, size, 6 * ppu) + 0.15 * grain), 0.1, 1.3)
    h = np.clip(0.12 + 0.06 * _smooth(rng, size, 4 * ppu), 0, None)
    y, x = _lattice(rng, size, rng.uniform(10, 13) * ppu, 0.25, 0.5)  # ghost-cell outlines
    n = len(y)
    rad = rng.uniform(5, 7, n) * ppu
    ghosts = _stamp(
        size, y, x, rad, rad / rng.uniform(1, 1.3, n), rng.uniform(0, np.pi, n), 1.0, body=0.05, rim=1
    )
    cy, cx = _scatter(rng, size, 1 / (700 * ppu**2))  # nuclear dust, clustered around these centres
    per = rng.integers(6, 20, len(cy))
    dy = np.repeat(cy, per) + rng.normal(0, 5 * ppu, per.sum())
    dx = np.repeat(cx, per) + rng.normal(0, 5 * ppu, per.sum())
    dr = np.maximum(rng.uniform(0.7, 1.5, len(dy)) * ppu, 0.45)
    dust = _stamp(size, dy, dx, dr, dr, 0.0, rng.uniform(1.2, 2.2, len(dy)))
    py, px = _scatter(rng, size, 1 / (1500 * ppu**2))  # a few pyknotic nuclei
    pr = rng.uniform(2, 3, len(py)) * ppu
    pyknotic = _stamp(size, py, px, pr, pr, 0.0, rng.uniform(2.0, 2.6, len(py)))
    return h + 0.06 * ghosts + dust + pyknotic, e + 0.18 * ghosts, None


def _lymphocytes(rng, size: int, ppu: float, cfg: SynthConfig):
    y, x = _lattice(rng, size, rng.uniform(7.5, 9.5) * ppu, 0.22, 0.9)
    nuclei = _lymphocyte_nuclei(rng, size, ppu, y, x) * (1 + 0.05 * _smooth(rng, size, 0.6))
    return 0.1 + nuclei, (0.22 + 0.05 * _smooth(rng, size, 2 * ppu)) * (1 - 0.3 * np.clip(nuclei, 0, 1)), None


def _stroma(rng, size: int, ppu: float, cfg: SynthConfig):
    theta = rng.uniform(0, np.pi) + 0.7 * _smooth(rng, size, 30 * ppu)  # smooth orientation field
    fibres = _lic(ndimage.gaussian_filter(rng.standard_normal((size, size)), 0.5), theta, 7 * ppu)
    clefts = _lic(ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.0), theta, 14 * ppu)
    e = np.clip(0.72 + 0.3 * fibres + 0.12 * _smooth(rng, size, 5 * ppu), 0.3, 1.2)
    e[clefts > rng.uniform(1.3, 1.9)] *= 0.12  # white clefts between collagen bundles
    y, x = _scatter(rng, size, 1 / (700 * ppu**2))  # sparse spindle nuclei aligned with the fibres
    major = rng.uniform(10, 16, len(y)) * ppu / 2
    spindles = _stamp(
        size, y, x, major, major / rng.uniform(3, 5, len(y)), _at(theta, y, x), rng.uniform(1.3, 1.8, len(y))
    )
    h = 0.07 + 0.03 * _smooth(rng, size, 1) + spindles + _strays(rng, size, ppu, cfg.confounders)
    return h, e * (1 - 0.3 * np.clip(spindles, 0, 1)), None


_RENDER = (_tumour, _necrosis, _lymphocytes, _stroma)


# ------------------------------------------------------------------------------------------------- a patch
def _glass(rng, size: int, cfg: SynthConfig) -> np.ndarray:
    """Glass: none, a wavy tissue edge or a hole, 3–35 % of the patch."""
    if rng.random() >= cfg.background_fraction:
        return np.zeros((size, size), bool)
    field = _region_fields(rng, 1, size, cfg.region_scale)[0]
    if rng.random() < 0.5:  # an edge: a ramp across the patch, made wavy by the noise
        phi = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / size
        field = 0.4 * field + 3 * (xx * np.cos(phi) + yy * np.sin(phi))
    return field > np.quantile(field, 1 - rng.uniform(0.03, 0.35))


def _acquire(rng, h: np.ndarray, e: np.ndarray, cfg: SynthConfig, split: str) -> np.ndarray:
    """Beer–Lambert stain mixing, focus blur and sensor noise → uint8 RGB."""
    s = cfg.stain_shift if split != "train" else 0.0
    vh = _H_OD + s * _SHIFT_H + rng.uniform(-0.03, 0.03, 3)
    ve = _E_OD + s * _SHIFT_E + rng.uniform(-0.03, 0.03, 3)
    ch = rng.uniform(0.75, 1.25) * (1 + s / 2)
    ce = rng.uniform(0.7, 1.3) * (1 - s / 2)
    i0 = np.clip(rng.uniform(238, 250) + rng.normal(0, 1.5, 3), 225, 254)
    od = ch * h[..., None] * (vh / np.linalg.norm(vh)) + ce * e[..., None] * (ve / np.linalg.norm(ve))
    sigma = rng.uniform(0.3, 0.9)
    rgb = ndimage.gaussian_filter(i0 * np.exp(-od), (sigma, sigma, 0))
    rgb += rng.normal(0, 2.0, rgb.shape)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def generate_patch(
    rng_or_seed: int | np.random.SeedSequence | np.random.Generator, config: SynthConfig, split: str = "train"
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """One synthetic H&E patch with its pixel-exact mask and image-level label (LUAD class order).

    Args:
        rng_or_seed: a seed, ``SeedSequence`` or ``Generator`` (consumed); the same seed gives the same patch.
        config: sizes and difficulty knobs.
        split: ``"train"`` (label noise applies), ``"val"`` or ``"test"`` (stain shift applies).

    Returns:
        ``rgb`` H×W×3 uint8, ``mask`` H×W uint8 in 0..4 (4 = glass or excluded sliver) and ``label``: four
        0/1 flags (TE, NEC, LYM, TAS), a class being present iff it covers more than ``label_threshold`` of the
        patch — for ``"train"`` after ``label_noise`` flips, as written into the training file name.
    """
    _check_split(split)
    rng = np.random.default_rng(rng_or_seed)
    size, ppu = config.size, 1.0 / config.microns_per_pixel
    prior = np.asarray(config.class_prior, float) ** config.imbalance
    k = rng.choice(3, p=config.classes_per_patch) + 1
    classes = rng.choice(NUM_CLASSES, size=k, replace=False, p=prior / prior.sum())
    fields = _region_fields(rng, k, size, config.region_scale) + rng.normal(0, 0.3, (k, 1, 1))
    owner = classes[np.argmax(fields, axis=0)]
    glass = _glass(rng, size, config)
    h, e = np.zeros((size, size)), np.zeros((size, size))
    for c in sorted(classes):
        hc, ec, holes = _RENDER[c](rng, size, ppu, config)
        sel = owner == c
        h[sel], e[sel] = hc[sel], ec[sel]
        if holes is not None:
            glass |= holes & sel
    h[glass] = 0.01 + 0.005 * rng.random(glass.sum())
    e[glass] = 0.025 + 0.01 * rng.random(glass.sum())
    mask = np.where(glass, BACKGROUND, owner).astype(np.uint8)
    frac = np.bincount(mask.ravel(), minlength=BACKGROUND + 1)[:NUM_CLASSES] / mask.size
    for c in np.flatnonzero((frac > 0) & (frac <= config.label_threshold)):
        mask[mask == c] = BACKGROUND  # a sliver: excluded from the mask and from the label
    label = [int(f > config.label_threshold) for f in frac]
    rgb = _acquire(rng, h, e, config, split)
    if split == "train" and config.label_noise > 0:
        noisy = [
            v ^ int(flip) for v, flip in zip(label, rng.random(NUM_CLASSES) < config.label_noise, strict=True)
        ]
        label = noisy if any(noisy) else label
    return rgb, mask, tuple(label)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ on disk
def _stem(seed: int, split: str, index: int, config: SynthConfig, dataset: str) -> str:
    """A LUAD- or BCSS-like name without label or suffix; ids are unique over the three splits."""
    ident = index + sum(config.count(s) for s in SPLITS[: SPLITS.index(split)])
    x, y = np.random.default_rng([seed, SPLITS.index(split), index, 1]).integers(0, 60000, 2)
    if dataset == "bcss":
        return f"SYN-{ident:05d}_xmin{x}_ymin{y}_MPP-{config.microns_per_pixel:.4f}+0"
    return f"syn{ident:05d}-{x}-{y}" + ("-" if split == "train" else "")


def _paths(out: Path, split: str, stem: str, label, dataset: str) -> tuple[Path, Path]:
    if split == "train":
        name = format_train_name(stem, label, dataset)
        return out / "train" / name, out / "train_gt" / name
    return out / split / "img" / f"{stem}.png", out / split / "mask" / f"{stem}.png"


def _write_one(task: tuple[str, int], out: Path, config: SynthConfig, seed: int, dataset: str) -> None:
    split, index = task
    rgb, mask, label = generate_patch(patch_rng(seed, split, index), config, split)
    if dataset == "bcss":
        mask, label = LUAD_TO_BCSS[mask], tuple(label[i] for i in np.argsort(LUAD_TO_BCSS[:NUM_CLASSES]))
    image_path, mask_path = _paths(out, split, _stem(seed, split, index, config, dataset), label, dataset)
    img = Image.fromarray(rgb)
    atomic_write(image_path, lambda tmp: img.save(tmp, format="PNG", compress_level=6))
    write_mask(mask_path, mask, dataset)


def _metadata(config: SynthConfig, seed: int, dataset: str) -> dict:
    return {
        "generator": GENERATOR_VERSION,
        "note": "synthetic H&E (arml.synth): results on it are not comparable with the paper's",
        "dataset": dataset,
        "seed": seed,
        "config": asdict(config),
        "counts": {s: config.count(s) for s in SPLITS},
    }


_ENTRIES = ("train", "train_gt", "val", "test", "synth.json")


def _existing_problem(out: Path, meta: dict, config: SynthConfig, seed: int, dataset: str) -> str | None:
    """Why ``out`` does not already hold exactly this dataset (None: it does)."""
    try:
        found = json.loads((out / "synth.json").read_text())
    except FileNotFoundError:
        return "files but no synth.json (an unfinished run or a dataset not made by arml.synth)"
    except (OSError, ValueError) as err:
        return f"an unreadable synth.json ({err})"
    differ = sorted(k for k in meta if found.get(k) != json.loads(json.dumps(meta[k])))
    if differ:
        return f"a synthetic dataset made with other settings (differs in: {', '.join(differ)})"
    for split in SPLITS:
        folders = ("train", "train_gt") if split == "train" else (f"{split}/img", f"{split}/mask")
        want = {_stem(seed, split, i, config, dataset) for i in range(config.count(split))}
        for folder in folders:
            have = (
                [p.stem.rsplit("[", 1)[0] for p in list_pngs(out / folder)] if (out / folder).is_dir() else []
            )
            if set(have) != want or len(have) != len(want):
                return f"an incomplete or altered dataset ({folder}/ has {len(have)} of {len(want)} expected files)"
    return None


def generate_dataset(
    out: str | Path,
    profile: str | SynthConfig = "quick",
    seed: int = 0,
    dataset: str = "luad",
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic dataset in the LUAD-HistoSeg (or BCSS-WSSS) layout and return its root.

    Layout: ``train/<stem>[a b c d].png`` with ``train_gt/<same name>`` (palette masks, the truth even under
    label noise), ``{val,test}/{img,mask}/<stem>.png`` and ``synth.json`` (config, seed, dataset, counts,
    generator version; written last, so its presence marks a complete run). ``dataset="bcss"`` writes
    BCSS-WSSS names (``SYN-00012_xmin…_MPP-2.0000+0[1101].png``), class order (TUM, STR, LYM, NEC) and palette.

    Patch ``i`` of a split comes from ``SeedSequence([seed, split_id, i])`` (:func:`patch_rng`), so the files
    are byte-identical for the same seed whatever ``workers`` is.

    Args:
        out: dataset root to create.
        profile: ``"quick"``, ``"cpu"``, ``"paper"`` (:data:`SYNTH_PROFILES`) or a :class:`SynthConfig`.
        seed: non-negative int.
        dataset: ``"luad"`` or ``"bcss"`` naming and class order.
        workers: processes (default ``os.cpu_count()``; 0 or 1 runs in this process).
        progress: show a tqdm progress bar.
        overwrite: replace the dataset entries (train, train_gt, train_PM, val, test, synth.json) in ``out``.

    Raises:
        ValueError: unknown profile or dataset, bad seed or workers.
        FileExistsError: ``out`` holds a partial or different dataset and ``overwrite`` is False.
    """
    if isinstance(profile, str):
        if profile not in SYNTH_PROFILES:
            raise ValueError(
                f"profile must be one of {tuple(SYNTH_PROFILES)} or a SynthConfig, got {profile!r}"
            )
        config = SYNTH_PROFILES[profile]
    elif isinstance(profile, SynthConfig):
        config = profile
    else:
        raise ValueError(f"profile must be one of {tuple(SYNTH_PROFILES)} or a SynthConfig, got {profile!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be None or an int >= 0, got {workers!r}")
    out = Path(out)
    meta = _metadata(config, seed, dataset)
    if any((out / name).exists() for name in _ENTRIES):
        if overwrite:
            for name in (*_ENTRIES, "train_PM"):
                target = out / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        else:
            problem = _existing_problem(out, meta, config, seed, dataset)
            if problem is None:
                return out
            raise FileExistsError(
                f"{out} already holds {problem}; pass overwrite=True (arml synth --overwrite) to replace it, "
                "or choose another folder"
            )
    tasks = [(split, i) for split in SPLITS for i in range(config.count(split))]
    job = partial(_write_one, out=out, config=config, seed=seed, dataset=dataset)
    bar = tqdm(total=len(tasks), desc=f"synth {dataset} → {out.name}", unit="patch", disable=not progress)
    with bar:
        if workers <= 1:
            for task in tasks:
                job(task)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(job, tasks, chunksize=max(1, len(tasks) // (workers * 16))):
                    bar.update()
    atomic_write(out / "synth.json", lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"))
    return out


def config_from_json(path: str | Path) -> SynthConfig:
    """The :class:`SynthConfig` recorded in a dataset's ``synth.json``."""
    raw = json.loads(Path(path).read_text())["config"]
    known = {f.name for f in fields(SynthConfig)}
    return replace(
        SynthConfig(), **{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in known}
    )
