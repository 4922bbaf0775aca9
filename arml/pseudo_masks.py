"""Pseudo masks as a stage of their own: a stage-1 classifier's CAMs → one palette PNG per training image.

This is the bridge between the two stages of ARML (paper §2.1): the classifier only ever saw image-level
labels; its class activation maps, normalised, gated by the label and cut by the background rule, become
the noisy pixel labels that stage 2 learns from (docs/paper_vs_code.md §3).

Every mask folder ``<root>/train_PM/<name>/`` carries a ``manifest.json`` saying what made it: the
:class:`PseudoMaskConfig` (its ``method`` among them), the classifier's run folder and weights digest, the
dataset, the absolute data root and a fingerprint of the training images
(:func:`arml.runfolder.data_record`), the number of masks and, when the dataset has ``train_gt/`` (the
synthetic data), their mIoU against the truth. The manifest is written before the first mask, so even a
folder left by a crash says what made its masks. A second run with the same name resumes (only missing
files are made) when config, classifier and training images match, and is refused otherwise, naming what
differs, unless ``overwrite=True`` (``--overwrite`` on the command line) regenerates the folder. Every
input (the stage-1 run, the data, the device, the classifier) is checked before the folder is touched, so
a call that fails leaves no folder behind.

>>> config = PseudoMaskConfig(method="layercam")
>>> config.method, config.normalization
('layercam', 'global')
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from arml.cams import CAM_METHODS, cams_to_masks, compute_cams, default_background
from arml.datasets import TrainDataset, list_pngs, read_mask, write_mask
from arml.metrics import SegmentationMetrics
from arml.options import BACKGROUND_RULES, CAM_NORMALIZATIONS, Config, option
from arml.runfolder import check_inputs, data_changes, data_record, read_json_file, validate_inputs
from arml.runtime import clean_temp_files, to_jsonable, write_json

MANIFEST = "manifest.json"
# Fields that cannot change a mask: left out when a folder's manifest is compared with a new request.
_RUNTIME_FIELDS = ("batch_size",)


@dataclass
class PseudoMaskConfig(Config):
    """How CAMs become pseudo masks (docs/paper_vs_code.md §3).

    Defaults follow the released code: Grad-CAM, single scale, no flip, global min-max, label gating, the
    LUAD background rule (grey > 200, white blobs under 50 px dropped). ``use_ars=None`` applies ARS when
    the classifier has it, except under the official recipe, whose pseudo masks come from the ARS-free
    network (docs/paper_vs_code.md §6 row 9).
    """

    method: str = option("gradcam", "CAM method", choices=CAM_METHODS, aliases=("--cam",))
    scales: tuple[float, ...] = option((1.0,), "image scales whose CAMs are summed (released code: 1.0)")
    flip: bool = option(False, "also add the CAMs of the horizontally flipped image")
    normalization: str = option(
        "global",
        "CAM min-max: over all classes of an image (released code) or per class map",
        choices=CAM_NORMALIZATIONS,
    )
    background: str | None = option(
        None,
        "background rule (default: the dataset's; luad marks white glass as class 4)",
        choices=(*BACKGROUND_RULES, None),
    )
    bg_threshold: float = option(200.0, "grey level (0-255) above which a pixel counts as white")
    bg_min_size: int = option(50, "white blobs smaller than this many pixels stay tissue")
    use_ars: bool | None = option(
        None, "apply ARS when making CAMs (default: yes, except the official recipe)"
    )
    batch_size: int = option(32, "images per CAM batch (does not change the masks)")

    def __post_init__(self) -> None:
        self.check_choices()
        self.scales = tuple(self.scales) if isinstance(self.scales, list | tuple) else self.scales
        if (
            not isinstance(self.scales, tuple)
            or not self.scales
            or not all(isinstance(s, int | float) and not isinstance(s, bool) and s > 0 for s in self.scales)
        ):
            raise ValueError(f"PseudoMaskConfig.scales must be positive numbers, got {self.scales!r}")
        self.scales = tuple(float(s) for s in self.scales)
        for name in ("flip",):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"PseudoMaskConfig.{name} must be True or False, got {getattr(self, name)!r}"
                )
        if self.use_ars not in (None, True, False):
            raise ValueError(f"PseudoMaskConfig.use_ars must be None, True or False, got {self.use_ars!r}")
        if not isinstance(self.bg_threshold, int | float) or not 0 <= self.bg_threshold <= 255:
            raise ValueError(f"PseudoMaskConfig.bg_threshold must be in [0, 255], got {self.bg_threshold!r}")
        for name in ("bg_min_size", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PseudoMaskConfig.{name} must be an int >= 1, got {value!r}")

    def resolve_use_ars(self, model) -> bool:
        """Whether CAMs of ``model`` (a :class:`~arml.models.Classifier`) go through ARS under this config."""
        if self.use_ars is not None:
            return self.use_ars
        return model.ars.parts is not None and model.recipe != "official"

    def to_masks(
        self, cams: torch.Tensor, labels: torch.Tensor, images: torch.Tensor, dataset: str
    ) -> torch.Tensor:
        """``B×K×H×W`` CAMs → ``B×H×W`` int64 pseudo masks (0..3 tissue, 4 background) under this config.

        The one call from CAMs to masks: :func:`generate_pseudo_masks` uses it for the files it writes, the
        notebooks (through :func:`arml.analysis.pseudo_masks_from_cams`) for masks they keep in memory.
        """
        background = self.background or default_background(dataset)
        return cams_to_masks(
            cams, labels, images, self.normalization, background, self.bg_threshold, self.bg_min_size
        )


def read_manifest(folder: str | Path) -> dict | None:
    """The ``manifest.json`` of a pseudo-mask folder, or None when it has none."""
    path = Path(folder) / MANIFEST
    return read_json_file(path) if path.is_file() else None


def _comparable(manifest: dict, data: bool = True) -> dict:
    """What decides a folder's masks: config (less batch size), classifier weights, dataset and, with
    ``data``, the training images' fingerprint."""
    config = {k: v for k, v in manifest.get("config", {}).items() if k not in _RUNTIME_FIELDS}
    fields = {
        **{f"config.{k}": v for k, v in config.items()},
        "classifier weights": manifest.get("classifier", {}).get("weights_digest"),
        "dataset": manifest.get("dataset"),
    }
    fingerprint = (manifest.get("data") or {}).get("fingerprint")
    if data and fingerprint is not None:  # manifests made before the data fingerprint have none
        fields["data fingerprint"] = fingerprint
    return fields


