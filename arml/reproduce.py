"""Run the numbered notebooks headless with papermill and collect their results (``arml reproduce``).

Each notebook is executed with kernel ``python3`` and the notebooks folder as working directory. Of
``PROFILE``, ``DATA_ROOT``, ``DATASET``, ``RESULTS_DIR`` and ``FIGURES_DIR``, papermill injects only those
that differ from the notebook's own ``parameters`` cell (:func:`changed_parameters`). Executed copies go to ``OUT/notebooks/``, results to
``OUT/results/<stem>.json`` and figures to ``OUT/figures/``. With ``OUT`` = the repository root (the
reference run) the committed notebooks are overwritten with their executed selves, metadata noise
(timings, papermill bookkeeping) stripped.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from arml.runtime import REPO_ROOT, default_dir

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = (
    "01_cam_baselines",
    "02_ars_ablation",
    "03_pseudo_mask_quality",
    "04_swv_omega_sweep",
    "05_srm_loss_comparison",
    "06_final_benchmark",
    "07_noise_lab",
)
# Per-cell execution timeout in seconds (papermill's unit of timeout).
CELL_TIMEOUT = {"quick": 600, "cpu": 3600, "paper": None, "paper-smoke": 3600}


@dataclass
class NotebookRun:
    stem: str
    ok: bool
    seconds: float
    output: Path
    error: str = ""


def select(only: str | None) -> list[str]:
    """Notebook stems for ``--only 01,04`` (prefixes or full stems); all seven when ``only`` is empty."""
    if not only:
        return list(NOTEBOOKS)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    chosen = []
    for w in wanted:
        matches = [n for n in NOTEBOOKS if n == w or n.startswith(w.zfill(2) + "_") or n.startswith(w)]
        if len(matches) != 1:
            raise ValueError(
                f"--only {w!r} matches {matches or 'no notebook'}; choose from {list(NOTEBOOKS)}"
            )
        chosen.append(matches[0])
    return [n for n in NOTEBOOKS if n in chosen]


def strip_noise(path: Path) -> None:
    """Remove run-to-run noise from an executed notebook: papermill/execution timings. The kernel's
    language_info (with the Python version) stays: JupyterLab writes it back on open, so a notebook without it
    would open as modified."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)


def changed_parameters(source: Path, params: dict) -> dict:
    """The entries of ``params`` that differ from the defaults in the notebook's ``parameters`` cell.

    Papermill injects a cell only when this is non-empty, so the reference run (profile ``cpu``, default
    folders) leaves the committed notebooks with their own parameters cell and no machine-specific paths.
    """
    import ast

    import papermill as pm

    defaults = {}
    for name, info in pm.inspect_notebook(str(source)).items():
        try:
            defaults[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            continue  # not a literal: always pass the value explicitly
    return {k: v for k, v in params.items() if k not in defaults or defaults[k] != v}


def without_injected_cells(path: Path):
    """The notebook at ``path`` minus any ``injected-parameters`` cell a previous papermill run left in it.

    Papermill replaces such a cell only when it injects new values; with nothing to inject the stale one
    (say, ``PROFILE = "quick"`` from an earlier run written over the committed notebooks) would still run.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    return nb


def _describe_failure(err: Exception) -> str:
    cell = getattr(err, "exec_count", None)
    ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    where = f"cell [{cell}]" if cell is not None else "a cell"
    return f"{where} raised {ename}: {evalue}"


def run_notebooks(
    profile: str = "cpu",
    data_root: str | Path | None = None,
    dataset: str = "luad",
    out: str | Path | None = None,
    only: str | None = None,
    progress: bool = True,
    stop_on_error: bool = True,
) -> list[NotebookRun]:
    """Execute the selected notebooks in order; returns one :class:`NotebookRun` per notebook run.

    Raises:
        RuntimeError: a notebook failed (with ``stop_on_error``); the message names notebook and cell.
    """
    from arml.profiles import get_profile

    get_profile(profile)  # fail early on an unknown profile
    out = Path(out or REPO_ROOT).resolve()
    nb_out, results, figures = out / "notebooks", out / "results", out / "figures"
    for folder in (nb_out, results, figures):
        folder.mkdir(parents=True, exist_ok=True)
    params = {
        "PROFILE": profile,
        "DATA_ROOT": str(data_root) if data_root else None,
        "DATASET": dataset,
        # None = the notebook's own default (<repo>/results, <repo>/figures), written as such in the notebook
        "RESULTS_DIR": None if results == default_dir("results").resolve() else str(results),
        "FIGURES_DIR": None if figures == default_dir("figures").resolve() else str(figures),
    }
    runs: list[NotebookRun] = []
    # The kernels inherit this process's environment, and notebook_setup lets $ARML_PROFILE override the
    # PROFILE parameter (for nbval): pin it to the profile asked for, or an exported ARML_PROFILE would win.
    previous = os.environ.get("ARML_PROFILE")
    os.environ["ARML_PROFILE"] = profile
    try:
        for stem in select(only):
            run = _run_one(stem, nb_out, params, profile, progress)
            runs.append(run)
            if not run.ok and stop_on_error:
                raise RuntimeError(
                    f"notebook {stem}.ipynb failed: {run.error}; the executed copy with the traceback is "
                    f"{run.output}"
                )
    finally:
        if previous is None:
            os.environ.pop("ARML_PROFILE", None)
        else:
            os.environ["ARML_PROFILE"] = previous
    return runs


def _run_one(stem: str, nb_out: Path, params: dict, profile: str, progress: bool) -> NotebookRun:
    """Execute one notebook with papermill into ``nb_out``; strip its run-to-run noise."""
    import papermill as pm

    source, target = NOTEBOOK_DIR / f"{stem}.ipynb", nb_out / f"{stem}.ipynb"
    if progress:
        print(f"[arml reproduce] {stem} (profile {profile})", flush=True)
    started = time.perf_counter()
    try:
        pm.execute_notebook(
            without_injected_cells(source),
            str(target),
            parameters=changed_parameters(source, params),
            kernel_name="python3",
            cwd=str(NOTEBOOK_DIR),
            progress_bar=progress,
            execution_timeout=CELL_TIMEOUT.get(profile),
        )
        run = NotebookRun(stem, True, time.perf_counter() - started, target)
    except Exception as err:  # papermill wraps the kernel's exception
        run = NotebookRun(stem, False, time.perf_counter() - started, target, _describe_failure(err))
    if target.exists():
        strip_noise(target)
    return run


def headline(results_dir: Path, stem: str) -> str:
    """A short description of a notebook's main number from its results JSON, for the summary table."""
    path = results_dir / f"{stem}.json"
    if not path.exists():
        return "no results file"
    data = json.loads(path.read_text())
    return str(data.get("headline", "")) or "results written"


def summary_table(runs: list[NotebookRun], results_dir: Path) -> str:
    """A plain-text table: notebook, status, minutes, headline."""
    rows = [("notebook", "status", "time", "headline")]
    for r in runs:
        rows.append(
            (r.stem, "ok" if r.ok else "FAILED", f"{r.seconds / 60:.1f} min", headline(results_dir, r.stem))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in rows
    ]
    total = sum(r.seconds for r in runs)
    return "\n".join([*lines, f"total {total / 60:.1f} min"])
