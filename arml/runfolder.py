"""The run folder both trainers write: config check, resume, last/best checkpoints, atomic writes.

A run folder holds ``config.json`` (the run's :class:`~arml.options.Config` as a dict), ``last.pt`` (written
after every epoch: weights, optimiser states, step, history and every random-number state), ``best.pt``
(stage 2), ``history.json`` and the stage's outputs: stage 1 ends with ``classifier.pt`` (and
``weights.json``), stage 2 with ``metrics.json``. That last output marks the run as *finished*.

One rule for both stages. With ``resume=True`` (the default; the command line's ``--restart`` sets
``resume=False``):

1. A ``config.json`` whose result fields (:func:`arml.runtime.config_changes`: everything but progress
   bars, device, workers, where the data lives and the evaluation batch size) differ from the new config
   is refused with a ``ValueError`` that names the differing fields. Nothing is touched; pass ``--restart``
   (``resume=False``) to start that folder over, or another ``--out``.
2. Same result fields and the finished output exists: the run is finished, and the trainer returns it
   without training.
3. Same result fields and ``last.pt`` exists: training continues from the epoch after the one ``last.pt``
   saved, with every weight, optimiser and random state, so it ends exactly as an uninterrupted run would
   (a run killed mid-epoch loses that epoch only). ``last.pt`` records the config too and is checked the
   same way.
4. Otherwise (no ``config.json``, or no ``last.pt``): a fresh start; leftover run files are removed.

With ``resume=False`` the run files are removed and the run starts over, whatever the folder held.
Only the run files are ever removed, never other files in the folder. When only runtime fields differ
(another device, the data moved), ``config.json`` is rewritten with the new values.

Nothing is written when a :class:`RunFolder` is made: the trainers call :meth:`RunFolder.start` once the
config, the data and the device have been checked, so a run that fails validation leaves no folder behind.
Every file is written atomically (:func:`arml.runtime.atomic_write`): a kill leaves the previous version
or none, never half a file.

>>> run = RunFolder("runs/demo", config, stage="stage 2", finished="metrics.json")  # doctest: +SKIP
>>> metrics = run.read_json("metrics.json") if run.finished else None  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from arml.options import Config
from arml.runtime import config_changes, load_checkpoint, save_checkpoint, write_json

CONFIG = "config.json"
LAST = "last.pt"
BEST = "best.pt"
HISTORY = "history.json"


class RunFolder:
    """One training run's folder, under the rule of the module docstring.

    Args:
        path: the folder (``--out``); created by :meth:`start`, not before.
        config: the run's config (a :class:`~arml.options.Config`: ``to_dict`` is what is saved).
        stage: the stage's name in messages (``"stage 1"``, ``"stage 2"``).
        finished: the output whose presence marks a finished run (``"classifier.pt"``, ``"metrics.json"``).
        outputs: the stage's other output files, removed with the run files.
        resume: the rule's ``resume``.

    Raises:
        ValueError: with ``resume``, the folder's ``config.json`` holds other result fields (rule 1).
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
    ) -> None:
        self.path = Path(path)
        self.config = config.to_dict()
        self.stage, self.finished_file, self.resume = stage, finished, resume
        self.run_files = (CONFIG, LAST, BEST, HISTORY, finished, *outputs)
        saved = self.path / CONFIG
        self._matched = resume and saved.is_file()
        if self._matched:
            self._check(json.loads(saved.read_text()), saved)

    @property
    def finished(self) -> bool:
        """Whether the folder holds a finished run of this config (rule 2); never with ``resume=False``."""
        return self._matched and (self.path / self.finished_file).is_file()

    def file(self, name: str) -> Path:
        """The path of ``name`` in the folder."""
        return self.path / name

    def start(self) -> None:
        """Create the folder, remove the run files unless resuming (rule 4), write ``config.json``."""
        if not (self._matched and (self.path / LAST).is_file()):
            for name in self.run_files:
                (self.path / name).unlink(missing_ok=True)
            self._matched = False
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / CONFIG, self.config)

    def load_last(self) -> dict | None:
        """The ``last.pt`` state to resume from (rule 3), or None for a fresh start.

        Raises:
            ValueError: ``last.pt`` was written under other result fields.
        """
        path = self.path / LAST
        if not (self._matched and path.is_file()):
            return None
        state = load_checkpoint(path)
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
        return load_checkpoint(self.path / BEST)

    def write_json(self, name: str, data) -> Path:
        """Write ``data`` as JSON to ``name`` in the folder, atomically (:func:`arml.runtime.write_json`)."""
        return write_json(self.path / name, data)

    def read_json(self, name: str):
        """The JSON file ``name`` of the folder."""
        return json.loads((self.path / name).read_text())

    def _check(self, saved: dict, source: Path) -> None:
        changes = config_changes(saved, self.config)
        if changes:
            raise ValueError(
                f"{source} belongs to a {self.stage} run with a different configuration "
                f"({'; '.join(changes)}); pass --restart (resume=False) to start {self.path} over, "
                "or choose another --out folder"
            )
