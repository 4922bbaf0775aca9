"""The synthetic dataset's folder: is it arml's, is it complete, and what would an overwrite remove?

arml only deletes what arml made (:func:`plan_overwrite`): a folder counts as arml's when its ``synth.json``
(or the ``synth.partial.json`` of an unfinished run) was written by :mod:`arml.synth` and every file in
``train/``, ``train_gt/``, ``val/`` and ``test/`` is one that run writes. Pseudo masks in ``train_PM/`` are
kept unless asked. :func:`arml.synth.generate_dataset` follows these rules.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, fields, replace
from pathlib import Path

from arml.datasets import list_pngs
from arml.options import SPLITS
from arml.synth import SynthConfig, patch_stem

SYNTH_JSON = "synth.json"  # written last: its presence marks a complete dataset
PARTIAL_JSON = "synth.partial.json"  # written first, removed last: a run in progress or killed
PSEUDO_MASKS = "train_PM"  # added by later stages; kept by overwrite unless dropped
DATASET_ENTRIES = ("train", "train_gt", "val", "test", SYNTH_JSON, PARTIAL_JSON)
# a temporary file of atomic_write: arml's own prefix, or the plain ".<stem>.<8 random>" of older versions
_TEMP = re.compile(r"\.(?:arml-tmp-)?(?P<stem>.+)\.[A-Za-z0-9_]{8}\.png")


def read_meta(path: Path) -> dict | None:
    """The metadata in ``synth.json`` / ``synth.partial.json``; None when absent, unreadable or not arml's."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not str(meta.get("generator", "")).startswith("arml.synth/"):
        return None
    return meta


def differing_keys(found: dict, meta: dict) -> list[str]:
    """The keys of ``meta`` whose values ``found`` does not share (compared as JSON)."""
    return sorted(k for k in meta if found.get(k) != json.loads(json.dumps(meta[k])))


def existing_problem(out: Path, meta: dict, config: SynthConfig, seed: int, dataset: str) -> str | None:
    """Why ``out`` does not already hold exactly this complete dataset (None: it does)."""
    if not (out / SYNTH_JSON).exists():
        partial = read_meta(out / PARTIAL_JSON)
        if partial is not None:
            differ = differing_keys(partial, meta)
            what = f"other settings (differs in: {', '.join(differ)})" if differ else "these settings"
            return f"an unfinished synthetic dataset made with {what}"
        return f"files but no {SYNTH_JSON} (not made by arml.synth, or an unfinished run of an older version)"
    try:
        found = json.loads((out / SYNTH_JSON).read_text())
    except (OSError, ValueError) as err:
        return f"an unreadable {SYNTH_JSON} ({err})"
    differ = differing_keys(found, meta) if isinstance(found, dict) else ["everything"]
    if differ:
        return f"a synthetic dataset made with other settings (differs in: {', '.join(differ)})"
    for split in SPLITS:
        folders = ("train", "train_gt") if split == "train" else (f"{split}/img", f"{split}/mask")
        want = {patch_stem(seed, split, i, config, dataset) for i in range(config.count(split))}
        for folder in folders:
            have = (
                [p.stem.rsplit("[", 1)[0] for p in list_pngs(out / folder)] if (out / folder).is_dir() else []
            )
            if set(have) != want or len(have) != len(want):
                return f"an incomplete or altered dataset ({folder}/ has {len(have)} of {len(want)} expected files)"
    return None


def describe_entry(path: Path) -> str:
    if not path.is_dir():
        return path.name
    n = sum(1 for p in path.rglob("*") if p.is_file())
    return f"{path.name}/ ({n} file{'s' if n != 1 else ''})"


def _holdings(out: Path) -> str:
    """What the dataset entries of ``out`` hold, e.g. ``train/ (48 files), synth.json``."""
    return ", ".join(describe_entry(out / n) for n in (*DATASET_ENTRIES, PSEUDO_MASKS) if (out / n).exists())


def _expected_stems(meta: dict) -> dict[str, set[str]] | None:
    """Per split, the file stems that the run described by ``meta`` writes (None: ``meta`` is not usable)."""
    try:
        config = replace(
            SynthConfig(),
            **{
                k: tuple(v) if isinstance(v, list) else v
                for k, v in meta["config"].items()
                if k in {f.name for f in fields(SynthConfig)}
            },
        )
        seed, dataset = int(meta["seed"]), meta["dataset"]
        return {
            split: {patch_stem(seed, split, i, config, dataset) for i in range(config.count(split))}
            for split in SPLITS
        }
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _foreign_files(out: Path, stems: dict[str, set[str]]) -> list[Path]:
    """Everything in the dataset entries of ``out`` that no arml.synth run with these stems writes."""

    def own(name: str, split: str) -> bool:
        temp = _TEMP.fullmatch(name)
        if name.startswith(".") and temp is None:
            return False
        stem = temp.group("stem") if temp else name.removesuffix(".png")
        if split == "train":
            stem = stem.rsplit("[", 1)[0] if "[" in stem else None
        return (temp is not None or name.endswith(".png")) and stem in stems[split]

    foreign = []
    layout = {
        "train": ("train", ""),
        "train_gt": ("train", ""),
        "val": ("val", "img mask"),
        "test": ("test", "img mask"),
    }
    for entry, (split, subfolders) in layout.items():
        top = out / entry
        if not top.is_dir():
            if top.exists():
                foreign.append(top)
            continue
        folders = [top / sub for sub in subfolders.split()] if subfolders else [top]
        foreign += [p for p in top.iterdir() if subfolders and p not in folders]
        for folder in folders:
            if folder.is_dir():
                foreign += [p for p in folder.iterdir() if not (p.is_file() and own(p.name, split))]
            elif folder.exists():
                foreign.append(folder)
    return sorted(foreign)


