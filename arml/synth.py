"""The built-in synthetic H&E dataset, written to disk in the LUAD-HistoSeg layout.

See docs/synthetic_data.md for the design and its sources.

Why: the real datasets cannot be downloaded everywhere, and a teaching repo must run end to end on a laptop.
Every loader, checker and notebook runs the same code on this data and on the real data. Results on it are
*synthetic* and not comparable with the paper's numbers.

This module is about the dataset: its size and difficulty (:class:`SynthConfig`, :data:`SYNTH_PROFILES`), the
seed of every patch (:func:`patch_rng`), file names, masks and ``synth.json`` (:func:`generate_dataset`,
:func:`config_from_json`), and what overwriting a folder would remove (:func:`plan_overwrite`: only what
arml.synth wrote, and ``train_PM/`` only when asked). Each patch is drawn by
:func:`arml.tissue.generate_patch`, which explains how the tissue is rendered and the stains mixed.

The mask holds the class index per pixel (LUAD order 0 TE, 1 NEC, 2 LYM, 3 TAS) and 4 for glass and for
slivers (classes covering at most ``label_threshold`` of the patch, also left out of the label).
``dataset="bcss"`` maps them to the BCSS-WSSS order with :data:`LUAD_TO_BCSS`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from arml.datasets import BACKGROUND, DATASETS, NUM_CLASSES, format_train_name, write_mask
from arml.options import SPLITS
from arml.runtime import atomic_write, clean_temp_files
from arml.tissue import check_split, generate_patch

GENERATOR_VERSION = "arml.synth/2"  # 2: larger, smoother regions (region_scale 1.0, 2 octaves)
LUAD_TO_BCSS = np.array([0, 3, 2, 1, BACKGROUND], dtype=np.uint8)  # TE→TUM, NEC→NEC, LYM→LYM, TAS→STR


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
            give smaller, more interlocking regions. 1.0 with 2 octaves (the default) gives 1/2/3 labelled
            classes per patch in about LUAD-HistoSeg's proportions with regions of several CAM cells
            (docs/synthetic_data.md, "Scale"); the first version used 0.35 with 3 octaves.
        region_octaves: octaves of the region noise (each half the feature size of the one before, at 0.55×
            the amplitude); more octaves give more ragged boundaries.
        background_fraction: probability that a patch contains glass (a tissue edge or a hole of 3–35 %).
        confounders: 0…1, strength of the traps for image-level supervision: stray lymphocytes in tumour and
            stroma (up to ~30 per 128 µm field) and necrosis eosin as pink as stroma.
        label_threshold: a class is in the label iff it covers more than this fraction of the patch; smaller
            slivers become 4 (excluded) in the mask.
        class_prior: prior over (TE, NEC, LYM, TAS) before tempering (docs/synthetic_data.md).
        classes_per_patch: probabilities of drawing 1, 2 or 3 classes. Slivers lower the counts that reach
            the label: the defaults give about 0.28/0.44/0.28 labelled classes per patch, a little more mixed
            than docs/synthetic_data.md's 0.30/0.45/0.25, for a harder default.
    """

    size: int = 64
    n_train: int = 2000
    n_val: int = 250
    n_test: int = 250
    microns_per_pixel: float = 2.0
    label_noise: float = 0.0
    stain_shift: float = 0.1
    imbalance: float = 1.0
    region_scale: float = 1.0
    region_octaves: int = 2
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
        need(
            isinstance(self.region_octaves, int) and 1 <= self.region_octaves <= 4,
            "region_octaves",
            "an int in [1, 4]",
        )
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
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[check_split(split)]


SYNTH_PROFILES: dict[str, SynthConfig] = {
    "quick": SynthConfig(n_train=48, n_val=16, n_test=16),
    "cpu": SynthConfig(n_train=400, n_val=80, n_test=120),  # sized for the 20-min CPU main job
    "paper": SynthConfig(size=224, n_train=2000, n_val=300, n_test=300, microns_per_pixel=1.0),
}
# the paper data at a handful of patches, for the paper-smoke profile (arml.profiles)
SYNTH_PROFILES["paper-smoke"] = replace(SYNTH_PROFILES["paper"], n_train=8, n_val=4, n_test=4)


def patch_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator that :func:`generate_dataset` uses for patch ``index`` of ``split``."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(check_split(split)), index]))


# ------------------------------------------------------------------------------------------------ on disk
def patch_stem(seed: int, split: str, index: int, config: SynthConfig, dataset: str) -> str:
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
    image_path, mask_path = _paths(
        out, split, patch_stem(seed, split, index, config, dataset), label, dataset
    )
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


