"""The run folder both trainers write: config and data checks, resume, last/best checkpoints, atomic writes.

A run folder holds ``config.json`` (the run's :class:`~arml.options.Config` as a dict), ``last.pt`` (written
after every epoch: weights, optimiser states, step, history and every random-number state), ``best.pt``
(stage 2), ``history.json``, ``data.json`` (what data the run was made from: :func:`data_record`) and the
stage's outputs: stage 1 ends with ``classifier.pt`` (and ``weights.json``), stage 2 with ``metrics.json``.
That last output marks the run as *finished*.

One rule for both stages. With ``resume=True`` (the default; the command line's ``--restart`` sets
``resume=False``), for a folder that holds a run's progress (``last.pt``) or its finished output:

1. A ``config.json`` whose result fields (:func:`arml.runtime.config_changes`: everything but progress
   bars, device, workers, where the data lives and the evaluation batch size) differ from the new config
   is refused with a ``ValueError`` that names the differing fields. Nothing is touched; pass ``--restart``
   (``resume=False``) to start that folder over, or another ``--out``.
2. The data too must be the data the run was made from: ``data.json`` records the absolute data root and
   a fingerprint of the files the stage reads (:func:`data_record`: names and byte sizes, plus the
   upstream artefact's digest, such as the pseudo-mask manifest). A data root that does not exist, or
   data whose fingerprint differs, is refused the same way, naming the old and the new data and the
   flags (``--restart`` to train again on the new data, ``--out`` for another folder). Data that only
   moved (same fingerprint, another path) is accepted. Runs made before ``data.json`` existed are
   accepted unchecked.
3. Same config, same data and the finished output exists: the run is finished, and the trainer returns
   it without training.
4. Same config, same data and ``last.pt`` exists: training continues from the epoch after the one
   ``last.pt`` saved, with every weight, optimiser and random state, so it ends exactly as an
   uninterrupted run would (a run killed mid-epoch loses that epoch only). ``last.pt`` records the config
   too and is checked the same way.
5. Otherwise (no ``config.json``, or neither ``last.pt`` nor the finished output: a run that failed
   before its first epoch ended): a fresh start whatever the old config said; leftover run files are
   removed.

With ``resume=False`` the run files are removed and the run starts over, whatever the folder held.
Only the run files are ever removed, never other files in the folder. When only runtime fields differ
(another device, the data moved), ``config.json`` and ``data.json`` are rewritten with the new values.

Nothing is written when a :class:`RunFolder` is made: the trainers call :meth:`RunFolder.start` once the
config, the data (:func:`validate_inputs`) and the device have been checked, so a run that fails validation
leaves no folder behind; :meth:`RunFolder.start` also removes the temporary files of writes that a kill
interrupted. Every file is written atomically (:func:`arml.runtime.atomic_write`): a kill
leaves the previous version or none, never half a file.

>>> run = RunFolder("runs/demo", config, stage="stage 2", finished="metrics.json")  # doctest: +SKIP
>>> metrics = run.read_json("metrics.json") if run.finished else None  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from arml.data_check import require_dataset, validate_split
from arml.options import EVAL_SPLITS, Config
from arml.runtime import clean_temp_files, config_changes, load_checkpoint, save_checkpoint, write_json

CONFIG = "config.json"
DATA = "data.json"
LAST = "last.pt"
BEST = "best.pt"
HISTORY = "history.json"
# The files that say which stage made a folder (see run_kind)
STAGE_MARKERS = {"stage 1": ("classifier.pt", "weights.json"), "stage 2": ("metrics.json", "best.pt")}


# --------------------------------------------------------------------------------- what a run reads
def folder_fingerprint(folder: str | Path) -> dict:
    """``files``, ``bytes`` and a short SHA-256 of the sorted names and byte sizes of the ``*.png`` files
    directly inside ``folder`` (hidden files, such as an interrupted atomic write's, left out).

    Cheap by design: one directory listing and one ``stat`` per file, no file is opened (20,000 files: well
    under a second). A missing folder gives ``files=None``.
    """
    try:
        with os.scandir(folder) as entries:
            files = sorted(
                (e.name, e.stat().st_size)
                for e in entries
                if e.name.endswith(".png") and not e.name.startswith(".") and e.is_file()
            )
    except (FileNotFoundError, NotADirectoryError):
        return {"files": None, "bytes": None, "sha256": None}
    digest = hashlib.sha256()
    for name, size in files:
        digest.update(f"{name}\t{size}\n".encode())
    return {"files": len(files), "bytes": sum(size for _, size in files), "sha256": digest.hexdigest()[:16]}


def data_record(
    root: str | Path, folders: Mapping[str, str | Path], upstream: Mapping[str, object] | None = None
) -> dict:
    """What a stage is made from: the absolute data root and a fingerprint of the files it reads.

    Args:
        root: the data root (``--data``); recorded absolute and resolved.
        folders: label → folder, e.g. ``{"train": root / "train", "val/img": …}``. Only the label and the
            folder's :func:`folder_fingerprint` enter the fingerprint, so data that moved keeps it.
        upstream: digests of what the inputs were made by (e.g. the pseudo-mask manifest's), also hashed.

    Returns:
        ``{"data_root", "fingerprint", "folders": {label: {"path", "files", "bytes", "sha256"}},
        "upstream"}``, as ``data.json`` and the pseudo-mask manifest store it.
    """
    root = Path(root).expanduser().resolve()
    parts = {}
    for label, folder in folders.items():
        folder = Path(folder).expanduser().resolve()
        shown = folder.relative_to(root).as_posix() if folder.is_relative_to(root) else str(folder)
        parts[label] = {"path": shown, **folder_fingerprint(folder)}
    upstream = dict(upstream or {})
    hashed = {"folders": {k: v["sha256"] for k, v in parts.items()}, "upstream": upstream}
    fingerprint = hashlib.sha256(json.dumps(hashed, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"data_root": str(root), "fingerprint": fingerprint, "folders": parts, "upstream": upstream}


def _describe_folder(part: dict | None) -> str:
    if not part or part.get("files") is None:
        return "missing"
    return f"{part['files']} files, {part['bytes']} bytes"


def data_changes(saved: dict, current: dict) -> list[str]:
    """``"what: old → new"`` for every folder or upstream digest of two :func:`data_record` s that differs."""
    changes = []
    old, new = saved.get("folders", {}), current.get("folders", {})
    for label in sorted(set(old) | set(new)):
        a, b = old.get(label) or {}, new.get(label) or {}
        if a.get("sha256") != b.get("sha256"):
            was, now = _describe_folder(a), _describe_folder(b)
            detail = f"{was} → {now}" if was != now else f"{now}, other names or sizes"
            changes.append(f"{label}/: {detail}")
    old, new = saved.get("upstream", {}), current.get("upstream", {})
    changes += [
        f"{k}: {old.get(k)!r} → {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]
    return changes


def read_data_record(run_dir: str | Path) -> dict | None:
    """A run folder's ``data.json`` (see :func:`data_record`), or None for runs made before it existed."""
    path = Path(run_dir) / DATA
    return read_json_file(path) if path.is_file() else None


def read_checkpoint(path: str | Path, remedy: str) -> dict:
    """:func:`arml.runtime.load_checkpoint`, with a damaged file (truncated, not a checkpoint) restated as a
    ``ValueError`` naming it and ``remedy`` (what to run instead). A missing file stays a
    ``FileNotFoundError``, and the system refusing (permissions, I/O) an ``OSError``."""
    try:
        return load_checkpoint(path)
    except OSError:
        raise
    except Exception as err:  # torch.load: EOFError, RuntimeError, UnpicklingError, … on bad bytes
        raise ValueError(f"{path} cannot be read ({type(err).__name__}: {err}); {remedy}") from err


def read_json_file(path: str | Path):
    """A JSON run file; a damaged one is a ``ValueError`` naming the file (not a bare decoder message)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it or the folder holding it") from None


def run_kind(folder: str | Path) -> tuple[str | None, list[str]]:
    """Which stage made ``folder`` (``"stage 1"``, ``"stage 2"`` or None) and the files that say so.

    The finished outputs decide (:data:`STAGE_MARKERS`); an unfinished run is told by its ``config.json``
    (a stage-2 config names its training ``masks``, a stage-1 config its ``backbone``).
    """
    folder = Path(folder)
    for stage, markers in STAGE_MARKERS.items():
        found = [name for name in markers if (folder / name).is_file()]
        if found:
            return stage, found
    config = folder / CONFIG
    if config.is_file():
        try:
            fields = json.loads(config.read_text())
        except json.JSONDecodeError:
            return None, []
        if isinstance(fields, dict) and "masks" in fields:
            return "stage 2", [CONFIG]
        if isinstance(fields, dict) and "backbone" in fields:
            return "stage 1", [CONFIG]
    return None, []


def require_run(folder: str | Path, stage: str, expected: str) -> None:
    """Raise ``ValueError`` when ``folder`` is a run folder of another stage than ``stage``.

    Args:
        folder: the folder given (``--checkpoint``).
        stage: ``"stage 1"`` or ``"stage 2"``.
        expected: what the caller needs, for the message (e.g. ``"a stage-1 run folder (classifier.pt)"``).
    """
    kind, evidence = run_kind(folder)
    if kind is not None and kind != stage:
        raise ValueError(
            f"{folder} is a {kind} run folder (it holds {', '.join(evidence)}); expected {expected}"
        )


# --------------------------------------------------------------------------------- input checks
def check_inputs(root: str | Path, splits: Sequence[str] = EVAL_SPLITS, train: bool = True) -> Path:
    """Check, before any training, that a dataset root has the layout every stage relies on.

    The root exists; ``train/`` holds PNG images (with ``train``); each of ``splits`` has a non-empty ``img/`` folder and a
    ``mask/`` folder with a mask for every image. A missing ``test/`` is found here, not after the last
    epoch. (Decoding every file, sizes and mask values is :func:`arml.data_check.check_layout`'s.)

    Returns:
        The root, absolute.

    Raises:
        FileNotFoundError: what is missing, each problem naming its folder or file (up to five, then a
            count), and ``--data``.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist (--data)")
    problems = []
    if train and not _pngs(root / "train"):
        problems.append(f"{root / 'train'}: no training images (*.png)")
    for split in splits:
        images, masks = _pngs(root / split / "img"), set(_pngs(root / split / "mask"))
        if not images:
            problems.append(f"{root / split / 'img'}: no {split} images (*.png)")
        elif not (root / split / "mask").is_dir():
            problems.append(f"{root / split / 'mask'}: missing folder ({split} masks)")
        else:
            missing = [name for name in images if name not in masks]
            if missing:
                problems.append(
                    f"{root / split / 'mask'}: no mask for {len(missing)} of {len(images)} {split} images "
                    f"(first: {missing[0]})"
                )
    if problems:
        shown = problems[:5] + ([f"… and {len(problems) - 5} more"] if len(problems) > 5 else [])
        raise FileNotFoundError(
            f"--data {root} is not a complete dataset in the published layout (train/, val/ and test/ "
            "with img/ and mask/): " + "; ".join(shown)
        )
    return root


def validate_inputs(
    root: str | Path,
    dataset: str,
    splits: Sequence[str] = ("train", "val", "test"),
    masks_dir: str | Path | None = None,
    progress: bool = False,
) -> Path:
    """Everything a stage checks before its first epoch (or first CAM), so bad data fails in seconds.

    :func:`check_inputs` (the layout: a missing ``test/`` is named at once), then
    :func:`arml.data_check.require_dataset` (``--dataset`` fits the file names) and
    :func:`arml.data_check.validate_split` for each of ``splits`` (every file decoded, sizes, mask values
    0..4; for ``"train"`` with ``masks_dir``, a mask of the right size for every training image). One full
    decode of the splits: about 30 s for LUAD-HistoSeg's training split, nothing next to training. A split
    that passed is not decoded again in the same process while its folders keep their fingerprint
    (:func:`folder_fingerprint`: names and sizes), so the dozens of stage-2 runs of a notebook's grid pay
    for one decode.

    Returns:
        The root, absolute.

    Raises:
        FileNotFoundError: missing folders (:func:`check_inputs`).
        ValueError: the problems found, each naming its file, and the flag or command that helps.
    """
    root = check_inputs(root, [s for s in splits if s != "train"], train="train" in splits)
    require_dataset(root, dataset)
    for split in splits:
        masks = Path(masks_dir).resolve() if split == "train" and masks_dir is not None else None
        folders = (
            [root / "train", masks] if split == "train" else [root / split / "img", root / split / "mask"]
        )
        key = (
            str(root),
            dataset,
            split,
            *(folder_fingerprint(f)["sha256"] for f in folders if f is not None),
        )
        if key not in _VALIDATED:
            validate_split(root, split, dataset, masks, progress=progress)
            _VALIDATED.add(key)
    return root


_VALIDATED: set[tuple] = set()  # splits that passed validate_split in this process (see validate_inputs)


def _pngs(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if e.name.endswith(".png") and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


# --------------------------------------------------------------------------------- the run folder
class RunFolder:
    """One training run's folder, under the rule of the module docstring.

    Args:
        path: the folder (``--out``); created by :meth:`start`, not before.
        config: the run's config (a :class:`~arml.options.Config`: ``to_dict`` is what is saved).
        stage: the stage's name in messages (``"stage 1"``, ``"stage 2"``).
        finished: the output whose presence marks a finished run (``"classifier.pt"``, ``"metrics.json"``).
        outputs: the stage's other output files, removed with the run files.
        resume: the rule's ``resume``.
        data: the run's :func:`data_record` (rule 2; None: no data check, no ``data.json``).

    Raises:
        ValueError: with ``resume``, the folder's run was made with other result fields (rule 1) or from
            other data (rule 2).
    """

    def __init__(
        self,
        path: str | Path,
        config: Config,
        *,
        stage: str,
        finished: str,
        outputs: Sequence[str] = (),
        resume: bool = True,
        data: dict | None = None,
    ) -> None:
        self.path = Path(path)
        self.config = config.to_dict()
        self.stage, self.finished_file, self.resume, self.data = stage, finished, resume, data
        self.run_files = (CONFIG, DATA, LAST, BEST, HISTORY, finished, *outputs)
        saved = self.path / CONFIG
        progress = (self.path / LAST).is_file() or (self.path / finished).is_file()
        self._matched = resume and saved.is_file() and progress
        if self._matched:
            saved_config = read_json_file(saved)
            self._check(saved_config, saved)
            if data is not None:
                self._check_data(saved_config)

    @property
    def finished(self) -> bool:
        """Whether the folder holds a finished run of this config and data (rule 3); never with ``resume=False``."""
        return self._matched and (self.path / self.finished_file).is_file()

    def refresh(self) -> None:
        """Rewrite a finished run's ``config.json`` and ``data.json`` with the current runtime fields (the
        data root it was found at, the device, …): rule 3 returns such a run without :meth:`start`."""
        if self.finished:
            write_json(self.path / CONFIG, self.config)
            if self.data is not None:
                write_json(self.path / DATA, self.data)

    def file(self, name: str) -> Path:
        """The path of ``name`` in the folder."""
        return self.path / name

    def start(self) -> None:
        """Create the folder, remove the run files unless resuming (rule 5), write ``config.json`` and
        ``data.json``."""
        if not (self._matched and (self.path / LAST).is_file()):
            for name in self.run_files:
                (self.path / name).unlink(missing_ok=True)
            self._matched = False
        self.path.mkdir(parents=True, exist_ok=True)
        clean_temp_files(
            self.path
        )  # a killed write's temporary file (the run was not running: no live write)
        write_json(self.path / CONFIG, self.config)
        if self.data is not None:
            write_json(self.path / DATA, self.data)

    def load_last(self) -> dict | None:
        """The ``last.pt`` state to resume from (rule 4), or None for a fresh start.

        Raises:
            ValueError: ``last.pt`` was written under other result fields.
        """
        path = self.path / LAST
        if not (self._matched and path.is_file()):
            return None
        state = read_checkpoint(path, f"pass --restart (resume=False) to start {self.path} over")
        if "config" in state:  # stage-1 checkpoints made before RunFolder have none; config.json matched
            self._check(state["config"], path)
        return state

    def save_last(self, state: dict) -> Path:
        """Write ``last.pt`` atomically; the config is added under ``"config"``."""
        return save_checkpoint(self.path / LAST, {"config": self.config, **state})

    def save_best(self, state: dict) -> Path:
        """Write ``best.pt`` atomically; the config is added under ``"config"``."""
        return save_checkpoint(self.path / BEST, {**state, "config": self.config})

    def load_best(self) -> dict:
        """The ``best.pt`` state (``FileNotFoundError`` when missing)."""
        return read_checkpoint(self.path / BEST, f"pass --restart (resume=False) to start {self.path} over")

    def write_json(self, name: str, data) -> Path:
        """Write ``data`` as JSON to ``name`` in the folder, atomically (:func:`arml.runtime.write_json`)."""
        return write_json(self.path / name, data)

    def read_json(self, name: str):
        """The JSON file ``name`` of the folder."""
        return read_json_file(self.path / name)

    def _check(self, saved: dict, source: Path) -> None:
        changes = config_changes(saved, self.config)
        if changes:
            raise ValueError(
                f"{source} belongs to a {self.stage} run with a different configuration "
                f"({'; '.join(changes)}); pass --restart (resume=False) to start {self.path} over, "
                "or choose another --out folder"
            )

    def _check_data(self, saved_config: dict) -> None:
        """Rule 2: the data root exists and its fingerprint is the one in ``data.json``."""
        saved = read_data_record(self.path)
        old_root = (saved or {}).get("data_root") or saved_config.get("data_root")
        new_root = self.data["data_root"]
        way_out = (
            f"pass --data with the data the run was made from, --restart (resume=False) to train {self.path} "
            f"again on {new_root}, or choose another --out folder"
        )
        if not Path(new_root).is_dir():
            raise ValueError(
                f"{self.path} holds a {self.stage} run made from {old_root}, but the data root {new_root} "
                f"(--data) does not exist; pass --data with the data the run was made from, or another "
                f"existing dataset with --restart (resume=False) to train {self.path} again on it, or "
                "choose another --out folder"
            )
        if saved is None or saved.get("fingerprint") == self.data["fingerprint"]:
            return  # a run made before data.json (unchecked), or the same data (perhaps moved)
        changes = data_changes(saved, self.data)
        only_test = changes and all(c.startswith("test/") for c in changes)
        hint = (
            f"; to score the trained networks on it, use arml evaluate --checkpoint {self.path}"
            if only_test
            else ""
        )
        raise ValueError(
            f"{self.path} holds a {self.stage} run made from other data: {old_root} (fingerprint "
            f"{saved.get('fingerprint')}) then, {new_root} (fingerprint {self.data['fingerprint']}) now "
            f"({'; '.join(changes) or 'upstream changed'}); {way_out}{hint}"
        )
