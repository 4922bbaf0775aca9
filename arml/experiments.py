"""Cached pipeline runs for the notebooks (docs/architecture.md).

Every stage writes into a run folder keyed by dataset, profile, a hash of its config and its seed::

    runs/<dataset tag>/<profile>/stage1-<hash>/          classifier checkpoints and history
    <data root>/train_PM/pm-<method>-<hash>/              pseudo masks (one palette PNG per image)
    runs/<dataset tag>/<profile>/stage2-<hash>/          three peers, best checkpoint, metrics.json

so a later notebook reuses an earlier one's classifier and pseudo masks, and each notebook still runs on
its own (a missing stage is simply computed). Interrupted stages resume.

>>> ctx = Experiment("quick")                                   # doctest: +SKIP
>>> run = ctx.classifier(ars="both")                            # doctest: +SKIP
>>> pm = ctx.pseudo_masks(run, method="gradcam")                # doctest: +SKIP
>>> ctx.segmenter(pm["name"], omega=2.0, relation="st")["F_a"]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from arml.profiles import Profile, get_profile
from arml.runtime import default_dir, repo_relative, result_fields, write_json
from arml.stats import mean_std, ttest  # noqa: F401  (re-exported: the statistics moved to arml.stats)


def config_hash(config: dict, length: int = 10) -> str:
    """A short stable hash of a config dict, ignoring fields that do not change results."""
    kept = result_fields(config)
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:length]


def save_results(stem: str, payload: dict, folder: str | Path | None = None) -> Path:
    """Write ``<folder>/<stem>.json`` (default ``<repo>/results``) with NaN as null, atomically."""
    return write_json(Path(folder or default_dir("results")) / f"{stem}.json", payload)


@dataclass
class Experiment:
    """One profile on one dataset: the notebooks' handle on cached stage runs.

    Args:
        profile: a profile name (``quick``, ``cpu``, ``paper``) or :class:`~arml.profiles.Profile`.
        data_root: a dataset in the published layout; ``None`` uses (and makes on demand) the built-in
            synthetic dataset of the profile under ``<repo>/data/synthetic/<profile>``.
        dataset: ``"luad"`` or ``"bcss"`` (naming and class order).
        runs: where run folders go (default ``<repo>/runs`` or ``$ARML_RUNS``).
        progress: show progress bars.
    """

    profile: str | Profile = "cpu"
    data_root: str | Path | None = None
    dataset: str = "luad"
    runs: str | Path | None = None
    progress: bool = True
    synthetic: bool = field(init=False)

    def __post_init__(self) -> None:
        self.started = time.perf_counter()
        self.profile = self.profile if isinstance(self.profile, Profile) else get_profile(self.profile)
        self.synthetic = self.data_root is None
        if self.synthetic:
            from arml.synth import generate_dataset

            target = default_dir("data") / "synthetic" / self.profile.synth
            if self.dataset != "luad":
                target = target.with_name(f"{target.name}-{self.dataset}")
            self.data_root = generate_dataset(
                target, profile=self.profile.synth, seed=0, dataset=self.dataset, progress=self.progress
            )
        self.data_root = Path(self.data_root)
        if not self.synthetic:
            from arml.data_check import check_layout

            report = check_layout(self.data_root, self.dataset, progress=self.progress)
            if not report.ok:
                raise ValueError(f"DATA_ROOT fails `arml data check`:\n{report.format()}")
        tag = f"synthetic-{self.profile.synth}-{self.dataset}" if self.synthetic else self.data_root.name
        self.runs = Path(self.runs or default_dir("runs")) / tag / self.profile.name

    @property
    def data_label(self) -> str:
        """What the notebooks call the data in titles and prints: ``"synthetic"``, ``"LUAD"`` or ``"BCSS"``."""
        return "synthetic" if self.synthetic else self.dataset.upper()

    def describe(self) -> str:
        """Two lines for a notebook's first output: the profile and where data and runs live."""
        return (
            f"profile {self.profile.name!r}: {self.profile.description}\n"
            f"data: {repo_relative(self.data_root)} ({self.data_label}); runs: {repo_relative(self.runs)}"
        )

    def save_results(self, stem: str, headline: str, seeds, **keys) -> str:
        """Write ``results/<stem>.json``: the fields every notebook reports (profile, dataset, synthetic,
        seeds, seconds since this experiment was set up, headline) followed by the notebook's own ``keys``.
        Returns the file's path relative to the repository (what a notebook prints)."""
        payload = {
            "profile": self.profile.name,
            "dataset": self.dataset,
            "synthetic": self.synthetic,
            "seeds": list(seeds),
            "elapsed_s": time.perf_counter() - self.started,
            "headline": headline,
            **keys,
        }
        return repo_relative(save_results(stem, payload))

    @property
    def class_names(self) -> tuple[str, ...]:
        from arml.datasets import CLASS_NAMES

        return CLASS_NAMES[self.dataset]

    def cls_config(self, seed: int = 0, **overrides):
        return self.profile.cls_config(
            self.data_root, dataset=self.dataset, seed=seed, progress=self.progress, **overrides
        )

    def classifier(self, seed: int = 0, **overrides) -> Path:
        """Train (or reuse) a stage-1 classifier; returns its run folder. Overrides go to ``ClsConfig``."""
        from arml.stage1 import train_classifier

        config = self.cls_config(seed, **overrides)
        run = self.runs / f"stage1-{config_hash(config.to_dict())}"
        train_classifier(config, run)
        return run

    def pseudo_mask_name(self, run: str | Path, **overrides) -> str:
        """The ``train_PM/`` folder name of the pseudo masks that :meth:`pseudo_masks` makes from a finished
        stage-1 run with these ``PseudoMaskConfig`` overrides (``pm-<method>-<hash>``).

        The hash covers the run's name, its classifier weights (retraining a run folder, e.g. after a code
        change, must not reuse pseudo masks made by the old weights) and the pseudo-mask config."""
        from dataclasses import asdict

        from arml.stage1 import classifier_digest

        config = self.profile.pseudo_config(**overrides)
        key = config_hash({"run": Path(run).name, "weights": classifier_digest(run), **asdict(config)})
        return f"pm-{config.method}-{key}"

    def pseudo_masks(self, run: str | Path, **overrides) -> dict:
        """Make (or reuse) pseudo masks from a stage-1 run; returns the result of
        :func:`~arml.pseudo_masks.generate_pseudo_masks` plus ``name`` (:meth:`pseudo_mask_name`).
        Overrides go to ``PseudoMaskConfig``."""
        from arml.pseudo_masks import generate_pseudo_masks

        name = self.pseudo_mask_name(run, **overrides)
        config = self.profile.pseudo_config(**overrides)
        result = generate_pseudo_masks(run, name, self.data_root, config, progress=self.progress)
        return {"name": name, **result}

    def seg_config(self, masks: str, seed: int = 0, **overrides):
        return self.profile.seg_config(
            self.data_root, masks=masks, dataset=self.dataset, seed=seed, progress=self.progress, **overrides
        )

    def _seg_run(self, masks: str, seed: int, overrides: dict):
        config = self.seg_config(masks, seed, **overrides)
        return config, self.runs / f"stage2-{config_hash(config.to_dict())}"

    @property
    def workers(self) -> int:
        """Stage-2 worker processes: ``$ARML_WORKERS`` or the profile's ``workers``."""
        value = os.environ.get("ARML_WORKERS") or self.profile.workers
        try:
            workers = int(value)
        except ValueError:
            workers = 0
        if workers < 1:
            raise ValueError(f"ARML_WORKERS must be an int >= 1, got {value!r}")
        return workers

    def segmenter(self, masks: str, seed: int = 0, **overrides) -> dict:
        """Train (or reuse) stage 2 on pseudo masks ``masks``; returns the test metrics dict (F_a, peers,
        ensemble). Overrides go to ``SegConfig`` (``omega``, ``relation``, ``lam``, ``recipe``, …)."""
        return self.segmenter_grid({"run": (masks, overrides)}, [seed])["run"][0]

    def segmenter_seeds(self, masks: str, seeds, **overrides) -> list[dict]:
        """:meth:`segmenter` once per seed in ``seeds`` (the same config): the per-seed test metrics."""
        return self.segmenter_grid({"run": (masks, overrides)}, seeds)["run"]

    def segmenter_grid(self, grid: dict[str, tuple[str, dict]], seeds) -> dict[str, list[dict]]:
        """Train (or reuse) every row of ``grid`` (``key → (masks, SegConfig overrides)``) for every seed.

        Runs that are not finished yet are trained together by :func:`train_runs` with :attr:`workers`
        processes, so a notebook's whole table costs one pass over the machine's cores; the same
        configuration asked twice (in one grid or across notebooks) is trained once.

        Returns:
            ``key → [test metrics per seed]``, each with ``"run"`` (its folder).
        """
        from arml.stage2 import train_segmenter

        jobs = {
            (key, seed): self._seg_run(masks, seed, cfg)
            for key, (masks, cfg) in grid.items()
            for seed in seeds
        }
        train_runs(list(jobs.values()), self.workers, self.progress)
        out: dict[str, list[dict]] = {key: [] for key in grid}
        for (key, _), (config, run) in jobs.items():
            out[key].append({**train_segmenter(config, run), "run": str(run)})
        return out

    def pipeline(self, seed: int = 0, cls: dict | None = None, cam: dict | None = None, **seg) -> dict:
        """The whole chain for one seed: classifier → pseudo masks → three peers → test metrics.

        The pseudo-mask quality (synthetic data only) is returned under ``"pseudo_masks"``.
        """
        run = self.classifier(seed=seed, **(cls or {}))
        pm = self.pseudo_masks(run, **(cam or {}))
        result = self.segmenter(pm["name"], seed=seed, **seg)
        return {**result, "pseudo_masks": pm["metrics"]}