def generate_dataset(
    out: str | Path,
    profile: str | SynthConfig = "quick",
    seed: int = 0,
    dataset: str = "luad",
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    drop_pseudo_masks: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write a synthetic dataset in the LUAD-HistoSeg (or BCSS-WSSS) layout and return its root.

    Layout: ``train/<stem>[a b c d].png`` with ``train_gt/<same name>`` (palette masks, the truth even under
    label noise), ``{val,test}/{img,mask}/<stem>.png`` and ``synth.json`` (config, seed, dataset, counts,
    generator version; written last, so its presence marks a complete run). ``dataset="bcss"`` writes
    BCSS-WSSS names (``SYN-00012_xmin…_MPP-2.0000+0[1101].png``), class order (TUM, STR, LYM, NEC) and palette.
    While it runs, ``synth.partial.json`` (the same metadata) marks the folder as arml's: a killed run is
    finished by calling again with the same arguments, and can be overwritten.

    Patch ``i`` of a split comes from ``SeedSequence([seed, split_id, i])`` (:func:`patch_rng`), so the files
    are byte-identical for the same seed whatever ``workers`` is.

    Args:
        out: dataset root to create.
        profile: ``"quick"``, ``"cpu"``, ``"paper"``, ``"paper-smoke"`` (:data:`SYNTH_PROFILES`) or a :class:`SynthConfig`.
        seed: non-negative int.
        dataset: ``"luad"`` or ``"bcss"`` naming and class order.
        workers: processes (default ``os.cpu_count()``; 0 or 1 runs in this process).
        progress: show a tqdm progress bar.
        overwrite: replace a dataset that arml.synth made in ``out``, following :func:`plan_overwrite`:
            ``train``, ``train_gt``, ``val``, ``test`` and ``synth.json`` go; ``train_PM`` (pseudo masks)
            stays unless ``drop_pseudo_masks``. A folder arml did not make is never deleted.
        drop_pseudo_masks: with ``overwrite`` (only), also remove ``train_PM/``.
        log: called with one line per thing removed or kept, and per leftover temporary file removed
            (e.g. ``print``); nothing is printed otherwise.

    Raises:
        ValueError: unknown profile or dataset, bad seed or workers, ``drop_pseudo_masks`` without ``overwrite``.
        FileExistsError: ``out`` holds a partial or different dataset and ``overwrite`` is False (the message
            suggests overwrite only where it would be allowed), or ``overwrite`` is True but the plan refuses
            (files arml did not write; the message names them).
    """
    from arml.synth_folder import (
        DATASET_ENTRIES,
        PARTIAL_JSON,
        SYNTH_JSON,
        describe_entry,
        differing_keys,
        existing_problem,
        plan_overwrite,
        read_meta,
        remove_entry,
    )

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
    if drop_pseudo_masks and not overwrite:
        raise ValueError(
            "drop_pseudo_masks=True only applies with overwrite=True (arml synth --overwrite --drop-pseudo-masks)"
        )
    out = Path(out)
    say = log or (lambda line: None)
    meta = _metadata(config, seed, dataset)
    if any((out / name).exists() for name in DATASET_ENTRIES):
        problem = existing_problem(out, meta, config, seed, dataset)
        if problem is None and not overwrite:
            (out / PARTIAL_JSON).unlink(missing_ok=True)  # a run killed after writing synth.json
            return out
        unfinished = read_meta(out / PARTIAL_JSON)
        resume = (
            not overwrite
            and not (out / SYNTH_JSON).exists()
            and unfinished is not None
            and not differing_keys(unfinished, meta)
        )
        if not resume:
            plan = plan_overwrite(out, drop_pseudo_masks)
            if not overwrite and plan.refusal is None:
                raise FileExistsError(
                    f"{out} already holds {problem}; pass overwrite=True (arml synth --overwrite) to replace "
                    "it (pseudo masks in train_PM/ are kept), or choose another folder"
                )
            if not overwrite and any(read_meta(out / n) for n in (SYNTH_JSON, PARTIAL_JSON)):
                raise FileExistsError(f"{out} already holds {problem}. {plan.refusal}")
            if plan.refusal is not None:
                raise FileExistsError(plan.refusal)
            markers = [p for p in plan.remove if p.name in (SYNTH_JSON, PARTIAL_JSON)]
            for path in plan.remove:  # the markers last: a killed removal can be planned again
                if path not in markers:
                    line = f"overwrite {out}: removes {describe_entry(path)}"
                    remove_entry(path)
                    say(line)
            atomic_write(out / PARTIAL_JSON, lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"))
            for path in markers:
                if path.name != PARTIAL_JSON:
                    remove_entry(path)
                    say(f"overwrite {out}: removes {path.name}")
            if plan.keep:
                say(plan.describe().splitlines()[-1])
        for folder in (
            out,
            *(out / f for f in ("train", "train_gt", "val/img", "val/mask", "test/img", "test/mask")),
        ):
            for temp in clean_temp_files(folder):
                say(f"removed {temp} (left by a killed write)")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / PARTIAL_JSON, lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"))
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
    atomic_write(out / SYNTH_JSON, lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"))
    (out / PARTIAL_JSON).unlink()
    return out


def config_from_json(path: str | Path) -> SynthConfig:
    """The :class:`SynthConfig` recorded in a dataset's ``synth.json``."""
    raw = json.loads(Path(path).read_text())["config"]
    known = {f.name for f in fields(SynthConfig)}
    return replace(
        SynthConfig(), **{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in known}
    )