def manifest_changes(saved: dict, wanted: dict) -> list[str]:
    """``"field: old → new"`` for every difference that makes a folder's masks not the ones asked for.

    The training images (``data``) are compared when both manifests record them; a difference is named
    per folder (:func:`arml.runfolder.data_changes`).
    """
    old, new = _comparable(saved), _comparable(wanted)
    if "data fingerprint" not in old or "data fingerprint" not in new:
        old.pop("data fingerprint", None)
        new.pop("data fingerprint", None)
    changes = [
        f"{k}: {old.get(k)!r} → {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k) and k != "data fingerprint"
    ]
    if old.get("data fingerprint") != new.get("data fingerprint"):
        detail = data_changes(saved["data"], wanted["data"]) or ["fingerprint differs"]
        changes.append(
            f"training images ({saved.get('data_root')} → {wanted.get('data_root')}): {'; '.join(detail)}"
        )
    return changes


def manifest_digest(manifest: dict) -> str:
    """A short SHA-256 of what made a folder's masks: config (less batch size), classifier weights, dataset.

    Stage 2 records it in its ``data.json``, so a run trained on masks that were since made again
    differently is not mistaken for a run on the current masks. The training images are left out (stage 2
    fingerprints them itself), so the digest stays the same when an older manifest gains their record.
    """
    text = json.dumps(_comparable(manifest, data=False), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _up_to_date(folder: Path, wanted: dict) -> bool:
    """Whether ``folder`` holds a finished set of the masks ``wanted`` describes, from the same training
    images (same fingerprint): then those images passed :func:`~arml.runfolder.validate_inputs` already."""
    saved = read_manifest(folder) if (folder / MANIFEST).is_file() else None
    return bool(saved and saved.get("complete") and "data" in saved and not manifest_changes(saved, wanted))


def _prepare_folder(folder: Path, wanted: dict, overwrite: bool) -> None:
    """Refuse, wipe or keep ``folder`` for the masks described by ``wanted``; drop stale temp files."""
    pngs = list_pngs(folder) if folder.is_dir() else []  # hidden temp files are not masks
    has_manifest = (folder / MANIFEST).is_file()
    if overwrite and (has_manifest or pngs):
        # manifest first: a crash part-way leaves masks of unknown origin, which are refused, never masks
        # that an old manifest would vouch for; then the rest, whatever the manifest said (even a damaged one)
        (folder / MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(folder)
    elif has_manifest:
        changes = manifest_changes(read_manifest(folder), wanted)
        if changes:
            raise ValueError(
                f"{folder} holds pseudo masks made differently ({'; '.join(changes)}); pass --overwrite "
                "(overwrite=True) to regenerate them, or choose another --name"
            )
    elif pngs:
        raise ValueError(
            f"{folder} holds {len(pngs)} masks without a {MANIFEST}, so what made them is unknown; pass "
            "--overwrite (overwrite=True) to regenerate them, or choose another --name"
        )
    folder.mkdir(parents=True, exist_ok=True)
    clean_temp_files(folder, ".png")  # left by an atomic write that was killed


def score_folder(folder: str | Path, truth: str | Path, names: list[str]) -> dict:
    """:class:`~arml.metrics.SegmentationMetrics` of the masks ``names`` in ``folder`` against ``truth``."""
    scorer = SegmentationMetrics(4)
    for name in names:
        scorer.update(read_mask(Path(folder) / name), read_mask(Path(truth) / name))
    return scorer.compute()


def generate_pseudo_masks(
    run_dir: str | Path,
    name: str,
    data_root: str | Path | None = None,
    config: PseudoMaskConfig | None = None,
    device: str = "auto",
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, object]:
    """Write one palette PNG pseudo mask per training image to ``<data_root>/train_PM/<name>/``.

    Files keep the training image's name and hold indices 0..4; each is written atomically. CAMs run
    batched. See the module docstring for ``manifest.json``, resuming and ``overwrite``.

    Args:
        run_dir: a finished stage-1 run folder (:func:`~arml.stage1.train_classifier`).
        name: folder name under ``train_PM/``.
        data_root: dataset root; default: the one the classifier was trained on.
        config: how CAMs become masks; default :class:`PseudoMaskConfig()`.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ….
        progress: a progress bar.
        overwrite: regenerate a folder that holds masks made differently (or of unknown origin).

    Returns:
        ``{"folder", "written", "skipped", "seconds", "images_per_s", "metrics", "manifest", "data_root"}``;
        ``metrics`` is the :class:`~arml.metrics.SegmentationMetrics` result dict, or ``None`` without
        ``train_gt/``; ``data_root`` is the data used, absolute.

    Raises:
        ValueError: the folder holds masks made with another config, classifier or training images (and
            not ``overwrite``); ``run_dir`` is not a finished stage-1 run; a device without CUDA asked for
            CUDA; ``name`` is not a plain folder name.
        FileNotFoundError: no run in ``run_dir``, no data at ``data_root``.
    """
    from arml.evaluation import check_device
    from arml.stage1 import FINISHED, classifier_digest, load_classifier, load_config

    config = config or PseudoMaskConfig()
    if not isinstance(config, PseudoMaskConfig):
        raise TypeError(f"config must be a PseudoMaskConfig, got {type(config).__name__}")
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        raise ValueError(f"--name must be a plain folder name (made under train_PM/), got {name!r}")
    # Every input is checked before the folder is touched: a failing call leaves no train_PM/<name>.
    stage1 = load_config(run_dir)  # a stage-2 folder or no run at all: a message naming what it is
    if not (Path(run_dir) / FINISHED).is_file():
        raise ValueError(
            f"{run_dir} holds an unfinished stage-1 run (no {FINISHED}); finish it with arml train-cls "
            f"--out {run_dir} and the same options, then make its pseudo masks"
        )
    root = check_inputs(data_root or stage1.data_root, splits=())  # the root and train/ exist
    dev = check_device(device)
    folder = root / "train_PM" / name
    manifest = {
        "config": to_jsonable(config.to_dict()),
        "method": config.method,
        "classifier": {"run": str(Path(run_dir).resolve()), "weights_digest": classifier_digest(run_dir)},
        "dataset": stage1.dataset,
        "data_root": str(root),
        "data": data_record(root, {"train": root / "train"}),
    }
    fresh = overwrite or not _up_to_date(folder, manifest)
    if fresh:  # a finished folder's images were checked then
        truth = root / "train_gt"  # the synthetic data's pixel truth, to score the masks: checked as well
        validate_inputs(root, stage1.dataset, ("train",), truth if truth.is_dir() else None, progress)
    dataset = TrainDataset(root, stage1.dataset)
    model = load_classifier(run_dir, device=str(dev))
    use_ars = config.resolve_use_ars(model)
    _prepare_folder(folder, manifest, overwrite)
    if fresh:  # a reused finished folder stays "complete" (another process may be reading it right now)
        write_json(folder / MANIFEST, {**manifest, "complete": False})

    todo = [i for i, p in enumerate(dataset.files) if not (folder / p.name).exists()]
    started = time.perf_counter()
    loader = DataLoader(Subset(dataset, todo), batch_size=config.batch_size, shuffle=False)
    for images, labels, names in tqdm(loader, desc=f"pseudo masks {name}", disable=not progress):
        images = images.to(dev)
        cams = compute_cams(model, images, config.method, config.scales, config.flip, use_ars=use_ars)
        masks = config.to_masks(cams, labels.to(dev), images, stage1.dataset)
        for mask, file_name in zip(masks.cpu().numpy(), names, strict=True):
            write_mask(folder / file_name, mask, stage1.dataset)
    seconds = time.perf_counter() - started

    names = [p.name for p in dataset.files]
    metrics = score_folder(folder, root / "train_gt", names) if (root / "train_gt").is_dir() else None
    manifest.update(complete=True, count=len(names), miou=None if metrics is None else metrics["miou"])
    write_json(folder / MANIFEST, manifest)
    return {
        "folder": str(folder),
        "written": len(todo),
        "skipped": len(dataset) - len(todo),
        "seconds": seconds,
        "images_per_s": len(todo) / seconds if todo and seconds > 0 else float("nan"),
        "metrics": metrics,
        "manifest": manifest,
        "data_root": str(root),
    }