def _train_job(config: dict, run: str, threads: int) -> str:
    """One stage-2 run in a worker process (top level: importable by ``spawn``)."""
    import torch

    from arml.stage2 import SegConfig, train_segmenter

    torch.set_num_threads(threads)
    train_segmenter(SegConfig.from_dict({**config, "progress": False}), run)
    return run


def train_runs(jobs, workers: int = 1, progress: bool = False) -> None:
    """Train the unfinished ones of ``jobs`` (``(SegConfig, run folder)`` pairs), ``workers`` at a time.

    Worker processes are *spawned* (a fresh interpreter each: safe with PyTorch's threads), so a script that
    calls this (directly or through :meth:`Experiment.segmenter_grid`) needs the usual
    ``if __name__ == "__main__":`` guard; notebooks need nothing.

    With ``workers`` > 1 every run, even a lone one, is trained in a worker process with
    ``cpu_count // workers`` threads, so a configuration computes the same floats whether it was trained in a
    big grid or alone. Finished runs are skipped; a run that fails re-raises its error here.
    """
    import concurrent.futures as cf
    import multiprocessing

    from tqdm.auto import tqdm

    from arml.stage2 import train_segmenter

    todo, seen = [], set()
    for config, run in jobs:
        if not (Path(run) / "metrics.json").is_file() and str(run) not in seen:
            seen.add(str(run))
            todo.append((config, run))
    if not todo:
        return
    if workers <= 1:
        for config, run in todo:
            train_segmenter(config, run)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(min(workers, len(todo)), mp_context=context) as pool:
        futures = [pool.submit(_train_job, config.to_dict(), str(run), threads) for config, run in todo]
        for future in tqdm(
            cf.as_completed(futures),
            total=len(futures),
            desc=f"stage 2, {workers} workers",
            disable=not progress,
        ):
            future.result()


def notebook_setup(
    profile: str,
    data_root: str | None = None,
    dataset: str = "luad",
    results_dir: str | None = None,
    figures_dir: str | None = None,
    progress: bool = True,
) -> Experiment:
    """The first call of every notebook: resolve parameters, fail early with a clear message, return
    the :class:`Experiment`.

    ``$ARML_PROFILE`` overrides ``profile`` (for tools that cannot inject parameters, such as nbval).
    ``results_dir`` / ``figures_dir`` become the defaults of :func:`save_results` and
    :func:`arml.viz.savefig` for this kernel.
    """
    profile = os.environ.get("ARML_PROFILE") or profile
    get_profile(profile)  # unknown profile → ValueError listing the valid ones
    if results_dir:
        os.environ["ARML_RESULTS"] = str(results_dir)
    if figures_dir:
        os.environ["ARML_FIGURES"] = str(figures_dir)
    if data_root is not None and not Path(data_root).is_dir():
        raise FileNotFoundError(f"DATA_ROOT {data_root!r} is not a folder; see data/README.md")
    return Experiment(profile, data_root, dataset, progress=progress)
