"""Synthetic H&E tissue: one patch, its pixel-exact mask and its image-level label (:func:`generate_patch`).

This module is the *renderer* behind :mod:`arml.synth` (which writes whole datasets to disk); the design and
its sources are described in docs/synthetic_data.md.

**Stain mixing (Beer–Lambert).** A bright-field microscope sees light that passed through the section. Each
stain ``s`` (haematoxylin H, eosin E) absorbs colour channel ``c`` (R, G, B) in proportion to its local
concentration ``C_s`` and to its optical-density vector ``v_s`` (absorbance per unit concentration), so

    I_c = I0_c · exp(−Σ_s C_s · v_{s,c}),

with ``I0`` the brightness of the empty glass. Absorbances add: purple regions are where both stains sit. The
renderer therefore draws each tissue class as two concentration maps ``C_H`` and ``C_E`` and mixes them in one
step (:func:`_acquire`). H is bluish-purple (it absorbs red and green), E pink (it absorbs mostly green), so
H&E tissue is darkest in the green channel. Stain vectors, concentration scales and ``I0`` are jittered
per patch; for ``val``/``test`` they move by ``stain_shift`` along ``_SHIFT_H``/``_SHIFT_E`` (another lab's
staining), which is the colour shift a model must survive.

**How a patch is made.**

1. Draw 1, 2 or 3 classes (``classes_per_patch``) without replacement from the tempered prior
   ``class_prior ** imbalance``; give each one smooth multi-octave noise field (feature size
   ``region_scale × size``); the tissue map is the argmax of the fields: irregular, interlocking regions.
2. Cut glass into the patch (a tissue edge or a hole) with probability ``background_fraction``.
3. Render every present class as H and E concentration maps and mix the stains as above.
4. Focus blur and sensor noise.

**What each class looks like** (LUAD order 0 TE, 1 NEC, 2 LYM, 3 TAS):

* tumour (TE): nests of crowded, large, pleomorphic, vesicular nuclei (pale centre, dark rim, most with a
  nucleolus) on a hexagonal lattice, thin pink cords between nests and small glass lumens;
* necrosis (NEC): blotchy eosin, ghost-cell outlines, clustered nuclear dust and a few dark pyknotic nuclei;
* lymphocytes (LYM): dense sheets of small, round, very dark, homogeneous nuclei with little cytoplasm;
* stroma (TAS): pink collagen fibres drawn along a smooth orientation field (line-integral convolution),
  white clefts between bundles and sparse spindle nuclei aligned with the fibres.

The mask holds the class index per pixel and 4 for glass and for slivers: classes covering at most
``label_threshold`` of the patch, which are also left out of the label. Confounders (``confounders``): stray
lymphocytes in tumour and stroma never make a LYM label, and necrosis takes on the pink of stroma.

>>> from arml.synth import SYNTH_PROFILES
>>> rgb, mask, label = generate_patch(0, SYNTH_PROFILES["quick"], "train")
>>> rgb.shape, mask.shape, len(label)
((64, 64, 3), (64, 64), 4)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from arml.datasets import BACKGROUND, NUM_CLASSES
from arml.options import SPLITS

if TYPE_CHECKING:  # only for annotations: arml.synth imports this module
    from arml.synth import SynthConfig

TE, NEC, LYM, TAS = range(NUM_CLASSES)

# Stain optical-density vectors (R, G, B), see docs/synthetic_data.md: H halfway between Ruifrok & Johnston
# and one measured on real H&E; E halfway between the Macenko reference and the same measurement. val/test
# move along _SHIFT_*.
_H_OD = np.array([0.5905, 0.7255, 0.3420])
_E_OD = np.array([0.1970, 0.8181, 0.5396])
_SHIFT_H = np.array([-0.15, -0.05, 0.30])  # per unit stain_shift: a bluer haematoxylin ...
_SHIFT_E = np.array([0.20, -0.05, -0.20])  # ... and a more orange eosin


def check_split(split: str) -> str:
    """``split`` if it is one of :data:`SPLITS`; a ``ValueError`` otherwise."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


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
    # 13–16 µm apart: spacing ÷ diameter ≈ 1.2, as measured on a real carcinoma field (benchmarks/synth_scale.py);
    # the first version packed them at 9–11 µm (0.9: nuclei overlapping)
    y, x = _lattice(rng, size, rng.uniform(13, 16) * ppu, 0.2, 0.92)
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
    field = _region_fields(rng, 1, size, cfg.region_scale, cfg.region_octaves)[0]
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
    check_split(split)
    rng = np.random.default_rng(rng_or_seed)
    size, ppu = config.size, 1.0 / config.microns_per_pixel
    prior = np.asarray(config.class_prior, float) ** config.imbalance
    k = rng.choice(3, p=config.classes_per_patch) + 1
    classes = rng.choice(NUM_CLASSES, size=k, replace=False, p=prior / prior.sum())
    fields = _region_fields(rng, k, size, config.region_scale, config.region_octaves) + rng.normal(
        0, 0.3, (k, 1, 1)
    )
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