def _pseudo_mask_problem(folder: Path) -> list[Path]:
    """Files under ``train_PM/`` that are not arml pseudo masks (folders with a manifest.json)."""
    foreign = []
    for sub in sorted(folder.iterdir()):
        if not sub.is_dir() or not (sub / "manifest.json").is_file():
            foreign.append(sub)
            continue
        foreign += [
            p
            for p in sub.iterdir()
            if not p.is_file()
            or not (p.suffix == ".png" or p.name == "manifest.json" or p.name.startswith("."))
        ]
    return foreign


@dataclass(frozen=True)
class OverwritePlan:
    """What ``generate_dataset(out, overwrite=True)`` would do to ``out`` (see :func:`plan_overwrite`).

    Attributes:
        out: the dataset root.
        remove: the entries it deletes (``train/``, ``train_gt/``, ``val/``, ``test/``, ``synth.json``,
            ``synth.partial.json``, and ``train_PM/`` only when asked), in that order.
        keep: the pseudo-mask folders ``train_PM/<name>`` it keeps.
        refusal: why it deletes nothing and refuses instead (None: it may go ahead).
    """

    out: Path
    remove: tuple[Path, ...] = ()
    keep: tuple[Path, ...] = ()
    refusal: str | None = None

    def describe(self) -> str:
        """Lines for a person: what is removed and what is kept (or why nothing is)."""
        if self.refusal is not None:
            return self.refusal
        lines = [f"overwrite {self.out}: removes {describe_entry(p)}" for p in self.remove]
        if self.keep:
            names = ", ".join(p.name for p in self.keep)
            lines.append(
                f"overwrite {self.out}: keeps {len(self.keep)} pseudo-mask folder(s) in {PSEUDO_MASKS}/ "
                f"({names}); they were made from the old images: drop them with drop_pseudo_masks=True "
                "(arml synth --drop-pseudo-masks)"
            )
        return "\n".join(lines) if lines else f"overwrite {self.out}: nothing to remove"


def plan_overwrite(out: str | Path, drop_pseudo_masks: bool = False) -> OverwritePlan:
    """What overwriting the dataset in ``out`` would remove and keep, or why arml refuses to; changes nothing.

    arml only deletes what arml made. ``out`` counts as arml's when its ``synth.json`` (or the
    ``synth.partial.json`` of an unfinished run) was written by :mod:`arml.synth`, and only if every file
    in ``train/``, ``train_gt/``, ``val/`` and ``test/`` is one that this run writes (or a temporary file
    of a killed write). Anything else (no ``synth.json``: a real dataset or your own files; a file you
    added) makes the plan a refusal that names what is there. Pseudo masks in ``train_PM/`` are kept
    unless ``drop_pseudo_masks``; dropping them also refuses when ``train_PM/`` holds anything but
    pseudo-mask folders (each with its ``manifest.json``).

    ``generate_dataset(..., overwrite=True)`` follows this plan; call it first to show the user what will
    go (:meth:`OverwritePlan.describe`).
    """
    out = Path(out)
    present = [out / n for n in DATASET_ENTRIES if (out / n).exists()]
    pm = out / PSEUDO_MASKS
    keep = (
        tuple(sorted(p for p in pm.iterdir() if p.is_dir())) if pm.is_dir() and not drop_pseudo_masks else ()
    )
    if not present:
        return OverwritePlan(out, keep=keep)
    metas = [m for m in (read_meta(out / SYNTH_JSON), read_meta(out / PARTIAL_JSON)) if m is not None]
    refuse = "arml will not delete files it did not write: choose another folder, or move them away yourself"
    if not metas:
        why = (
            f"no {SYNTH_JSON}; or an older version's run was killed before writing it"
            if not (out / SYNTH_JSON).exists()
            else f"its {SYNTH_JSON} was not written by arml.synth or cannot be read"
        )
        return OverwritePlan(
            out, refusal=f"{out} was not made by arml synth ({why}); it holds {_holdings(out)}. {refuse}"
        )
    stems = {split: set() for split in SPLITS}
    for meta in metas:
        found = _expected_stems(meta)
        if found is None:
            return OverwritePlan(
                out,
                refusal=f"{out}: cannot tell which files arml.synth wrote here (a {SYNTH_JSON} without a usable config). {refuse}",
            )
        for split in SPLITS:
            stems[split] |= found[split]
    foreign = _foreign_files(out, stems)
    if drop_pseudo_masks and pm.exists():
        foreign += _pseudo_mask_problem(pm) if pm.is_dir() else [pm]
    if foreign:
        shown = ", ".join(str(p.relative_to(out)) for p in foreign[:3])
        return OverwritePlan(
            out,
            refusal=f"{out} holds {len(foreign)} file(s) or folder(s) that arml synth did not write "
            f"(first: {shown}). {refuse}",
        )
    remove = [out / n for n in ("train", "train_gt", "val", "test") if (out / n).exists()]
    if drop_pseudo_masks and pm.exists():
        remove.append(pm)
    remove += [out / n for n in (SYNTH_JSON, PARTIAL_JSON) if (out / n).exists()]
    return OverwritePlan(out, remove=tuple(remove), keep=keep)


def remove_entry(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
