"""Compare a fresh run's ``results/*.json`` with the committed reference run: ``make regress``.

Two kinds of numbers live in the results, and they need different checks:

* **Deterministic** numbers (stage 1, CAMs, pseudo masks: notebooks 01–03 and every ``pseudo_mask*`` entry)
  come out the same on every run of the same code with the same packages: they must match to ``1e-6``
  (relative). A difference there is a code change, not noise.
* **Stage-2 scores** (every ``miou`` under notebooks 04–07) come from training that is *chaotic*: a change of
  float rounding (another CPU, thread count or library version) moves a single run's mIoU by about as much
  as changing its seed does. They are compared within a band measured from the reference's own seeds:
  ``k · σ · √(2/n)``, where σ is the pooled per-seed standard deviation of the final benchmark's rows
  (notebook 06) and ``n`` the seeds behind the compared mean; √(2/n) is the spread of a difference of two
  such means, and ``k = 3`` makes a false alarm rare (about 0.3 % per number under a normal model).

Everything else (timings, losses on one batch, per-class scores) is reported as skipped, not compared; so are
the paper's tables that the stage-2 notebooks save beside their scores (top-level keys ``paper_*``): they are
constants of :mod:`arml.paper`, tested in ``tests/test_paper.py``, not results of the run.

    python -m arml.regress results build/regress/results
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path

DETERMINISTIC_FILES = ("01_cam_baselines", "02_ars_ablation", "03_pseudo_mask_quality")
SKIPPED_KEYS = ("elapsed_s", "seconds", "images_per_s", "seconds_per_epoch", "headline")
PAPER_PREFIX = "paper_"  # top-level keys holding the paper's numbers (arml.paper.as_results), not run results
K = 3.0
FLOOR = 0.005  # the smallest band: half a point of mIoU
REL_TOL = 1e-6


def _leaves(value, path: tuple = ()) -> Iterator[tuple[tuple, object]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, i))
    else:
        yield path, value


def seed_sigma(final_benchmark: dict) -> float:
    """Pooled per-seed standard deviation of the test mIoU over the rows of notebook 06's ablation."""
    variances = [
        row["miou_std"] ** 2
        for row in final_benchmark.get("ablation", {}).values()
        if isinstance(row, dict) and row.get("n_seeds", 0) > 1 and row.get("miou_std") is not None
    ]
    if not variances:
        raise ValueError("the reference's 06_final_benchmark.json has no rows with several seeds")
    return math.sqrt(sum(variances) / len(variances))


def band(sigma: float, n: int) -> float:
    """The tolerance for a mean over ``n`` seeds: ``max(K·σ·√(2/n), FLOOR)``."""
    return max(K * sigma * math.sqrt(2 / max(n, 1)), FLOOR)


def _seeds_behind(reference: dict, path: tuple) -> int:
    """Seeds averaged into the number at ``path``: 1 for a per-seed value, the ``n_seeds`` beside it, else the
    number of seeds the file lists."""
    if "per_seed" in path:
        return 1
    parent = reference
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and isinstance(parent.get("n_seeds"), int):
        return parent["n_seeds"]
    return len(reference.get("seeds", [])) or 1


BAND_KEYS = ("miou", "fully_supervised", "fa_train_miou")  # stage-2 scores, wherever they sit
EXACT_KEYS = ("floor",)  # deterministic numbers in the stage-2 notebooks' files (and every pseudo_mask*)


def _kind(stem: str, path: tuple) -> str:
    names = [p for p in path if isinstance(p, str)]
    if any(k in SKIPPED_KEYS for k in names) or (names and names[0].startswith(PAPER_PREFIX)):
        return "skip"
    if stem in DETERMINISTIC_FILES or any(p.startswith("pseudo_mask") or p in EXACT_KEYS for p in names):
        return "exact"
    if "convergence" in names:  # per-epoch validation scores: too noisy to compare one by one
        return "skip"
    if names and (names[-1] in BAND_KEYS or (names[-1] == "per_seed" and isinstance(path[-1], int))):
        return "band"
    return "skip"


def compare(reference_dir: str | Path, new_dir: str | Path) -> dict:
    """Compare every ``*.json`` of ``reference_dir`` with the same file in ``new_dir``.

    Returns:
        ``{"failures": [messages], "checked": {"exact": n, "band": n}, "skipped": n, "sigma": σ,
        "largest": {"exact": max relative difference, "band": max |difference| / its band}}``.
    """
    reference_dir, new_dir = Path(reference_dir), Path(new_dir)
    files = sorted(reference_dir.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no reference results (*.json) in {reference_dir}")
    final = reference_dir / "06_final_benchmark.json"
    sigma = seed_sigma(json.loads(final.read_text())) if final.is_file() else 0.0
    failures: list[str] = []
    checked = {"exact": 0, "band": 0}
    largest = {"exact": 0.0, "band": 0.0}
    skipped = 0
    for ref_file in files:
        stem, new_file = ref_file.stem, new_dir / ref_file.name
        if not new_file.is_file():
            failures.append(f"{stem}: missing in {new_dir}")
            continue
        ref, new = json.loads(ref_file.read_text()), json.loads(new_file.read_text())
        new_leaves = dict(_leaves(new))
        for path, want in _leaves(ref):
            kind = _kind(stem, path)
            if kind == "skip" or isinstance(want, str | bool) or want is None:
                skipped += kind == "skip"
                if kind != "skip" and new_leaves.get(path, "absent") != want:
                    failures.append(
                        f"{stem}:{'/'.join(map(str, path))}: {new_leaves.get(path)!r} != {want!r}"
                    )
                continue
            got = new_leaves.get(path)
            where = f"{stem}:{'/'.join(map(str, path))}"
            if not isinstance(got, int | float) or isinstance(got, bool):
                failures.append(f"{where}: {got!r}, reference {want!r}")
                continue
            checked[kind] += 1
            if kind == "exact":
                diff = abs(got - want) / max(abs(want), 1e-12) if want else abs(got)
                largest["exact"] = max(largest["exact"], diff)
                if diff > REL_TOL:
                    failures.append(f"{where}: {got!r} != {want!r} (deterministic)")
            else:
                tol = band(sigma, _seeds_behind(ref, path))
                largest["band"] = max(largest["band"], abs(got - want) / tol)
                if abs(got - want) > tol:
                    failures.append(f"{where}: {got:.4f} vs reference {want:.4f}, outside ±{tol:.4f}")
    return {"failures": failures, "checked": checked, "skipped": skipped, "sigma": sigma, "largest": largest}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m arml.regress REFERENCE_RESULTS NEW_RESULTS", file=sys.stderr)
        return 2
    report = compare(*args)
    print(
        f"checked {report['checked']['exact']} deterministic numbers (relative tolerance {REL_TOL:g}) and "
        f"{report['checked']['band']} stage-2 scores (band {K:g}·σ·√(2/n), σ = {report['sigma']:.4f}); "
        f"skipped {report['skipped']}"
    )
    print(
        f"largest deterministic difference {report['largest']['exact']:.2e} (relative); "
        f"largest stage-2 difference {report['largest']['band']:.2f} of its band"
    )
    for failure in report["failures"]:
        print("FAIL", failure)
    print("regression: " + ("FAILED" if report["failures"] else "ok"))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
